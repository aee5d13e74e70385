#!/usr/bin/env bash
# Create .venv in the repository root with everything GroSS needs. Idempotent: a second run with
# unchanged requirements installs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.gross-setup-stamp"
# torch===2.13.0 (PEP 440 arbitrary equality) selects the standard build: a local '+cpu' wheel that
# '==2.13.0' would also match breaks 'import torchvision' (operator torchvision::nms does not exist).
TORCH_SPEC=("torch===2.13.0" "torchvision==0.28.0")
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "[setup] .venv is up to date"
else
  echo "[setup] installing PyTorch and grosslib[dev,ray] into .venv (a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${TORCH_SPEC[@]}"
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,ray]"
  # the Jupyter kernel that papermill and nbval start: this venv's interpreter
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (GroSS .venv)" >/dev/null
  "$VENV/bin/python" -c "import torch, torchvision, tensorly, grosslib; torchvision.ops.nms" 
  echo "$WANT" > "$STAMP"
fi

# Fashion-MNIST (issue: the real benchmark reachable offline) ships as a Debian package. Optional:
# nothing in the tests needs it.
FMNIST=/usr/share/datasets/fashion-mnist
if [[ ! -d "$FMNIST" ]] && command -v apt-get >/dev/null 2>&1; then
  if [[ "$(id -u)" == "0" ]]; then
    echo "[setup] installing the Debian package dataset-fashion-mnist (optional)"
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
      || echo "[setup] could not install dataset-fashion-mnist; Fashion-MNIST runs will need it"
  else
    echo "[setup] for the Fashion-MNIST study run: sudo apt-get install dataset-fashion-mnist"
  fi
fi
