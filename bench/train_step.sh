#!/usr/bin/env bash
# Training-step throughput, cpack (candle + OpenBLAS) against PyTorch on the
# same machine: 16 queries × 32 tokens + 32 passages × 128 tokens, forward +
# backward + AdamW, alternated A B A B because these machines are noisy;
# prints each run and the median ratio of tokens/s.
#
#   bash bench/train_step.sh [--threads 2] [--rounds 3]
#
# The peer needs .cache/bench-venv (bash bench/peer/setup.sh); without it only cpack runs.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench; mkdir -p "$OUT"
VENV=.cache/bench-venv/bin/python
ratios=()
for round in $(seq "$ROUNDS"); do
  ./target/release/cpack-bench train-step --threads "$THREADS" --reps 3 --json "$OUT/train-cpack-$round.json" 2>/dev/null
  if [ -x "$VENV" ]; then
    OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/train_step.py --threads "$THREADS" --reps 3 --json "$OUT/train-torch-$round.json" | tail -1
    ratios+=("$(python3 -c "import json;a=json.load(open('$OUT/train-cpack-$round.json'));b=json.load(open('$OUT/train-torch-$round.json'));print(a['tokens_per_second']/b['tokens_per_second'])")")
  fi
done
if [ ${#ratios[@]} -gt 0 ]; then
  python3 -c "import statistics,sys;r=[float(x) for x in sys.argv[1:]];print(f'cpack / pytorch train-step tokens/s, per round: {[round(x,2) for x in r]}, median {statistics.median(r):.2f}')" "${ratios[@]}"
else
  echo "peer not installed (.cache/bench-venv): run bash bench/peer/setup.sh for the PyTorch side"
fi
