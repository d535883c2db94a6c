#!/usr/bin/env bash
# Creates benchmarks/.peers/llamacpp-venv: llama-cpp-python with its OpenAI-compatible server, the
# llama.cpp row of benchmarks/engines.py (it serves the 4-bit GGUF that examples/smollm2 ships).
#
# llama-cpp-python compiles llama.cpp from source when installed (~3 minutes on 2 cores; needs
# cmake and a C++ compiler). GGML_NATIVE builds for this CPU's instruction set (AVX-512, BF16),
# so the venv belongs to the machine that built it. The version is pinned so that figures in
# docs/benchmarks.md can be reproduced.
#
# Usage:  benchmarks/peers/llamacpp.sh            (idempotent: an existing venv is reused)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SLIPWAY_LLAMACPP_VENV:-$repo_root/benchmarks/.peers/llamacpp-venv}"
llamacpp_version="${LLAMACPP_VERSION:-0.3.36}"
for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found; llama-cpp-python builds llama.cpp from source (apt-get install cmake g++)" >&2
    exit 1
  fi
done
# shellcheck source=venv.sh
source "$repo_root/benchmarks/peers/venv.sh"
make_peer_venv "$venv"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$py" -m pip install "llama-cpp-python[server]==$llamacpp_version"

"$py" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__)"

echo
echo "llama.cpp is ready: $py -m llama_cpp.server (benchmarks/engines.py finds it there)."
