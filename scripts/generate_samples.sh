#!/usr/bin/env bash
# Generate the `imbalance` and `addition` ECG sets from a trained cNVAE-ECG (paper Table I).
# Usage: scripts/generate_samples.sh [CHECKPOINT] [DATA_DIR] [OUT_ROOT]
#   writes OUT_ROOT/cnvae_imbalance and OUT_ROOT/cnvae_addition (generated-sample format)
# Environment: TEMPERATURE, BATCH_SIZE, FACTOR (addition), SEED, PYTHON, TASKS ("imbalance addition"), EXTRA_ARGS
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-${CHECKPOINT:-$REPO/runs/cnvae_paper/checkpoints/latest.pt}}"
DATA_DIR="${2:-${DATA_DIR:-$REPO/data/prepared}}"
OUT_ROOT="${3:-${OUT_ROOT:-$REPO/results/generated}}"
TEMPERATURE="${TEMPERATURE:-1.0}"
BATCH_SIZE="${BATCH_SIZE:-256}"
FACTOR="${FACTOR:-2}"
SEED="${SEED:-0}"
TASKS="${TASKS:-imbalance addition}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
cd "$REPO"
for TASK in $TASKS; do
    FACTOR_ARGS=()
    if [[ "$TASK" == "addition" ]]; then FACTOR_ARGS=(--factor "$FACTOR"); fi
    "$PYTHON" -m nvae_ecg.generate \
        --checkpoint "$CHECKPOINT" --data_dir "$DATA_DIR" --dataset ptb-xl \
        --task_type "$TASK" "${FACTOR_ARGS[@]}" \
        --temperature "$TEMPERATURE" --batch_size "$BATCH_SIZE" --seed "$SEED" \
        --format npy --generator_name cnvae \
        --out_dir "$OUT_ROOT/cnvae_$TASK" --overwrite \
        "${EXTRA[@]}"
done
