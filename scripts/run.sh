#!/usr/bin/env bash
# Set up .venv (idempotent) and run the notebook pipeline. Default: the quick preset on the embedded
# offline digits dataset. Any argument is passed on, e.g. --preset paper --dataset cifar10 --device cuda
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m grosslib.pipeline --preset quick --dataset digits "$@"
