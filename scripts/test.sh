#!/usr/bin/env bash
# The README's test command: set up a virtual environment (torch's CPU build first, so no CUDA
# build is ever pulled), install the project with its test extra, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
export TRANSFORMERS_VERBOSITY=error
python -m pytest -q "$@"
