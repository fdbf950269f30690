#!/usr/bin/env bash
# One command, the whole pipeline on the embedded demo data: install, write demo ECGs in the Challenge 2021 layout,
# prepare them, take the committed demo cNVAE-ECG and WaveGAN* checkpoints (nvae_ecg/demo, pulse2pulse/demo: made
# by scripts/make_demo_checkpoints.sh on this same demo data; TRAIN=1 trains both from scratch instead), fine-tune
# the published Pulse2Pulse (deepfake-ecg) into a conditional one for a few minutes, generate the `imbalance` and
# `addition` sets from each, run both downstream benchmarks (enrich_train: both task types; enrich_pretrain:
# Georgia and Ningbo) with a small classifier, and write the report (tables + figures).
# About 15 minutes on 2 CPU cores (QUICK=1: 2-4 minutes); uses a GPU when one is visible.
# Usage: scripts/quickstart.sh [WORK_DIR]          (default: ./quickstart)
#   WORK_DIR/raw, prepared/, runs/ (checkpoints + TensorBoard), generated/, results/, report/report.md
# Environment:
#   QUICK=1        smoke version (fewer records, a few steps; what the test suite runs)
#   SKIP_SETUP=1   use $PYTHON (default: python) instead of creating/updating .venv with scripts/setup_env.sh
#   TRAIN=1        train cNVAE-ECG and WaveGAN* here (VAE_* and GAN_* below) instead of using the demo
#                  checkpoints; a few CPU minutes of training do not reach their quality (BENCHMARKS.md)
#   Sizes (default full / QUICK=1), all overridable:
#   N_PTBXL N_GEORGIA N_NINGBO   demo records per source (1200 500 500 / 120 40 40)
#   VAE_CONFIG VAE_EPOCHS VAE_MAX_STEPS VAE_BATCH   cNVAE-ECG (demo 6 0 8 / tiny 1 6 8); 0 steps = all epochs
#   VAE_SCHEDULE   cNVAE-ECG optimiser and warm-ups with TRAIN=1 (default: Adam 3e-3, LR warm-up over 50 steps,
#                  KL weight 1 from the first step, as scripts/make_demo_checkpoints.sh; BENCHMARKS.md "Learning
#                  curves of the demo model"); VAE_SCHEDULE=" " trains with the authors' schedule
#   TEMPERATURE    cNVAE-ECG sampling temperature (0.5; a briefly trained model's output noise is large). The
#                  demo samples with PROTOCOL=plain: the authors' protocol (scripts/generate_samples.sh's default,
#                  100 BatchNorm passes per label combination at 0.6-0.9) is too slow for a CPU demo
#   GAN_CONFIG GAN_MINUTES GAN_MAX_STEPS GAN_BATCH  each GAN (small 1.5 0 16 / tiny 0 4 8); 0 minutes = no budget
#   P2P_CONFIG P2P_INIT P2P_MINUTES  Pulse2Pulse (paper deepfake-ecg 1.5 / tiny none 0): P2P_INIT=deepfake-ecg starts
#                  from the published unconditional weights (Thambawita et al. 2021; the paper-size generator),
#                  P2P_INIT=none from scratch with GAN_CONFIG
#   FACTOR         size of the generated sets relative to Table I's counts (0.25 / 0.2); the proportions below
#                  must not exceed it
#   ADDITION_PROPORTIONS IMBALANCE_PROPORTIONS   enrich_train proportions n ("0.1 0.25" / "0.1 0.2")
#   FRACTIONS      enrich_pretrain fine-tuning fractions ("0.5 1.0")
#   CLS_ARCH CLS_EPOCHS SEEDS    classifier of both benchmarks (tiny 4 "0" / tiny 1 "0"; paper: xresnet1d101 50)
#   MAX_PER_CLASS  ECGs per class and source in the report's heart-rate and heartbeat figures (200 / 30)
#   DEVICE         auto (GPU when visible), cpu or cuda
#   WITH_2D=1      also train 2D-cNVAE-ECG (the paper's STFT ablation, generator nvae2d; VAE2D_CONFIG small2d /
#                  tiny2d), generate from it and include it in both benchmarks and the report
#   WITH_SSSD=1    also take SSSD-ECG (diffusion with S4 layers, sssd_ecg/): the demo checkpoint
#                  sssd_ecg/demo/sssd_ecg_demo.pt ('small', 4000 steps; with TRAIN=1 a 'small' one trained here for
#                  SSSD_STEPS 300 / 4 steps), generate from it (200 denoising steps per ECG: the slowest sampler
#                  here, several CPU minutes) and include it
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${1:-${WORK_DIR:-$PWD/quickstart}}" && cd "${1:-${WORK_DIR:-$PWD/quickstart}}" && pwd)"
T0=$SECONDS
if [[ "${SKIP_SETUP:-0}" == "1" ]]; then
    PYTHON="${PYTHON:-python}"
else
    echo "[setup] installing the environment (scripts/setup_env.sh)"
    bash "$REPO/scripts/setup_env.sh"
    PYTHON="$REPO/.venv/bin/python"
fi
if [[ "${QUICK:-0}" == "1" ]]; then
    N_PTBXL="${N_PTBXL:-120}"; N_GEORGIA="${N_GEORGIA:-40}"; N_NINGBO="${N_NINGBO:-40}"
    VAE_CONFIG="${VAE_CONFIG:-tiny}"; VAE_EPOCHS="${VAE_EPOCHS:-1}"; VAE_MAX_STEPS="${VAE_MAX_STEPS:-6}"
    VAE_BATCH="${VAE_BATCH:-8}"
    GAN_CONFIG="${GAN_CONFIG:-tiny}"; GAN_MINUTES="${GAN_MINUTES:-0}"; GAN_MAX_STEPS="${GAN_MAX_STEPS:-4}"
    GAN_BATCH="${GAN_BATCH:-8}"
    P2P_CONFIG="${P2P_CONFIG:-$GAN_CONFIG}"; P2P_INIT="${P2P_INIT:-none}"; P2P_MINUTES="${P2P_MINUTES:-$GAN_MINUTES}"
    FACTOR="${FACTOR:-0.2}"
    ADDITION_PROPORTIONS="${ADDITION_PROPORTIONS:-0.1 0.2}"; IMBALANCE_PROPORTIONS="${IMBALANCE_PROPORTIONS:-0.1 0.2}"
    FRACTIONS="${FRACTIONS:-0.5 1.0}"
    CLS_ARCH="${CLS_ARCH:-tiny}"; CLS_EPOCHS="${CLS_EPOCHS:-1}"; SEEDS="${SEEDS:-0}"
    MAX_PER_CLASS="${MAX_PER_CLASS:-30}"
else
    N_PTBXL="${N_PTBXL:-1200}"; N_GEORGIA="${N_GEORGIA:-500}"; N_NINGBO="${N_NINGBO:-500}"
    VAE_CONFIG="${VAE_CONFIG:-demo}"; VAE_EPOCHS="${VAE_EPOCHS:-6}"; VAE_MAX_STEPS="${VAE_MAX_STEPS:-0}"
    VAE_BATCH="${VAE_BATCH:-8}"
    GAN_CONFIG="${GAN_CONFIG:-small}"; GAN_MINUTES="${GAN_MINUTES:-1.5}"; GAN_MAX_STEPS="${GAN_MAX_STEPS:-0}"
    GAN_BATCH="${GAN_BATCH:-16}"
    P2P_CONFIG="${P2P_CONFIG:-paper}"; P2P_INIT="${P2P_INIT:-deepfake-ecg}"; P2P_MINUTES="${P2P_MINUTES:-1.5}"
    FACTOR="${FACTOR:-0.25}"
    ADDITION_PROPORTIONS="${ADDITION_PROPORTIONS:-0.1 0.25}"; IMBALANCE_PROPORTIONS="${IMBALANCE_PROPORTIONS:-0.1 0.25}"
    FRACTIONS="${FRACTIONS:-0.5 1.0}"
    CLS_ARCH="${CLS_ARCH:-tiny}"; CLS_EPOCHS="${CLS_EPOCHS:-4}"; SEEDS="${SEEDS:-0}"
    MAX_PER_CLASS="${MAX_PER_CLASS:-200}"
fi
WITH_2D="${WITH_2D:-0}"
WITH_SSSD="${WITH_SSSD:-0}"
if [[ "${QUICK:-0}" == "1" ]]; then SSSD_STEPS="${SSSD_STEPS:-4}"; else SSSD_STEPS="${SSSD_STEPS:-300}"; fi
TRAIN="${TRAIN:-0}"
DEMO_VAE="$REPO/nvae_ecg/demo/cnvae_demo.pt"
DEMO_GAN="$REPO/pulse2pulse/demo/wavegan_star_demo.pt"
DEMO_SSSD="$REPO/sssd_ecg/demo/sssd_ecg_demo.pt"
if [[ "$TRAIN" != "1" ]]; then
    DEMOS=("$DEMO_VAE" "$DEMO_GAN")
    if [[ "$WITH_SSSD" == "1" ]]; then DEMOS+=("$DEMO_SSSD"); fi
    for f in "${DEMOS[@]}"; do
        if [[ ! -f "$f" ]]; then
            echo "error: demo checkpoint $f is missing; make it with scripts/make_demo_checkpoints.sh or run" \
                 "TRAIN=1 scripts/quickstart.sh to train every generator here" >&2
            exit 2
        fi
    done
fi
if [[ "${QUICK:-0}" == "1" ]]; then VAE2D_CONFIG="${VAE2D_CONFIG:-tiny2d}"; else VAE2D_CONFIG="${VAE2D_CONFIG:-small2d}"; fi
DEVICE="${DEVICE:-auto}"
TEMPERATURE="${TEMPERATURE:-0.5}"
GAN_HOURS="$(awk -v m="$GAN_MINUTES" 'BEGIN { printf "%.6f", m / 60 }')"
P2P_HOURS="$(awk -v m="$P2P_MINUTES" 'BEGIN { printf "%.6f", m / 60 }')"
export PYTHON
cd "$REPO"
STAGES=10
stage() { echo; echo "[$1/$STAGES] $2   ($((SECONDS - T0)) s elapsed)"; }

stage 1 "writing demo data ($N_PTBXL PTB-XL, $N_GEORGIA Georgia, $N_NINGBO Ningbo records) to $WORK/raw"
"$PYTHON" -m nvae_ecg.data.synthetic "$WORK/raw" --n_ptbxl "$N_PTBXL" --n_georgia "$N_GEORGIA" \
    --n_ningbo "$N_NINGBO" --seed 0 --overwrite > "$WORK/synthetic_summary.json"

stage 2 "preparing it into $WORK/prepared (scripts/prepare_data.sh)"
bash "$REPO/scripts/prepare_data.sh" "$WORK/raw" "$WORK/prepared"

# A committed demo checkpoint is copied where a trained one would be, so every later stage is the same.
use_demo() {  # use_demo NAME CHECKPOINT
    rm -rf "$WORK/runs/$1"
    mkdir -p "$WORK/runs/$1/checkpoints"
    cp "$2" "$WORK/runs/$1/checkpoints/latest.pt"
}
VAE_ARGS="--num_workers 0 --log_every 10 --iw_samples 2 --max_val_batches 2 --sample_every 0 --save_every 0"
VAE_SCHEDULE="${VAE_SCHEDULE:---optimizer adam --learning_rate 3e-3 --warmup_steps 50 --kl_const_steps 0 --kl_anneal_steps 1}"
if [[ "$TRAIN" != "1" ]]; then
    stage 3 "cNVAE-ECG: the demo checkpoint ${DEMO_VAE#"$REPO/"} (scripts/make_demo_checkpoints.sh; TRAIN=1 trains one)"
    use_demo cnvae "$DEMO_VAE"
else
    stage 3 "training a '$VAE_CONFIG' cNVAE-ECG for $VAE_EPOCHS epoch(s) (scripts/training_conditional.sh)"
    rm -rf "$WORK/runs/cnvae"
    CONFIG="$VAE_CONFIG" EPOCHS="$VAE_EPOCHS" MAX_STEPS="$VAE_MAX_STEPS" BATCH_SIZE="$VAE_BATCH" AMP=bf16 \
        EXTRA_ARGS="$VAE_ARGS $VAE_SCHEDULE --device $DEVICE" \
        bash "$REPO/scripts/training_conditional.sh" "$WORK/prepared" "$WORK/runs" cnvae
fi
if [[ "$WITH_2D" == "1" ]]; then
    echo "[3/$STAGES] WITH_2D=1: training a '$VAE2D_CONFIG' 2D-cNVAE-ECG (scripts/training_conditional_2d.sh)"
    rm -rf "$WORK/runs/nvae2d"
    CONFIG="$VAE2D_CONFIG" EPOCHS="$VAE_EPOCHS" MAX_STEPS="$VAE_MAX_STEPS" BATCH_SIZE="$VAE_BATCH" AMP=bf16 \
        EXTRA_ARGS="$VAE_ARGS --device $DEVICE" \
        bash "$REPO/scripts/training_conditional_2d.sh" "$WORK/prepared" "$WORK/runs" nvae2d
fi

GAN_ARGS="--num_workers 0 --log_every 5 --sample_every 0 --save_every 0 --device $DEVICE"
budget() {  # budget HOURS MINUTES
    local b="$2 min"
    if [[ "$1" == "0.000000" ]]; then b="no time limit"; fi
    if [[ "$GAN_MAX_STEPS" != "0" ]]; then b="$b, at most $GAN_MAX_STEPS critic steps"; fi
    echo "$b"
}
if [[ "$TRAIN" != "1" ]]; then
    stage 4 "WaveGAN*: the demo checkpoint ${DEMO_GAN#"$REPO/"} (scripts/make_demo_checkpoints.sh; TRAIN=1 trains one)"
    use_demo wavegan_star "$DEMO_GAN"
else
    stage 4 "training a '$GAN_CONFIG' wavegan_star for $(budget "$GAN_HOURS" "$GAN_MINUTES") (scripts/wavegan_star_train.sh)"
    rm -rf "$WORK/runs/wavegan_star"
    CONFIG="$GAN_CONFIG" EPOCHS=100000 MAX_HOURS="$GAN_HOURS" MAX_STEPS="$GAN_MAX_STEPS" BATCH_SIZE="$GAN_BATCH" \
        AMP=bf16 EXTRA_ARGS="$GAN_ARGS" bash "$REPO/scripts/wavegan_star_train.sh" "$WORK/prepared" "$WORK/runs" wavegan_star
fi
P2P_ARGS="$GAN_ARGS"
P2P_WHAT="a '$P2P_CONFIG' pulse2pulse"
if [[ "$P2P_INIT" != "none" ]]; then
    # The published generator is paper-sized; a width-8 critic keeps the fine-tuning a few CPU minutes.
    P2P_ARGS="$P2P_ARGS --init_from $P2P_INIT --disc_model_size 8"
    P2P_WHAT="pulse2pulse from the published $P2P_INIT weights"
fi
stage 5 "training $P2P_WHAT for $(budget "$P2P_HOURS" "$P2P_MINUTES") (scripts/pulse2pulse_train.sh)"
rm -rf "$WORK/runs/pulse2pulse"
CONFIG="$P2P_CONFIG" EPOCHS=100000 MAX_HOURS="$P2P_HOURS" MAX_STEPS="$GAN_MAX_STEPS" BATCH_SIZE="$GAN_BATCH" \
    AMP=bf16 EXTRA_ARGS="$P2P_ARGS" bash "$REPO/scripts/pulse2pulse_train.sh" "$WORK/prepared" "$WORK/runs" pulse2pulse

if [[ "$WITH_SSSD" == "1" && "$TRAIN" != "1" ]]; then
    echo "[5/$STAGES] WITH_SSSD=1: SSSD-ECG, the demo checkpoint ${DEMO_SSSD#"$REPO/"} (scripts/make_demo_checkpoints.sh)"
    use_demo sssd_ecg "$DEMO_SSSD"
elif [[ "$WITH_SSSD" == "1" ]]; then
    echo "[5/$STAGES] WITH_SSSD=1: training a 'small' SSSD-ECG for $SSSD_STEPS steps (scripts/sssd_ecg_train.sh)"
    rm -rf "$WORK/runs/sssd_ecg"
    # Adam 1e-3 and batch 8 as scripts/make_demo_checkpoints.sh: the paper's 2e-4 is slow for a CPU budget.
    CONFIG=small MAX_STEPS="$SSSD_STEPS" BATCH_SIZE=8 SAVE_EVERY=0 QUALITY_EVERY=0 \
        EXTRA_ARGS="--num_workers 0 --log_every 10 --sample_every 0 --learning_rate 1e-3 --device $DEVICE" \
        bash "$REPO/scripts/sssd_ecg_train.sh" "$WORK/prepared" "$WORK/runs" sssd_ecg
fi

stage 6 "generating imbalance and addition sets (x$FACTOR of Table I's counts) of every generator"
rm -rf "$WORK/generated"
PROTOCOL=plain TEMPERATURE="$TEMPERATURE" BATCH_SIZE=64 FACTOR="$FACTOR" \
    EXTRA_ARGS="--factor $FACTOR --device $DEVICE" \
    bash "$REPO/scripts/generate_samples.sh" "$WORK/runs/cnvae/checkpoints/latest.pt" "$WORK/prepared" \
    "$WORK/generated"
if [[ "$WITH_2D" == "1" ]]; then
    PROTOCOL=plain TEMPERATURE="$TEMPERATURE" BATCH_SIZE=64 FACTOR="$FACTOR" \
        EXTRA_ARGS="--factor $FACTOR --device $DEVICE" \
        bash "$REPO/scripts/generate_samples.sh" "$WORK/runs/nvae2d/checkpoints/latest.pt" "$WORK/prepared" \
        "$WORK/generated"
fi
for GAN in wavegan_star pulse2pulse; do
    BATCH_SIZE=64 FACTOR="$FACTOR" EXTRA_ARGS="--factor $FACTOR --device $DEVICE" \
        bash "$REPO/scripts/generate_gan_samples.sh" "$WORK/runs/$GAN/checkpoints/latest.pt" "$WORK/prepared" \
        "$WORK/generated"
done
if [[ "$WITH_SSSD" == "1" ]]; then
    BATCH_SIZE=64 FACTOR="$FACTOR" DEVICE="$DEVICE" EXTRA_ARGS="--factor $FACTOR" \
        bash "$REPO/scripts/generate_sssd_samples.sh" "$WORK/runs/sssd_ecg/checkpoints/latest.pt" "$WORK/prepared" \
        "$WORK/generated"
fi

stage 7 "training-set enrichment (Fig. 2/3): MI on PTB-XL, $CLS_ARCH XResNet, $CLS_EPOCHS epoch(s) (scripts/enrich_train.sh)"
rm -rf "$WORK/results"
EPOCHS="$CLS_EPOCHS" SEEDS="$SEEDS" ARCH="$CLS_ARCH" BOOTSTRAP=100 TASKS="addition imbalance" \
    ADDITION_PROPORTIONS="$ADDITION_PROPORTIONS" IMBALANCE_PROPORTIONS="$IMBALANCE_PROPORTIONS" \
    NUM_WORKERS=0 DEVICE="$DEVICE" REPORT=0 \
    bash "$REPO/scripts/enrich_train.sh" "$WORK/prepared" "$WORK/generated" "$WORK/results/enrich_train" \
    > "$WORK/enrich_train.log"
echo "results: $WORK/results/enrich_train/enrich_train.json (log: $WORK/enrich_train.log)"

stage 8 "pretraining enrichment (Tables VI/VII): Georgia and Ningbo, fractions $FRACTIONS (scripts/enrich_pretrain.sh)"
EPOCHS="$CLS_EPOCHS" PRETRAIN_EPOCHS="$CLS_EPOCHS" SEEDS="$SEEDS" ARCH="$CLS_ARCH" BOOTSTRAP=100 \
    TARGETS="georgia ningbo" FRACTIONS="$FRACTIONS" PRETRAIN_PROPORTIONS="$FACTOR" NUM_WORKERS=0 DEVICE="$DEVICE" \
    REPORT=0 \
    bash "$REPO/scripts/enrich_pretrain.sh" "$WORK/prepared" "$WORK/generated" "$WORK/results/enrich_pretrain" \
    > "$WORK/enrich_pretrain.log"
echo "results: $WORK/results/enrich_pretrain/enrich_pretrain.json (log: $WORK/enrich_pretrain.log)"

stage 9 "synthetic-ECG quality of every generator: fidelity, realism, physiology, memorisation (scripts/evaluate_quality.sh)"
ARCH="$CLS_ARCH" EPOCHS="$CLS_EPOCHS" BOOTSTRAP=100 NUM_WORKERS=0 WORKERS=2 DEVICE="$DEVICE" \
    MAX_PER_CLASS="$MAX_PER_CLASS" \
    bash "$REPO/scripts/evaluate_quality.sh" "$WORK/prepared" "$WORK/generated" "$WORK/results/quality" \
    > "$WORK/quality.log"
echo "tables: $WORK/results/quality/quality.md (log: $WORK/quality.log)"

stage 10 "writing the report (python -m train_test.report)"
"$PYTHON" -m train_test.report "$WORK/results" --data_dir "$WORK/prepared" --generated_root "$WORK/generated" \
    --quality_dir "$WORK/results/quality" --out_dir "$WORK/report" --max_per_class "$MAX_PER_CLASS" \
    > "$WORK/report.log"
echo
echo "quickstart finished in $((SECONDS - T0)) s; TensorBoard logs: tensorboard --logdir $WORK/runs"
echo "done: report at $WORK/report/report.md"
