#!/usr/bin/env bash
# Dropout in distribution, cpack against PyTorch: one fixed batch of real
# InsuranceQA training questions (each with its positive and other answers)
# at the base model's weights, scored without dropout (both sides must
# agree exactly) and under N dropout draws on each side (masks differ; the
# mean loss and mean gradient norm must agree within their standard errors).
#
#   bash bench/dropout_stats.sh [--queries 16] [--draws 80]
#
# Writes target/bench/dropout-stats.md. Needs .cache/bench-venv (bash bench/peer/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
QUERIES=16 DRAWS=80
while [ $# -gt 0 ]; do
  case "$1" in
    --queries) QUERIES=$2; shift 2 ;;
    --draws) DRAWS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
VENV=.cache/bench-venv/bin/python
[ -x "$VENV" ] || { echo "the PyTorch side needs .cache/bench-venv: bash bench/peer/setup.sh" >&2; exit 1; }
bash scripts/setup.sh >/dev/null
cargo build --release -q -p cpack-bench
OUT=target/bench; mkdir -p "$OUT"
./target/release/cpack-bench dropout-stats --queries "$QUERIES" --draws "$DRAWS" \
  --batch-out "$OUT/dropout-batch.json" --json "$OUT/dropout-cpack.json" >/dev/null
OMP_NUM_THREADS=2 "$VENV" bench/peer/dropout_stats.py --batch "$OUT/dropout-batch.json" \
  --draws "$DRAWS" --json "$OUT/dropout-torch.json" >/dev/null 2>&1
python3 - "$OUT" <<'PY'
import json, math, statistics as st, sys
out = sys.argv[1]
a, b = (json.load(open(f"{out}/dropout-{s}.json")) for s in ("cpack", "torch"))
lines = [f"Dropout draws of one batch ({a['queries']} questions × group {a['group']}, base MiniLM): "
         f"{len(a['losses'])} draws per side.", "",
         "| figure | cpack mean (sd) | PyTorch mean (sd) | difference / its standard error |", "|---|---:|---:|---:|"]
for key, name in (("losses", "loss"), ("grad_norms", "gradient norm")):
    x, y = a[key], b[key]
    se = math.sqrt(st.variance(x) / len(x) + st.variance(y) / len(y))
    lines.append(f"| {name} | {st.mean(x):.4f} ({st.stdev(x):.4f}) | {st.mean(y):.4f} ({st.stdev(y):.4f}) "
                 f"| {(st.mean(x) - st.mean(y)) / se:+.2f} |")
lines.append(f"| without dropout: loss, gradient norm | {a['no_dropout']['loss']:.6f}, {a['no_dropout']['grad_norm']:.4f} "
             f"| {b['no_dropout']['loss']:.6f}, {b['no_dropout']['grad_norm']:.4f} | |")
open(f"{out}/dropout-stats.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
