#!/usr/bin/env bash
# The README's test command (and CI's): set up .venv, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SCDPO_EXTRAS="[test]" . scripts/setup.sh
python -m pytest -q "$@"
