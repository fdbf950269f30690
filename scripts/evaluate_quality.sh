#!/usr/bin/env bash
# Synthetic-ECG quality report (train_test.evaluate_quality): TRTS/TSTR class fidelity, Frechet/kernel distances and
# precision/recall/density/coverage in classifier features, spectra, inter-lead correlations, limb-lead identities,
# physiology (neurokit2) and memorisation, for every generator under GENERATED_ROOT against the real data.
# Usage: scripts/evaluate_quality.sh [PREPARED_DIR] [GENERATED_ROOT] [OUT_DIR]
#   PREPARED_DIR    prepared data (scripts/prepare_data.sh); its train/val/test splits are the real reference
#   GENERATED_ROOT  one generated-sample folder per generator and task (scripts/generate_samples.sh,
#                   scripts/generate_gan_samples.sh, scripts/generate_sssd_samples.sh); grouped by the generator field of
#                   their meta.json (any generator name, sssd_ecg included)
#   OUT_DIR         quality.json, quality.md, quality_*.png and classifier.pt
# Environment (defaults = the paper's classifier, Table IV; shrink them for smoke runs):
#   CLASSIFIER_CKPT=OUT_DIR/classifier.pt (reused when it exists, else trained and saved there)
#   ARCH=xresnet1d101 EPOCHS=50 BATCH_SIZE=128 LR=1e-3 WEIGHT_DECAY=1e-2 BOOTSTRAP=1000 AMP=bf16 DEVICE=auto
#   NUM_WORKERS=2 MAX_PER_CLASS=200 MAX_TRAIN_NN=0 K=5 WORKERS (physiology processes; unset: up to 4) SEED=0 DATASET=ptb-xl TSTR=1 (0: skip TSTR)
#   PHYSIOLOGY_BACKEND=auto PYTHON=python GENERATED="NAME=PATH ..." (instead of/besides the root)
#   WITH_DEEPFAKE=0 (1: add the published deepfake-ecg Pulse2Pulse, trained on real ECGs, as an unconditional
#   reference source: DEEPFAKE_N=1000 of its ECGs (DEEPFAKE_SEED=0) written once to
#   DEEPFAKE_DIR=OUT_DIR/deepfake_ecg by python -m pulse2pulse.deepfake, reused when present)
#   EXTRA_ARGS (appended verbatim)
# Every default here is train_test.evaluate_quality's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREPARED_DIR="${1:-${PREPARED_DIR:-$REPO/data/prepared}}"
GENERATED_ROOT="${2:-${GENERATED_ROOT:-$REPO/results/generated}}"
OUT_DIR="${3:-${OUT_DIR:-$REPO/results/quality}}"
DATASET="${DATASET:-ptb-xl}"
ARCH="${ARCH:-xresnet1d101}"
EPOCHS="${EPOCHS:-50}"
BATCH_SIZE="${BATCH_SIZE:-128}"
LR="${LR:-1e-3}"
WEIGHT_DECAY="${WEIGHT_DECAY:-1e-2}"
BOOTSTRAP="${BOOTSTRAP:-1000}"
AMP="${AMP:-bf16}"
DEVICE="${DEVICE:-auto}"
NUM_WORKERS="${NUM_WORKERS:-2}"
MAX_PER_CLASS="${MAX_PER_CLASS:-200}"
MAX_TRAIN_NN="${MAX_TRAIN_NN:-0}"
K="${K:-5}"
SEED="${SEED:-0}"
TSTR="${TSTR:-1}"
PHYSIOLOGY_BACKEND="${PHYSIOLOGY_BACKEND:-auto}"
PYTHON="${PYTHON:-python}"
read -r -a GENERATED_LIST <<< "${GENERATED:-}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
WORKER_ARGS=()
if [[ -n "${WORKERS:-}" ]]; then WORKER_ARGS=(--physiology_workers "$WORKERS"); fi
# Absolute paths: the command below runs from the repository root.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
PREPARED_DIR="$(abspath "$PREPARED_DIR")"
GENERATED_ROOT="$(abspath "$GENERATED_ROOT")"
OUT_DIR="$(abspath "$OUT_DIR")"
CLASSIFIER_CKPT="$(abspath "${CLASSIFIER_CKPT:-$OUT_DIR/classifier.pt}")"
WITH_DEEPFAKE="${WITH_DEEPFAKE:-0}"
case "$WITH_DEEPFAKE" in
    0) ;;
    1)
        DEEPFAKE_DIR="$(abspath "${DEEPFAKE_DIR:-$OUT_DIR/deepfake_ecg}")"
        if [[ ! -f "$DEEPFAKE_DIR/meta.json" ]]; then
            (cd "$REPO" && "$PYTHON" -m pulse2pulse.deepfake --out_dir "$DEEPFAKE_DIR" --n "${DEEPFAKE_N:-1000}" \
                --seed "${DEEPFAKE_SEED:-0}")
        fi
        GENERATED_LIST+=("deepfake-ecg=$DEEPFAKE_DIR")
        ;;
    *) echo "WITH_DEEPFAKE must be 0 or 1, got $WITH_DEEPFAKE" >&2; exit 1 ;;
esac
ROOT_ARGS=()
if [[ -d "$GENERATED_ROOT" ]]; then ROOT_ARGS=(--generated_root "$GENERATED_ROOT"); fi
if [[ ${#ROOT_ARGS[@]} -eq 0 && ${#GENERATED_LIST[@]} -eq 0 ]]; then
    echo "no generated sets: $GENERATED_ROOT does not exist and GENERATED is empty" >&2
    exit 1
fi
TSTR_ARGS=()
case "$TSTR" in
    1) ;;
    0) TSTR_ARGS=(--no_tstr) ;;
    *) echo "TSTR must be 0 or 1, got $TSTR" >&2; exit 1 ;;
esac
cd "$REPO"
"$PYTHON" -m train_test.evaluate_quality \
    --data_dir "$PREPARED_DIR" \
    --dataset "$DATASET" \
    "${ROOT_ARGS[@]}" \
    --generated "${GENERATED_LIST[@]}" \
    --out_dir "$OUT_DIR" \
    --classifier_ckpt "$CLASSIFIER_CKPT" \
    "${TSTR_ARGS[@]}" \
    --max_per_class "$MAX_PER_CLASS" \
    --max_train_nn "$MAX_TRAIN_NN" \
    --k "$K" \
    --physiology_backend "$PHYSIOLOGY_BACKEND" \
    "${WORKER_ARGS[@]}" \
    --seed "$SEED" \
    --arch "$ARCH" \
    --epochs "$EPOCHS" \
    --batch_size "$BATCH_SIZE" \
    --learning_rate "$LR" \
    --weight_decay "$WEIGHT_DECAY" \
    --amp "$AMP" \
    --device "$DEVICE" \
    --num_workers "$NUM_WORKERS" \
    --eval_batch_size 256 \
    --bootstrap "$BOOTSTRAP" \
    "${EXTRA[@]}"
