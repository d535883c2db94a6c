#!/usr/bin/env bash
# Creates benchmarks/.peers/litellm-venv: LiteLLM's proxy in a private interpreter, the peer that
# benchmarks/gateway.py compares slipway's gateway against.
#
# LiteLLM pins many packages of its own, so it never shares slipway's virtualenv. The version is
# pinned so that figures in docs/benchmarks.md can be reproduced: 1.106.12 is the newest whose
# `proxy` extra resolves from PyPI here (later ones need litellm-proxy packages not published
# alongside them). v1.107.0 is a release known to be compromised; never use it.
#
# Usage:  benchmarks/peers/litellm.sh            (idempotent: an existing venv is reused)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SLIPWAY_LITELLM_VENV:-$repo_root/benchmarks/.peers/litellm-venv}"
litellm_version="${LITELLM_VERSION:-1.106.12}"
# shellcheck source=venv.sh
source "$repo_root/benchmarks/peers/venv.sh"
make_peer_venv "$venv"
"$py" -m pip install "litellm[proxy]==$litellm_version"

"$py" -c "import litellm, importlib.metadata as m; print('litellm', m.version('litellm'))"
test -x "$venv/bin/litellm"

echo
echo "LiteLLM is ready: $venv/bin/litellm (benchmarks/gateway.py finds it there)."
