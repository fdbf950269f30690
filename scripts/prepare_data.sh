#!/usr/bin/env bash
# Prepare the PhysioNet/CinC Challenge 2021 data (PTB-XL, Georgia, Ningbo) for every model in the repo.
# Usage: scripts/prepare_data.sh [RAW_DIR] [OUT_DIR]
#   RAW_DIR: folder holding ptb-xl/, georgia/, ningbo/ as in the Challenge 2021 training set
#   OUT_DIR: where the prepared arrays go
# Environment: PYTHON (interpreter), WORKERS (reader processes; unset: one per CPU), PTBXL_DATABASE (optional
#   ptbxl_database.csv: the official patient-wise strat_fold split of PTB-XL; unset: a random split)
# Every default here is nvae_ecg.data.prepare's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAW_DIR="${1:-${RAW_DIR:-$REPO/data/challenge2021}}"
OUT_DIR="${2:-${OUT_DIR:-$REPO/data/prepared}}"
PYTHON="${PYTHON:-python}"
OPTIONAL=()
if [[ -n "${WORKERS:-}" ]]; then OPTIONAL+=(--num_workers "$WORKERS"); fi
# --split_mode auto: strat_fold with the database, else random.
if [[ -n "${PTBXL_DATABASE:-}" ]]; then OPTIONAL+=(--ptbxl_database "$PTBXL_DATABASE"); fi
cd "$REPO"
"$PYTHON" -m nvae_ecg.data.prepare "$RAW_DIR" "$OUT_DIR" \
    --datasets ptb-xl georgia ningbo \
    --fs 500 \
    --seconds 10 \
    --pad_mode zero \
    --min_seconds 5 \
    --lower_percentile 2.5 \
    --upper_percentile 97.5 \
    --split_fractions 0.8 0.1 0.1 \
    --seed 0 \
    "${OPTIONAL[@]}"
