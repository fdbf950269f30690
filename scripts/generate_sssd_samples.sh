#!/usr/bin/env bash
# Generate the `imbalance` and `addition` ECG sets (paper Table I) from one SSSD-ECG checkpoint.
# Usage: scripts/generate_sssd_samples.sh [CHECKPOINT] [DATA_DIR] [OUT_ROOT]
#   writes OUT_ROOT/sssd_ecg_imbalance and OUT_ROOT/sssd_ecg_addition (generated-sample format, meta.json generator
#   sssd_ecg; override the name with GEN_NAME). Each ECG costs 200 network evaluations (ancestral DDPM sampling).
# Environment: BATCH_SIZE (32: each batch runs 200 denoising steps and the paper model's activations grow with it),
#   FACTOR (addition, 2), SEED (0), PYTHON, TASKS ("imbalance addition"), GEN_NAME, DEVICE (auto), EXTRA_ARGS
# Every default here is sssd_ecg.generate's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-${CHECKPOINT:-$REPO/runs/sssd_ecg/checkpoints/latest.pt}}"
DATA_DIR="${2:-${DATA_DIR:-$REPO/data/prepared}}"
OUT_ROOT="${3:-${OUT_ROOT:-$REPO/results/generated}}"
BATCH_SIZE="${BATCH_SIZE:-32}"
FACTOR="${FACTOR:-2}"
SEED="${SEED:-0}"
TASKS="${TASKS:-imbalance addition}"
GEN_NAME="${GEN_NAME:-sssd_ecg}"
DEVICE="${DEVICE:-auto}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
cd "$REPO"
if [[ ! -f "$CHECKPOINT" ]]; then
    echo "error: checkpoint $CHECKPOINT not found (train with scripts/sssd_ecg_train.sh)" >&2
    exit 2
fi
for TASK in $TASKS; do
    FACTOR_ARGS=()
    if [[ "$TASK" == "addition" ]]; then FACTOR_ARGS=(--factor "$FACTOR"); fi
    "$PYTHON" -m sssd_ecg.generate \
        --checkpoint "$CHECKPOINT" --data_dir "$DATA_DIR" --dataset ptb-xl \
        --task_type "$TASK" "${FACTOR_ARGS[@]}" \
        --batch_size "$BATCH_SIZE" --seed "$SEED" --device "$DEVICE" \
        --format npy --generator_name "$GEN_NAME" \
        --out_root "$OUT_ROOT" --overwrite \
        "${EXTRA[@]}"
done
