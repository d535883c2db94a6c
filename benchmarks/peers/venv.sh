# Sourced by the peer scripts: make_peer_venv PATH creates (or reuses) a private virtualenv at PATH
# with an up-to-date pip, and sets $py to its interpreter. Peers never share slipway's own venv.
make_peer_venv() {
  local venv="$1"
  local base_python="${PYTHON:-python3.11}"
  if ! command -v "$base_python" >/dev/null 2>&1; then
    echo "error: $base_python not found; set PYTHON=/path/to/python3.11 and run again" >&2
    exit 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    mkdir -p "$(dirname "$venv")"
    "$base_python" -m venv "$venv"
  fi
  py="$venv/bin/python"
  "$py" -m pip install --upgrade pip
}
