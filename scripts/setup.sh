#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: a virtual environment in .venv with torch's CPU build installed
# first (so pip never pulls a CUDA build), then this project with the extras in SCDPO_EXTRAS
# ("" or "[test]"). An environment variable, not "$1": a sourced script sees its caller's arguments
# when given none, and the demo's "--out DIR" is no pip extra.
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".${SCDPO_EXTRAS:-}"
export TRANSFORMERS_VERBOSITY=error
