#!/usr/bin/env bash
# Train 2D-cNVAE-ECG, the STFT variant of the paper (Sec. III-A, compared in Fig. 2/3): each of the 8 independent
# leads -> centred Hann STFT (n_fft 126, hop 40, window 126: a 16 x 64 x 126 real/imaginary spectrogram, normalised
# per channel and frequency on the training split) -> 2-D NVAE with the paper's Table V hyper-parameters except
# 2 instead of 4 pre/post-processing blocks (see nvae_ecg/config.py, preset paper2d) and a per-entry Gaussian decoder.
# Same schedule, classes and data as scripts/training_conditional.sh; sample with scripts/generate_samples.sh and
# GENERATOR=nvae2d.
# Usage: scripts/training_conditional_2d.sh [DATA_DIR] [ROOT] [NAME]
# Environment:
#   NGPUS=N        processes/GPUs on this node (torchrun); 1 runs a single process
#   CONFIG=small2d a small 2-D configuration for CPU smoke runs (or tiny2d); paper2d by default
#   EPOCHS, BATCH_SIZE, MAX_STEPS, AMP (none|bf16|fp16), PYTHON, EXTRA_ARGS (appended verbatim)
#   N_FFT, HOP_LENGTH, WIN_LENGTH   STFT geometry (defaults 126, 40, 126)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-${DATA_DIR:-$REPO/data/prepared}}"
ROOT="${2:-${ROOT:-$REPO/runs}}"
NAME="${3:-${NAME:-nvae2d_paper}}"
NGPUS="${NGPUS:-1}"
CONFIG="${CONFIG:-paper2d}"
EPOCHS="${EPOCHS:-500}"
BATCH_SIZE="${BATCH_SIZE:-64}"
MAX_STEPS="${MAX_STEPS:-0}"
AMP="${AMP:-bf16}"
N_FFT="${N_FFT:-126}"
HOP_LENGTH="${HOP_LENGTH:-40}"
WIN_LENGTH="${WIN_LENGTH:-126}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
if [[ "$NGPUS" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS")
else
    LAUNCH=("$PYTHON")
fi
MODEL_ARGS=(--representation stft --stft_n_fft "$N_FFT" --stft_hop_length "$HOP_LENGTH" --stft_win_length "$WIN_LENGTH")
cd "$REPO"
"${LAUNCH[@]}" -m nvae_ecg.train \
    --data_dir "$DATA_DIR" --dataset ptb-xl --classes all \
    --root "$ROOT" --save "$NAME" \
    --config "$CONFIG" "${MODEL_ARGS[@]}" \
    --epochs "$EPOCHS" --max_steps "$MAX_STEPS" --batch_size "$BATCH_SIZE" \
    --learning_rate 1e-3 --learning_rate_min 5e-4 --weight_decay 3e-4 --percent_epochs 5 \
    --weight_decay_norm 1e-2 \
    --kl_anneal_portion 0.3 --kl_const_portion 1e-4 --kl_const_coeff 1e-4 \
    --amp "$AMP" --num_workers 4 --seed 1 \
    --log_every 50 --eval_every 1 --iw_every 10 --iw_samples 10 --sample_every 5 --save_every 5 \
    "${EXTRA[@]}"
