#!/usr/bin/env bash
# Train SSSD-ECG (Alcaraz & Strodthoff 2023, AI4HealthUOL/SSSD-ECG src/sssd/train.py), the conditional diffusion
# generator with S4 layers: paper preset (36 blocks of 256 channels, 50,194,568 parameters with 9 classes), T = 200,
# Adam lr 2e-4, batch 6 (what their trainer runs), 100k iterations, at 100 Hz with amplitudes in [-1, 1].
# Usage: scripts/sssd_ecg_train.sh [DATA_DIR] [ROOT] [NAME]
# Environment:
#   NGPUS=N         processes/GPUs on this node (torchrun); 1 runs a single process
#   CONFIG=tiny     a tiny configuration for CPU smoke runs (with MAX_STEPS=20 etc.); default paper; also small
#   MAX_STEPS       default 100000 = the authors' n_iters
#   MAX_HOURS       wall-clock budget in hours (0: none): the paper's protocol gives every generator the VAE's time
#   LENGTH (the preset's, 1000: 100 Hz; 5000: native 500 Hz, not validated), AMPLITUDE (the preset's, pm1; or
#   unit|mv), BATCH_SIZE (6), AMP (none|bf16), SAVE_EVERY (4000), QUALITY_EVERY (10000), NUM_WORKERS (2),
#   PYTHON, EXTRA_ARGS (appended verbatim)
# Every default here is sssd_ecg.train's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-${DATA_DIR:-$REPO/data/prepared}}"
ROOT="${2:-${ROOT:-$REPO/runs}}"
NAME="${3:-${NAME:-sssd_ecg}}"
NGPUS="${NGPUS:-1}"
CONFIG="${CONFIG:-paper}"
MAX_STEPS="${MAX_STEPS:-100000}"
MAX_HOURS="${MAX_HOURS:-0}"
BATCH_SIZE="${BATCH_SIZE:-6}"
AMP="${AMP:-none}"
NUM_WORKERS="${NUM_WORKERS:-2}"
SAVE_EVERY="${SAVE_EVERY:-4000}"
QUALITY_EVERY="${QUALITY_EVERY:-10000}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
# Unset: the preset's (sssd_ecg.config).
OPTIONAL=()
if [[ -n "${LENGTH:-}" ]]; then OPTIONAL+=(--length "$LENGTH"); fi
if [[ -n "${AMPLITUDE:-}" ]]; then OPTIONAL+=(--amplitude "$AMPLITUDE"); fi
if [[ "$NGPUS" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS")
else
    LAUNCH=("$PYTHON")
fi
cd "$REPO"
"${LAUNCH[@]}" -m sssd_ecg.train \
    --data_dir "$DATA_DIR" --dataset ptb-xl --classes all \
    --root "$ROOT" --save "$NAME" \
    --config "$CONFIG" "${OPTIONAL[@]}" \
    --max_steps "$MAX_STEPS" --max_hours "$MAX_HOURS" --batch_size "$BATCH_SIZE" --learning_rate 2e-4 \
    --amp "$AMP" --num_workers "$NUM_WORKERS" --seed 1 \
    --log_every 100 --save_every "$SAVE_EVERY" --quality_every "$QUALITY_EVERY" \
    "${EXTRA[@]}"
