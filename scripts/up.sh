#!/usr/bin/env bash
# Quickstart: install slipway into ./.venv, then start it with the example models deployed.
# Extra arguments go to `slipway up` (e.g. --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/slipway up --deploy examples/echo --deploy examples/minilm "$@"
