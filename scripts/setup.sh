#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: a virtual environment in .venv with torch's CPU build installed
# first (so pip never pulls a CUDA build), then this project with the extras given ("" or "[test]").
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".${1:-}"
export TRANSFORMERS_VERBOSITY=error
