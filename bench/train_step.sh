#!/usr/bin/env bash
# Training-step throughput, cpack against PyTorch on the same machine: 16
# queries × 32 tokens + 32 passages × 128 tokens, forward + backward + AdamW,
# in f32 and with bf16 products (cpack --precision bf16; PyTorch under
# torch.autocast("cpu", dtype=torch.bfloat16), its CPU recipe), alternated
# round by round because these machines are noisy; prints each run, the
# median ratios of tokens/s and the kernels each side ran (cpack's bench
# facts; PyTorch's CPU capability and the oneDNN primitives of one step).
#
#   bash bench/train_step.sh [--threads 2] [--rounds 3] [--precisions "f32 bf16"]
#
# The peer needs .cache/bench-venv (bash bench/peer/setup.sh); without it only cpack runs.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 ROUNDS=3 PRECISIONS="f32 bf16"
while [ $# -gt 0 ]; do
  case "$1" in
    --precisions) PRECISIONS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench; mkdir -p "$OUT"
VENV=.cache/bench-venv/bin/python
for round in $(seq "$ROUNDS"); do
  for precision in $PRECISIONS; do
    ./target/release/cpack-bench train-step --threads "$THREADS" --reps 3 --precision "$precision" \
      --json "$OUT/train-cpack-$precision-$round.json" 2>/dev/null
    if [ -x "$VENV" ]; then
      flag=(); [ "$precision" = bf16 ] && flag=(--bf16)
      OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/train_step.py --threads "$THREADS" --reps 3 "${flag[@]}" \
        --json "$OUT/train-torch-$precision-$round.json" | tail -1
    fi
  done
done
python3 - "$OUT" "$ROUNDS" $PRECISIONS <<'PY'
import json, os, statistics, sys
out, rounds, precisions = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
load = lambda name: json.load(open(os.path.join(out, name))) if os.path.exists(os.path.join(out, name)) else None
for p in precisions:
    cpack = [load(f"train-cpack-{p}-{r}.json") for r in range(1, rounds + 1)]
    torch = [load(f"train-torch-{p}-{r}.json") for r in range(1, rounds + 1)]
    rate = lambda runs: statistics.median(x["tokens_per_second"] for x in runs)
    line = f"{p}: cpack {rate(cpack):,.0f} tokens/s (bf16 products on {cpack[0]['machine'].get('bf16_kernel')})"
    if all(torch):
        ratios = [a["tokens_per_second"] / b["tokens_per_second"] for a, b in zip(cpack, torch)]
        line += (f", PyTorch {rate(torch):,.0f} tokens/s (CPU capability {torch[0].get('cpu_capability')}; "
                 f"oneDNN: {', '.join(torch[0].get('onednn_kernels') or ['none'])}); cpack / PyTorch per round "
                 f"{[round(x, 2) for x in ratios]}, median {statistics.median(ratios):.2f}")
    else:
        line += "; peer not installed (.cache/bench-venv): bash bench/peer/setup.sh"
    print(line)
PY
