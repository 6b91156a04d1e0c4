#!/usr/bin/env bash
# Encoding throughput, cpack (candle + OpenBLAS) against PyTorch +
# sentence-transformers on the same machine, alternated A B A B because these
# machines are noisy; prints each run and the median ratio.
#
#   bash bench/encode.sh [--max-len 128] [--threads 2] [--rounds 3]
#
# The peer needs a venv with torch and sentence-transformers (several GB):
# `bash bench/peer/setup.sh` makes .cache/bench-venv. Without it, only cpack runs.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_LEN=128 THREADS=2 ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --max-len) MAX_LEN=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench; mkdir -p "$OUT"
VENV=.cache/bench-venv/bin/python
common=(--max-len "$MAX_LEN" --threads "$THREADS" --batch 32 --batches 8 --reps 3)
ratios=()
for round in $(seq "$ROUNDS"); do
  ./target/release/cpack-bench encode "${common[@]}" --json "$OUT/cpack-$round.json"
  if [ -x "$VENV" ]; then
    OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/encode.py "${common[@]}" --json "$OUT/torch-$round.json"
    ratios+=("$(python3 -c "import json;a=json.load(open('$OUT/cpack-$round.json'));b=json.load(open('$OUT/torch-$round.json'));print(a['tokens_per_second_median']/b['tokens_per_second_median'])")")
  fi
done
if [ ${#ratios[@]} -gt 0 ]; then
  python3 -c "import statistics,sys;r=[float(x) for x in sys.argv[1:]];print(f'cpack / pytorch tokens/s, per round: {[round(x,2) for x in r]}, median {statistics.median(r):.2f}')" "${ratios[@]}"
else
  echo "peer not installed (.cache/bench-venv): run bash bench/peer/setup.sh for the PyTorch side"
fi
