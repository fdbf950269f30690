#!/usr/bin/env bash
# Train the demo checkpoints the quickstart samples from by default (nvae_ecg/demo/cnvae_demo.pt,
# pulse2pulse/demo/wavegan_star_demo.pt, sssd_ecg/demo/sssd_ecg_demo.pt): the quickstart's demo data (seed 0), a
# `demo` cNVAE-ECG and a `small` conditional WaveGAN*, trained side by side for a fixed number of steps on CPU
# (one thread each, seeded, so a rerun on the same machine writes the same weights), then a `small` SSSD-ECG
# (Adam 1e-3 instead of the paper's 2e-4, batch 8: a CPU budget; docs/differences.md), then slimmed to sampler-only copies (python -m
# nvae_ecg.utils slim: no optimiser, RNG or discriminator; a few MB each). The VAE's KL weight is 1 from the first
# step: with the beat-phase map a warm-up only lets the latents encode beats the map already gives (BENCHMARKS.md,
# "Learning curves of the demo model"). The runs log the quality monitor, so
# `python -m nvae_ecg.time_to_quality WORK_DIR/runs/*` reads their learning curves.
# Usage: scripts/make_demo_checkpoints.sh [WORK_DIR]       (default ./demo_checkpoints; ~1 h on 2 idle CPU cores)
# Environment: PYTHON (default .venv/bin/python after scripts/setup_env.sh, or SKIP_SETUP=1 and python),
#   VAE_STEPS (2500), GAN_STEPS (critic steps, 1000), SSSD_STEPS (4000; 0 skips it), OUT_VAE, OUT_GAN, OUT_SSSD
#   (where the slim checkpoints go)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${1:-${WORK_DIR:-$PWD/demo_checkpoints}}" && cd "${1:-${WORK_DIR:-$PWD/demo_checkpoints}}" && pwd)"
if [[ "${SKIP_SETUP:-0}" == "1" ]]; then
    PYTHON="${PYTHON:-python}"
else
    bash "$REPO/scripts/setup_env.sh"
    PYTHON="$REPO/.venv/bin/python"
fi
VAE_STEPS="${VAE_STEPS:-2500}"
GAN_STEPS="${GAN_STEPS:-1000}"
OUT_VAE="${OUT_VAE:-$REPO/nvae_ecg/demo/cnvae_demo.pt}"
OUT_GAN="${OUT_GAN:-$REPO/pulse2pulse/demo/wavegan_star_demo.pt}"
SSSD_STEPS="${SSSD_STEPS:-4000}"
OUT_SSSD="${OUT_SSSD:-$REPO/sssd_ecg/demo/sssd_ecg_demo.pt}"
export PYTHON OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd "$REPO"

echo "[1/5] demo data (the quickstart's: 1200 PTB-XL, 500 Georgia, 500 Ningbo records, seed 0)"
"$PYTHON" -m nvae_ecg.data.synthetic "$WORK/raw" --n_ptbxl 1200 --n_georgia 500 --n_ningbo 500 --seed 0 \
    --overwrite > "$WORK/synthetic_summary.json"
WORKERS=1 bash "$REPO/scripts/prepare_data.sh" "$WORK/raw" "$WORK/prepared" > "$WORK/prepare.log"

echo "[2/5] training cNVAE-ECG (demo, $VAE_STEPS steps) and WaveGAN* (small, $GAN_STEPS critic steps) side by side"
rm -rf "$WORK/runs"
"$PYTHON" -m nvae_ecg.train --data_dir "$WORK/prepared" --root "$WORK/runs" --save cnvae --config demo \
    --epochs 1000 --max_steps "$VAE_STEPS" --batch_size 8 --optimizer adam --learning_rate 3e-3 \
    --warmup_steps 50 --kl_const_steps 0 --kl_anneal_steps 1 --seed 1 --num_workers 0 --device cpu \
    --log_every 50 --eval_every 5 --iw_every 0 --iw_samples 2 --max_val_batches 2 --sample_every 0 \
    --save_every 0 --quality_every 250 > "$WORK/cnvae.log" 2>&1 &
VAE_PID=$!
"$PYTHON" -m pulse2pulse.train --model wavegan_star --config small --data_dir "$WORK/prepared" \
    --root "$WORK/runs" --save wavegan_star --epochs 100000 --max_steps "$GAN_STEPS" --batch_size 16 \
    --n_critic 5 --gp_weight 10 --learning_rate 1e-4 --beta1 0.5 --beta2 0.9 --seed 1 --num_workers 0 \
    --device cpu --log_every 50 --sample_every 0 --save_every 0 --quality_every 250 > "$WORK/wavegan_star.log" 2>&1 &
GAN_PID=$!
status=0
wait "$VAE_PID" || { echo "cNVAE-ECG training failed: see $WORK/cnvae.log" >&2; status=1; }
wait "$GAN_PID" || { echo "WaveGAN* training failed: see $WORK/wavegan_star.log" >&2; status=1; }
[[ "$status" == 0 ]] || exit 1

RUNS=("$WORK/runs/cnvae" "$WORK/runs/wavegan_star")
if [[ "$SSSD_STEPS" != "0" ]]; then
    echo "[3/5] training SSSD-ECG (small, $SSSD_STEPS steps, Adam 1e-3, batch 8)"
    "$PYTHON" -m sssd_ecg.train --data_dir "$WORK/prepared" --root "$WORK/runs" --save sssd_ecg --config small \
        --max_steps "$SSSD_STEPS" --batch_size 8 --learning_rate 1e-3 --seed 1 --num_workers 0 --device cpu \
        --log_every 50 --sample_every 0 --save_every 1000 --quality_every 1000 --quality_n 2 \
        > "$WORK/sssd_ecg.log" 2>&1 || { echo "SSSD-ECG training failed: see $WORK/sssd_ecg.log" >&2; exit 1; }
    RUNS+=("$WORK/runs/sssd_ecg")
fi

echo "[4/5] slim sampler-only copies next to the packages (nvae_ecg/demo, pulse2pulse/demo, sssd_ecg/demo)"
mkdir -p "$(dirname "$OUT_VAE")" "$(dirname "$OUT_GAN")"
"$PYTHON" -m nvae_ecg.utils slim "$WORK/runs/cnvae/checkpoints/latest.pt" "$OUT_VAE"
"$PYTHON" -m nvae_ecg.utils slim "$WORK/runs/wavegan_star/checkpoints/latest.pt" "$OUT_GAN"
OUTS=("$OUT_VAE" "$OUT_GAN")
if [[ "$SSSD_STEPS" != "0" ]]; then
    mkdir -p "$(dirname "$OUT_SSSD")"
    "$PYTHON" -m nvae_ecg.utils slim "$WORK/runs/sssd_ecg/checkpoints/latest.pt" "$OUT_SSSD"
    OUTS+=("$OUT_SSSD")
fi
ls -l "${OUTS[@]}"
sha256sum "${OUTS[@]}"

echo "[5/5] time to quality of the runs -> $WORK/time_to_quality"
"$PYTHON" -m nvae_ecg.time_to_quality "${RUNS[@]}" --out "$WORK/time_to_quality"
