#!/usr/bin/env bash
# Set up .venv (idempotent) and run every test: unit tests, notebook runs through papermill with
# small parameters, and nbval on the committed notebooks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg "$@"
