#!/usr/bin/env bash
# Peak memory of one training step at the paper's batch: 32 queries × 64
# tokens + 256 passages × 256 tokens (batch 32 × group 8), forward +
# backward + AdamW on all-MiniLM-L6-v2, 2 threads, measured by
# /usr/bin/time -v (maximum resident set) around each process: PyTorch,
# cpack on the whole batch, cpack with --mini-batch 32 (GradCache).
# Each process runs a warm-up step and one timed step.
#
#   bash bench/train_memory.sh
#
# Writes target/bench/train-memory.json and .md. The peer needs
# .cache/bench-venv (bash bench/peer/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release -q -p cpack-bench
OUT=target/bench; mkdir -p "$OUT"
SHAPE=(--queries 32 --query-len 64 --passages 256 --passage-len 256 --threads 2 --reps 1)
measure() {  # label, command…
  local label=$1; shift
  /usr/bin/time -v "$@" >"$OUT/train-memory-$label.out" 2>"$OUT/train-memory-$label.err"
  local kb; kb=$(grep "Maximum resident set size" "$OUT/train-memory-$label.err" | awk '{print $NF}')
  local secs; secs=$(grep -o '"median_seconds": *[0-9.]*' "$OUT/train-memory-$label.out" | grep -o '[0-9.]*$')
  echo "$label $kb $secs"
}
{
  if [ -x .cache/bench-venv/bin/python ]; then
    measure pytorch env OMP_NUM_THREADS=2 .cache/bench-venv/bin/python bench/peer/train_step.py "${SHAPE[@]}"
  fi
  measure cpack ./target/release/cpack-bench train-step "${SHAPE[@]}"
  measure cpack-mini-batch-32 ./target/release/cpack-bench train-step "${SHAPE[@]}" --mini-batch 32
} | python3 -c '
import json, sys
rows = [l.split() for l in sys.stdin if l.strip()]
out = {r[0]: {"peak_rss_gib": int(r[1]) / 2**20, "step_seconds": float(r[2]) if len(r) > 2 else None} for r in rows}
json.dump(out, open(sys.argv[1] + ".json", "w"), indent=2)
lines = ["| engine | peak RSS (GiB) | step seconds |", "|---|---:|---:|"]
lines += [f"| {k} | {v[\"peak_rss_gib\"]:.2f} | {v[\"step_seconds\"] or float(\"nan\"):.1f} |" for k, v in out.items()]
open(sys.argv[1] + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
' "$OUT/train-memory"
