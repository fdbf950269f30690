#!/usr/bin/env bash
# Throughput benchmark of every model, fast path vs float64 eager, one table per model (python -m nvae_ecg.bench).
# Usage: scripts/benchmark.sh [OUT_DIR]      (default: ./results/bench; writes OUT_DIR/<model>_<config>_<device>.json)
# Environment (defaults are the paper-size models; on a 2-core CPU use MODELS="cnvae" CONFIG=small BATCH_SIZE=8):
#   MODELS       models to run ("cnvae wavegan_star pulse2pulse xresnet1d101")
#   CONFIG       named configuration for all of them (paper)
#   BATCH_SIZE   per step (32, the paper's batch)      STEPS / WARMUP / SPLIT_STEPS / SAMPLE_BATCHES (20 / 5 / 3 / 3)
#   DEVICE       auto, cpu or cuda (auto)               COMPILE  none or cells (torch.compile) for the cNVAE fast path (none)
#   MODES        precision modes (empty: the benchmark's default, fast float64 original for cnvae, fast float64 else)
#   THREADS      torch CPU threads, 0 = default (0)    REPEATS  interleaved runs of every mode, median reported (1)
#   PYTHON       interpreter (python)
# Deliberately not python -m nvae_ecg.bench's defaults (batch 8, 5 steps, 2 warm-up, 2 split steps, 2 sampling
# batches: a quick CPU look): this script measures the paper's batch as BENCHMARKS.md reports it. Its other defaults
# are the module's own (tests/test_script_presets.py compares them).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-${OUT_DIR:-$PWD/results/bench}}" && cd "${1:-${OUT_DIR:-$PWD/results/bench}}" && pwd)"
MODELS="${MODELS:-cnvae wavegan_star pulse2pulse xresnet1d101}"
CONFIG="${CONFIG:-paper}"
BATCH_SIZE="${BATCH_SIZE:-32}"
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-5}"
SPLIT_STEPS="${SPLIT_STEPS:-3}"
SAMPLE_BATCHES="${SAMPLE_BATCHES:-3}"
DEVICE="${DEVICE:-auto}"
COMPILE="${COMPILE:-none}"
MODES="${MODES:-}"
THREADS="${THREADS:-0}"
REPEATS="${REPEATS:-1}"
PYTHON="${PYTHON:-python}"
MODE_ARGS=()
if [[ -n "$MODES" ]]; then
    read -r -a MODE_LIST <<< "$MODES"
    MODE_ARGS=(--modes "${MODE_LIST[@]}")
fi
cd "$REPO"
for MODEL in $MODELS; do
    "$PYTHON" -m nvae_ecg.bench \
        --model "$MODEL" \
        --config "$CONFIG" \
        --batch_size "$BATCH_SIZE" \
        --steps "$STEPS" \
        --warmup "$WARMUP" \
        --split_steps "$SPLIT_STEPS" \
        --sample_batches "$SAMPLE_BATCHES" \
        "${MODE_ARGS[@]}" \
        --repeats "$REPEATS" \
        --compile "$COMPILE" \
        --device "$DEVICE" \
        --threads "$THREADS" \
        --json "$OUT_DIR/${MODEL}_${CONFIG}_${DEVICE}.json"
done
echo "done: figures in $OUT_DIR"
