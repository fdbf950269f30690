#!/usr/bin/env bash
# Train the conditional Pulse2Pulse baseline (paper Sec. IV-A.3, Table II; Thambawita et al. 2021 as forked by the
# cNVAE-ECG authors, univanxx/Pulse2Pulse pulse2pulse_train.sh) with WGAN-GP: scripts/wavegan_star_train.sh with
# GAN_MODEL=pulse2pulse, the same environment (NGPUS, CONFIG, EPOCHS (1200 = Table II), MAX_HOURS, BATCH_SIZE,
# MAX_STEPS, N_CRITIC, AMP, COND_DISCRIMINATOR, NUM_WORKERS, PYTHON, EXTRA_ARGS).
# Usage: scripts/pulse2pulse_train.sh [DATA_DIR] [ROOT] [NAME]      (NAME default pulse2pulse)
set -euo pipefail
GAN_MODEL=pulse2pulse exec bash "$(dirname "${BASH_SOURCE[0]}")/wavegan_star_train.sh" "$@"
