#!/usr/bin/env bash
# Train the conditional Pulse2Pulse baseline (paper Sec. IV-A.3, Table II; Thambawita et al. 2021 as forked by the
# cNVAE-ECG authors, univanxx/Pulse2Pulse pulse2pulse_train.sh) with WGAN-GP.
# Usage: scripts/pulse2pulse_train.sh [DATA_DIR] [ROOT] [NAME]
# Environment:
#   NGPUS=N         processes/GPUs on this node (torchrun); 1 runs a single process
#   CONFIG=small    a small configuration for CPU smoke runs (with EPOCHS=1 MAX_STEPS=4 etc.); default paper (d = 50)
#   EPOCHS          default 1200 = the paper's Table II; the fork's script ran --num_epochs 2400 (3000 in an earlier version)
#   MAX_HOURS       wall-clock budget in hours (0: none); the paper trains the GANs for the VAE's training time
#   BATCH_SIZE (32), MAX_STEPS (0), N_CRITIC (5), AMP (none|bf16), COND_DISCRIMINATOR (none|projection),
#   PYTHON, EXTRA_ARGS (appended verbatim)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-${DATA_DIR:-$REPO/data/prepared}}"
ROOT="${2:-${ROOT:-$REPO/runs}}"
NAME="${3:-${NAME:-pulse2pulse}}"
NGPUS="${NGPUS:-1}"
CONFIG="${CONFIG:-paper}"
EPOCHS="${EPOCHS:-1200}"
MAX_HOURS="${MAX_HOURS:-0}"
BATCH_SIZE="${BATCH_SIZE:-32}"
MAX_STEPS="${MAX_STEPS:-0}"
N_CRITIC="${N_CRITIC:-5}"
AMP="${AMP:-bf16}"
COND_DISCRIMINATOR="${COND_DISCRIMINATOR:-none}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
if [[ "$NGPUS" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS")
else
    LAUNCH=("$PYTHON")
fi
cd "$REPO"
"${LAUNCH[@]}" -m pulse2pulse.train --model pulse2pulse \
    --data_dir "$DATA_DIR" --dataset ptb-xl --classes all \
    --root "$ROOT" --save "$NAME" \
    --config "$CONFIG" --cond_discriminator "$COND_DISCRIMINATOR" \
    --epochs "$EPOCHS" --max_hours "$MAX_HOURS" --max_steps "$MAX_STEPS" --batch_size "$BATCH_SIZE" \
    --n_critic "$N_CRITIC" --gp_weight 10 --learning_rate 1e-4 --beta1 0.5 --beta2 0.9 \
    --amp "$AMP" --num_workers 4 --seed 1 \
    --log_every 50 --sample_every 100 --save_every 100 \
    "${EXTRA[@]}"
