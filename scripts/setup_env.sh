#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install the pinned requirements and this repo (editable).
# Usage: scripts/setup_env.sh            (VENV=path/to/venv to choose where; PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# A stamp of requirements.txt lets repeated runs skip pip when nothing changed.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$WANT" ]]; then
    echo "[setup] installing requirements into $VENV (first time: several minutes)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$REPO/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$REPO"
    echo "$WANT" > "$STAMP"
fi
echo "[setup] environment ready: source $VENV/bin/activate"
