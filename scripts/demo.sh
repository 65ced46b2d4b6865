#!/usr/bin/env bash
# The README's demo command: same setup as scripts/test.sh, then `scdpo demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
export TRANSFORMERS_VERBOSITY=error
scdpo demo --out outputs/demo "$@"
