#!/usr/bin/env bash
# Runs the collector locally (default http://127.0.0.1:5005, storing under ./data).
# Creates or reuses the virtual environment .venv, installs the project into it, and serves.
# Configuration comes from the environment: HOST, PORT, WORKERS, LOCAL_STORAGE_DIR, R2_*, ...
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV_DIR:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.collector-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! "$venv/bin/python" -c "import collector" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e .
  touch "$stamp"
fi
exec "$venv/bin/collector" serve "$@"
