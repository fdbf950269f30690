#!/usr/bin/env bash
# Generate the `imbalance` and `addition` ECG sets (paper Table I) from one WaveGAN* or Pulse2Pulse checkpoint.
# Usage: scripts/generate_gan_samples.sh [CHECKPOINT] [DATA_DIR] [OUT_ROOT]
#   writes OUT_ROOT/<generator>_imbalance and OUT_ROOT/<generator>_addition (generated-sample format), where
#   <generator> is wavegan_star or pulse2pulse as stored in the checkpoint (override with GEN_NAME)
# Environment: BATCH_SIZE (64; more is faster on a GPU), FACTOR (addition, 2), SEED (0), PYTHON,
#   TASKS ("imbalance addition"), GEN_NAME, EXTRA_ARGS
# Every default here is pulse2pulse.generate's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-${CHECKPOINT:-$REPO/runs/wavegan_star/checkpoints/latest.pt}}"
DATA_DIR="${2:-${DATA_DIR:-$REPO/data/prepared}}"
OUT_ROOT="${3:-${OUT_ROOT:-$REPO/results/generated}}"
BATCH_SIZE="${BATCH_SIZE:-64}"
FACTOR="${FACTOR:-2}"
SEED="${SEED:-0}"
TASKS="${TASKS:-imbalance addition}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
cd "$REPO"
if [[ ! -f "$CHECKPOINT" ]]; then
    echo "error: checkpoint $CHECKPOINT not found (train with scripts/wavegan_star_train.sh or scripts/pulse2pulse_train.sh)" >&2
    exit 2
fi
NAME_ARGS=()
if [[ -n "${GEN_NAME:-}" ]]; then NAME_ARGS=(--generator_name "$GEN_NAME"); fi
for TASK in $TASKS; do
    FACTOR_ARGS=()
    if [[ "$TASK" == "addition" ]]; then FACTOR_ARGS=(--factor "$FACTOR"); fi
    "$PYTHON" -m pulse2pulse.generate \
        --checkpoint "$CHECKPOINT" --data_dir "$DATA_DIR" --dataset ptb-xl \
        --task_type "$TASK" "${FACTOR_ARGS[@]}" \
        --batch_size "$BATCH_SIZE" --seed "$SEED" \
        --format npy "${NAME_ARGS[@]}" \
        --out_root "$OUT_ROOT" --overwrite \
        "${EXTRA[@]}"
done
