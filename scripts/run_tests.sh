#!/usr/bin/env bash
# Set up the environment (scripts/setup_env.sh) and run the whole test suite.
# Usage: scripts/run_tests.sh [extra pytest args, e.g. -m "not slow" or -x]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
bash "$REPO/scripts/setup_env.sh"
cd "$REPO"
"$VENV/bin/python" -m pytest -q "$@"
