#!/usr/bin/env bash
# Real-corpus encoding, as users run it: an evenly spaced sample of InsuranceQA
# answers at their real lengths, encoded the way `cpack index build` encodes
# (chunks of the build's size, length-sorted batches of 32), at max length 128
# and 256, for candle f32 (the default encoder), ONNX Runtime f32 and int8,
# against sentence-transformers encoding the same passages (one
# `model.encode`, which sorts by length too). Alternated round by round,
# because these machines are noisy; ratios are medians of per-round ratios.
#
#   bash bench/encode_real.sh [--passages 2000] [--rounds 3] [--threads 2]
#
# Writes target/bench/encode-real.json and target/bench/encode-real.md. The
# peer needs .cache/bench-venv (bash bench/peer/setup.sh; several GB, never in
# CI); without it only cpack runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PASSAGES=2000 ROUNDS=3 THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --passages) PASSAGES=$2; shift 2 ;;
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
    ./target/release/cpack-bench encode "${common[@]}" --backend ort --json "$OUT/ort-f32-$len-$round.json"
    ./target/release/cpack-bench encode "${common[@]}" --backend ort --precision int8 \
      --json "$OUT/ort-int8-$len-$round.json"
    if [ -x "$VENV" ]; then
      OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/encode.py "${common[@]}" \
        --json "$OUT/pytorch-$len-$round.json" 2>/dev/null
    fi
  done
done
python3 bench/encode_real_report.py "$OUT" "$ROUNDS" target/bench/encode-real
cat target/bench/encode-real.md
