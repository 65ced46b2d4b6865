#!/usr/bin/env bash
# The README's demo command: set up .venv, run `scdpo demo` (arguments go to it: --out DIR, --threads N, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
SCDPO_EXTRAS="" . scripts/setup.sh
scdpo demo --out outputs/demo "$@"
