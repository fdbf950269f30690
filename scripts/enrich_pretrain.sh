#!/usr/bin/env bash
# Pretraining enrichment benchmark (paper Tables VI, VII): pretrain XResNet1d101 on PTB-XL (8 classes) without
# and with each generator's imbalance ECGs (every class lifted to the SR count, Table I), replace the head and
# fine-tune on fractions n of Georgia (8 classes) and Ningbo (7, no AF); then the report.
# Usage: scripts/enrich_pretrain.sh [PREPARED_DIR] [GENERATED_ROOT] [RESULTS_DIR]
#   PREPARED_DIR    prepared data (scripts/prepare_data.sh)
#   GENERATED_ROOT  one generated-sample folder per generator and task: cnvae and nvae2d (2D-cNVAE-ECG) from
#                   scripts/generate_samples.sh (GENERATOR=cnvae|nvae2d), wavegan_star and pulse2pulse from
#                   scripts/generate_gan_samples.sh, sssd_ecg from scripts/generate_sssd_samples.sh; grouped by the
#                   generator/task_type fields of their meta.json (any generator name is picked up)
#   RESULTS_DIR     enrich_pretrain.json, pretrained/ checkpoints, TensorBoard events and report/
# Environment (defaults = paper; shrink them for smoke runs):
#   EPOCHS=50 PRETRAIN_EPOCHS (unset: EPOCHS) BATCH_SIZE=128 LR=1e-3 WEIGHT_DECAY=1e-2 SEEDS="0 1 2" ARCH=xresnet1d101
#   BOOTSTRAP=1000 TARGETS="georgia ningbo" FRACTIONS="0.1 ... 1.0" PRETRAIN_TASK=imbalance PRETRAIN_PROPORTIONS=1.0
#   AMP=bf16 DEVICE=auto NUM_WORKERS=2 PYTHON=python GENERATED="NAME=PATH ..." EXTRA_ARGS (appended verbatim)
#   REPORT=0        skip the closing train_test.report (the quickstart writes one report over all results)
# The authors' enrich_pretrain.py instead loops n over the proportion of generated pretraining ECGs with the full
# fine-tuning split: FRACTIONS=1.0 PRETRAIN_PROPORTIONS="0.1 0.2 ... 1.0" reproduces that. Each model is
# pretrained once per generator, proportion and seed and reused for every fraction and target; reruns resume.
# Every default here is train_test.enrich_pretrain's own (tests/test_script_presets.py compares them) but SEEDS: the
# benchmark's protocol repeats every cell over 3 seeds, the Python default is one run (--seeds 0).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREPARED_DIR="${1:-${PREPARED_DIR:-$REPO/data/prepared}}"
GENERATED_ROOT="${2:-${GENERATED_ROOT:-$REPO/results/generated}}"
RESULTS_DIR="${3:-${RESULTS_DIR:-$REPO/results/enrich_pretrain}}"
EPOCHS="${EPOCHS:-50}"
BATCH_SIZE="${BATCH_SIZE:-128}"
LR="${LR:-1e-3}"
WEIGHT_DECAY="${WEIGHT_DECAY:-1e-2}"
SEEDS="${SEEDS:-0 1 2}"
ARCH="${ARCH:-xresnet1d101}"
BOOTSTRAP="${BOOTSTRAP:-1000}"
TARGETS="${TARGETS:-georgia ningbo}"
FRACTIONS="${FRACTIONS:-0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0}"
PRETRAIN_TASK="${PRETRAIN_TASK:-imbalance}"
PRETRAIN_PROPORTIONS="${PRETRAIN_PROPORTIONS:-1.0}"
AMP="${AMP:-bf16}"
DEVICE="${DEVICE:-auto}"
NUM_WORKERS="${NUM_WORKERS:-2}"
PYTHON="${PYTHON:-python}"
read -r -a SEED_LIST <<< "$SEEDS"
read -r -a FRACTION_LIST <<< "$FRACTIONS"
read -r -a PROPORTION_LIST <<< "$PRETRAIN_PROPORTIONS"
read -r -a GENERATED_LIST <<< "${GENERATED:-}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
PRETRAIN_ARGS=()
if [[ -n "${PRETRAIN_EPOCHS:-}" ]]; then PRETRAIN_ARGS=(--pretrain_epochs "$PRETRAIN_EPOCHS"); fi
# Absolute paths: the commands below run from the repository root.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
PREPARED_DIR="$(abspath "$PREPARED_DIR")"
GENERATED_ROOT="$(abspath "$GENERATED_ROOT")"
RESULTS_DIR="$(abspath "$RESULTS_DIR")"
ROOT_ARGS=()
if [[ -d "$GENERATED_ROOT" ]]; then ROOT_ARGS=(--generated_root "$GENERATED_ROOT"); fi
if [[ ${#ROOT_ARGS[@]} -eq 0 && ${#GENERATED_LIST[@]} -eq 0 ]]; then
    echo "no generated sets: $GENERATED_ROOT does not exist and GENERATED is empty" >&2
    exit 1
fi
cd "$REPO"
for TARGET in $TARGETS; do
    echo "== enrich_pretrain: fine-tuning on $TARGET, fractions $FRACTIONS, seeds $SEEDS"
    "$PYTHON" -m train_test.enrich_pretrain \
        --data_dir "$PREPARED_DIR" \
        --source ptb-xl \
        --targets "$TARGET" \
        --pretrain_classes SR,LAD,LVH,AF,STach,IAVB,SB,TAb \
        --reference SR \
        "${ROOT_ARGS[@]}" \
        --generated "${GENERATED_LIST[@]}" \
        --task_type "$PRETRAIN_TASK" \
        --pretrain_proportions "${PROPORTION_LIST[@]}" \
        --fractions "${FRACTION_LIST[@]}" \
        --seeds "${SEED_LIST[@]}" \
        --arch "$ARCH" \
        --epochs "$EPOCHS" \
        "${PRETRAIN_ARGS[@]}" \
        --batch_size "$BATCH_SIZE" \
        --learning_rate "$LR" \
        --weight_decay "$WEIGHT_DECAY" \
        --amp "$AMP" \
        --device "$DEVICE" \
        --num_workers "$NUM_WORKERS" \
        --eval_batch_size 256 \
        --bootstrap "$BOOTSTRAP" \
        --out_dir "$RESULTS_DIR" \
        "${EXTRA[@]}"
done
if [[ "${REPORT:-1}" == "1" ]]; then
    "$PYTHON" -m train_test.report "$RESULTS_DIR"
fi
