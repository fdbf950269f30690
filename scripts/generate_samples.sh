#!/usr/bin/env bash
# Generate the `imbalance` and `addition` ECG sets from a trained cNVAE-ECG or 2D-cNVAE-ECG (paper Table I).
# Usage: scripts/generate_samples.sh [CHECKPOINT] [DATA_DIR] [OUT_ROOT]
#   writes OUT_ROOT/${GENERATOR}_imbalance and OUT_ROOT/${GENERATOR}_addition (generated-sample format)
#   GENERATOR is read from the checkpoint by nvae_ecg.generate (--out_root): cnvae for the 1-D model
#   (scripts/training_conditional.sh), nvae2d for the 2-D STFT model (scripts/training_conditional_2d.sh); the
#   benchmarks group generated sets by it.
# Sampling protocol (PROTOCOL, default authors, so the benchmark tables compare with the paper's): the authors'
#   generate_signals.py, i.e. per label combination a temperature drawn from {0.6, 0.7, 0.8, 0.9} and BatchNorm
#   statistics re-estimated from the checkpoint's on BN_ITERS (100) sampling passes of 32 ECGs of that combination.
#   PROTOCOL=plain samples every ECG at TEMPERATURE (1.0) with the checkpoint's BatchNorm statistics. The one
#   deliberate difference from python -m nvae_ecg.generate, whose --protocol default is plain.
# Environment: PROTOCOL (authors|plain), BN_ITERS (authors, 100), TEMPERATURE (plain), BATCH_SIZE (64; 256 is faster
#   on a GPU and draws other random numbers, not another distribution), FACTOR (addition, 2), SEED (0), PYTHON,
#   TASKS ("imbalance addition"), EXTRA_ARGS,
#   GENERATOR (override the name; nvae_ecg.generate refuses cnvae/nvae2d when it contradicts the checkpoint)
# Every other default here is nvae_ecg.generate's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECKPOINT="${1:-${CHECKPOINT:-$REPO/runs/cnvae_paper/checkpoints/latest.pt}}"
DATA_DIR="${2:-${DATA_DIR:-$REPO/data/prepared}}"
OUT_ROOT="${3:-${OUT_ROOT:-$REPO/results/generated}}"
PROTOCOL="${PROTOCOL:-authors}"
BN_ITERS="${BN_ITERS:-100}"
BATCH_SIZE="${BATCH_SIZE:-64}"
FACTOR="${FACTOR:-2}"
SEED="${SEED:-0}"
TASKS="${TASKS:-imbalance addition}"
PYTHON="${PYTHON:-python}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
case "$PROTOCOL" in
    authors)
        if [[ -n "${TEMPERATURE:-}" ]]; then
            echo "error: TEMPERATURE=$TEMPERATURE applies to PROTOCOL=plain; the authors' protocol draws its own" >&2
            exit 2
        fi
        PROTOCOL_ARGS=(--protocol authors --num_iters "$BN_ITERS") ;;
    plain)
        PROTOCOL_ARGS=(--protocol plain)
        if [[ -n "${TEMPERATURE:-}" ]]; then PROTOCOL_ARGS+=(--temperature "$TEMPERATURE"); fi ;;
    *) echo "error: PROTOCOL must be authors or plain, got '$PROTOCOL'" >&2; exit 2 ;;
esac
cd "$REPO"
if [[ ! -f "$CHECKPOINT" ]]; then
    echo "error: checkpoint $CHECKPOINT not found (train with scripts/training_conditional.sh or _2d.sh)" >&2
    exit 2
fi
NAME_ARGS=()
if [[ -n "${GENERATOR:-}" ]]; then NAME_ARGS=(--generator_name "$GENERATOR"); fi
for TASK in $TASKS; do
    FACTOR_ARGS=()
    if [[ "$TASK" == "addition" ]]; then FACTOR_ARGS=(--factor "$FACTOR"); fi
    "$PYTHON" -m nvae_ecg.generate \
        --checkpoint "$CHECKPOINT" --data_dir "$DATA_DIR" --dataset ptb-xl \
        --task_type "$TASK" "${FACTOR_ARGS[@]}" \
        "${PROTOCOL_ARGS[@]}" --batch_size "$BATCH_SIZE" --seed "$SEED" \
        --format npy "${NAME_ARGS[@]}" \
        --out_root "$OUT_ROOT" --overwrite \
        "${EXTRA[@]}"
done
