#!/usr/bin/env bash
# Train the CVAE of Sang, Beetz & Grau (ISBI 2022; YulingSang/CVAE_ECG train.py: Adam 1e-3, batch 32, 300 epochs)
# on the 8 independent leads x 10 s, conditioned on age and sex (and the 9 classes with CONDITION=both).
# Usage: scripts/cvae_ecg_train.sh [DATA_DIR] [ROOT] [NAME]
# Environment:
#   NGPUS=N         processes/GPUs on this node (torchrun); 1 runs a single process
#   CONDITION       demographics (default: [age z, age missing, male, female]), classes or both
#   EPOCHS (300), MAX_HOURS (0: none; the paper's protocol gives every baseline the VAE's training time),
#   BATCH_SIZE (32), MAX_STEPS (0), AMP (none|bf16), NUM_WORKERS (2), PYTHON, EXTRA_ARGS (appended verbatim)
# Every default here is cvae_ecg.train's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-${DATA_DIR:-$REPO/data/prepared}}"
ROOT="${2:-${ROOT:-$REPO/runs}}"
NAME="${3:-${NAME:-cvae_ecg}}"
NGPUS="${NGPUS:-1}"
CONDITION="${CONDITION:-demographics}"
EPOCHS="${EPOCHS:-300}"
MAX_HOURS="${MAX_HOURS:-0}"
BATCH_SIZE="${BATCH_SIZE:-32}"
MAX_STEPS="${MAX_STEPS:-0}"
AMP="${AMP:-none}"
NUM_WORKERS="${NUM_WORKERS:-2}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
if [[ "$NGPUS" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS")
else
    LAUNCH=("$PYTHON")
fi
cd "$REPO"
"${LAUNCH[@]}" -m cvae_ecg.train \
    --data_dir "$DATA_DIR" --dataset ptb-xl --classes all \
    --root "$ROOT" --save "$NAME" \
    --config ecg --condition "$CONDITION" \
    --epochs "$EPOCHS" --max_hours "$MAX_HOURS" --max_steps "$MAX_STEPS" --batch_size "$BATCH_SIZE" \
    --learning_rate 1e-3 --beta1 0.9 --beta2 0.999 --adam_eps 1e-7 \
    --amp "$AMP" --num_workers "$NUM_WORKERS" --seed 1 \
    --log_every 50 --sample_every 10 --save_every 50 \
    "${EXTRA[@]}"
