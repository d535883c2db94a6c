#!/usr/bin/env bash
# Install the dev dependencies into ./.venv and run the whole test suite.
# Extra arguments go to pytest (e.g. tests/gateway -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two workers: this machine has two cores, and the end-to-end tests start real processes.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
