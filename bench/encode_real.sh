#!/usr/bin/env bash
# Real-corpus encoding, as users run it: an evenly spaced sample of InsuranceQA
# answers at their real lengths, encoded the way `cpack index build` encodes
# (chunks of the build's size, length-sorted batches of 32), at max length 128
# and 256, for candle f32 (the default encoder) and bf16 (bf16 products, f32
# sums), ONNX Runtime f32 and int8, against sentence-transformers encoding the
# same passages (one `model.encode`, which sorts by length too) in f32 and
# under PyTorch's bf16 autocast. Alternated round by round, because these
# machines are noisy; ratios are medians of per-round ratios. The report
# names the kernels each side ran (cpack's bench facts; PyTorch's CPU
# capability and the oneDNN primitives of one batch).
#
#   bash bench/encode_real.sh [--passages 2000] [--rounds 3] [--threads 2]
#                             [--autocast-passages N]
#
# On a CPU without bf16 instructions PyTorch's autocast falls back to slow
# generic code: --autocast-passages encodes fewer passages there (an evenly
# spaced sample too; rates are per real token).
#
# Writes target/bench/encode-real.json and target/bench/encode-real.md. The
# peer needs .cache/bench-venv (bash bench/peer/setup.sh; several GB, never in
# CI); without it only cpack runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PASSAGES=2000 ROUNDS=3 THREADS=2 AUTOCAST_PASSAGES=
while [ $# -gt 0 ]; do
  case "$1" in
    --passages) PASSAGES=$2; shift 2 ;;
    --autocast-passages) AUTOCAST_PASSAGES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench/encode-real-runs; mkdir -p "$OUT"; rm -f "$OUT"/*.json
VENV=.cache/bench-venv/bin/python
for round in $(seq "$ROUNDS"); do
  for len in 128 256; do
    common=(--real "$PASSAGES" --max-len "$len" --threads "$THREADS" --reps 1)
    ./target/release/cpack-bench encode "${common[@]}" --json "$OUT/candle-f32-$len-$round.json"
    ./target/release/cpack-bench encode "${common[@]}" --precision bf16 \
      --json "$OUT/candle-bf16-$len-$round.json"
    ./target/release/cpack-bench encode "${common[@]}" --backend ort --json "$OUT/ort-f32-$len-$round.json"
    ./target/release/cpack-bench encode "${common[@]}" --backend ort --precision int8 \
      --json "$OUT/ort-int8-$len-$round.json"
    if [ -x "$VENV" ]; then
      OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/encode.py "${common[@]}" \
        --json "$OUT/pytorch-$len-$round.json" 2>/dev/null
      OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/encode.py "${common[@]}" --autocast bf16 \
        ${AUTOCAST_PASSAGES:+--real "$AUTOCAST_PASSAGES"} \
        --json "$OUT/pytorch-bf16-$len-$round.json" 2>/dev/null
    fi
  done
done
python3 bench/encode_real_report.py "$OUT" "$ROUNDS" target/bench/encode-real
cat target/bench/encode-real.md
