#!/usr/bin/env bash
# The README's demo command: set up .venv, run `scdpo demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
scdpo demo --out outputs/demo "$@"
