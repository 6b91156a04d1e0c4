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
cargo build --release -q --workspace --bins
OUT=target/bench; mkdir -p "$OUT"
SHAPE=(--queries 32 --query-len 64 --passages 256 --passage-len 256 --threads 2 --reps 1)
measure() {  # label, command…
  local label=$1; shift
  # A process the OOM killer stops still has its peak on record.
  /usr/bin/time -v "$@" >"$OUT/train-memory-$label.out" 2>"$OUT/train-memory-$label.err" || true
  local kb; kb=$(grep "Maximum resident set size" "$OUT/train-memory-$label.err" | awk '{print $NF}')
  local secs; secs=$(grep -o '"median_seconds": *[0-9.]*' "$OUT/train-memory-$label.out" | grep -o '[0-9.]*$' || echo killed)
  echo "$label $kb $secs"
}
ROWS="$OUT/train-memory.rows"
: > "$ROWS"
if [ -x .cache/bench-venv/bin/python ]; then
  measure pytorch env OMP_NUM_THREADS=2 .cache/bench-venv/bin/python bench/peer/train_step.py "${SHAPE[@]}" >> "$ROWS"
fi
measure cpack ./target/release/cpack-bench train-step "${SHAPE[@]}" >> "$ROWS"
measure cpack-mini-batch-32 ./target/release/cpack-bench train-step "${SHAPE[@]}" --mini-batch 32 >> "$ROWS"
python3 - "$ROWS" "$OUT/train-memory" <<'PY'
import json, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
def seconds(row):
    try:
        return float(row[2])
    except (IndexError, ValueError):
        return None  # killed before its timed step
out = {r[0]: {"peak_rss_gib": int(r[1]) / 2**20, "step_seconds": seconds(r)} for r in rows}
json.dump(out, open(sys.argv[2] + ".json", "w"), indent=2)
lines = ["| engine | peak RSS (GiB) | step seconds |", "|---|---:|---:|"]
for name, v in out.items():
    secs = "killed" if v["step_seconds"] is None else f"{v['step_seconds']:.1f}"
    lines.append(f"| {name} | {v['peak_rss_gib']:.2f} | {secs} |")
open(sys.argv[2] + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
