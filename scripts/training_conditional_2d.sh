#!/usr/bin/env bash
# Train 2D-cNVAE-ECG, the STFT variant of the paper (Sec. III-A, compared in Fig. 2/3): each of the 8 independent
# leads -> centred Hann STFT (n_fft 126, hop 40, window 126: a 16 x 64 x 126 real/imaginary spectrogram, normalised
# per channel and frequency on the training split) -> 2-D NVAE with the paper's Table V hyper-parameters except
# 2 instead of 4 pre/post-processing blocks (see nvae_ecg/config.py, preset paper2d) and a per-entry Gaussian decoder.
# scripts/training_conditional.sh with CONFIG=paper2d and --representation stft: the same schedule, classes, data and
# environment (NGPUS, EPOCHS, BATCH_SIZE, MAX_STEPS, AMP, NUM_WORKERS, PYTHON, EXTRA_ARGS); sample with
# scripts/generate_samples.sh (the generator name, nvae2d, comes from the checkpoint).
# Usage: scripts/training_conditional_2d.sh [DATA_DIR] [ROOT] [NAME]      (NAME default nvae2d_paper)
# Environment, besides those of scripts/training_conditional.sh:
#   CONFIG=small2d a small 2-D configuration for CPU smoke runs (or tiny2d); paper2d by default
#   N_FFT, HOP_LENGTH, WIN_LENGTH   STFT geometry (unset: the preset's, 126, 40, 126)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-${DATA_DIR:-$REPO/data/prepared}}"
ROOT="${2:-${ROOT:-$REPO/runs}}"
NAME="${3:-${NAME:-nvae2d_paper}}"
MODEL_ARGS="--representation stft"
if [[ -n "${N_FFT:-}" ]]; then MODEL_ARGS="$MODEL_ARGS --stft_n_fft $N_FFT"; fi
if [[ -n "${HOP_LENGTH:-}" ]]; then MODEL_ARGS="$MODEL_ARGS --stft_hop_length $HOP_LENGTH"; fi
if [[ -n "${WIN_LENGTH:-}" ]]; then MODEL_ARGS="$MODEL_ARGS --stft_win_length $WIN_LENGTH"; fi
CONFIG="${CONFIG:-paper2d}" EXTRA_ARGS="$MODEL_ARGS ${EXTRA_ARGS:-}" \
    exec bash "$REPO/scripts/training_conditional.sh" "$DATA_DIR" "$ROOT" "$NAME"
