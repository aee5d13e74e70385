#!/usr/bin/env bash
# Set up .venv (idempotent) and run the notebook pipeline. Default (--preset auto): the intro preset on
# Fashion-MNIST when its Debian package is on the machine (accuracies that differ across configurations by
# more than their noise), else the quick preset on the embedded digits; the summary says which ran and why.
# Any argument is passed on, e.g. --preset quick, or --preset paper --dataset cifar10 --device cuda
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m grosslib.pipeline --preset auto "$@"
