#!/usr/bin/env bash
# The README's test command: install (CPU torch first, so pip never pulls a CUDA build), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q torch==2.13.0 || pip install -q torch
pip install -q -e '.[dev]'
python -m pytest -q "$@"
