#!/usr/bin/env bash
# Dropout in distribution, cpack against PyTorch: one fixed batch of real
# InsuranceQA training questions (each with its positive and other answers)
# at the base model's weights, scored without dropout (both sides must
# agree exactly) and under N dropout draws on each side (masks differ; the
# mean loss and mean gradient norm must agree within their standard errors),
# and so must the mean gradient itself, weight by weight (word embeddings
# aside): the squared distance between the two sides' mean gradients over
# what their draws' variances predict for it is about 1 when the expected
# gradients are the same.
#
#   bash bench/dropout_stats.sh [--queries 16] [--draws 80]
#                               [--hidden-dropout P] [--attention-dropout P]
#
# The two rates replace config.json's on both sides (0 turns a place off), to
# find where a difference comes from: --hidden-dropout 0 leaves only the
# attention dropout, --attention-dropout 0 only the hidden-state one.
# Writes target/bench/dropout-stats.md (dropout-stats-h<P>-a<P>.md with the
# rates given). Needs .cache/bench-venv (bash bench/peer/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
QUERIES=16 DRAWS=80 RATES=() TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --queries) QUERIES=$2; shift 2 ;;
    --draws) DRAWS=$2; shift 2 ;;
    --hidden-dropout) RATES+=(--hidden-dropout "$2"); TAG="$TAG-h$2"; shift 2 ;;
    --attention-dropout) RATES+=(--attention-dropout "$2"); TAG="$TAG-a$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
VENV=.cache/bench-venv/bin/python
[ -x "$VENV" ] || { echo "the PyTorch side needs .cache/bench-venv: bash bench/peer/setup.sh" >&2; exit 1; }
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench; mkdir -p "$OUT"
GRADS="$OUT/dropout-gradients$TAG"
./target/release/cpack-bench dropout-stats --queries "$QUERIES" --draws "$DRAWS" "${RATES[@]}" \
  --batch-out "$OUT/dropout-batch.json" --json "$OUT/dropout-cpack$TAG.json" \
  --gradients "$GRADS" >/dev/null
OMP_NUM_THREADS=2 "$VENV" bench/peer/dropout_stats.py --batch "$OUT/dropout-batch.json" "${RATES[@]}" \
  --draws "$DRAWS" --json "$OUT/dropout-torch$TAG.json" --gradients "$GRADS" >/dev/null 2>&1
# The mean gradients: distance² over the variance it should have if equal.
"$VENV" - "$GRADS" > "$GRADS.json" <<'PY'
import json, sys
import numpy as np
d = sys.argv[1]
meta = json.load(open(f"{d}/names.json"))
n = meta["draws"]
def moments(prefix):
    s, q = np.fromfile(f"{d}/{prefix}sum.f64"), np.fromfile(f"{d}/{prefix}sumsq.f64")
    mean = s / n
    return mean, (q / n - mean ** 2) * n / (n - 1)
(ma, va), (mb, vb) = moments(""), moments("torch-")
expected = (va + vb) / n
ratio = float(((ma - mb) ** 2).sum() / expected.sum())
cosine = float(ma @ mb / np.sqrt((ma @ ma) * (mb @ mb)))
per, at = [], 0
for t in meta["tensors"]:
    size = int(np.prod(t["shape"]))
    sl = slice(at, at + size)
    per.append({"name": t["name"], "ratio": float(((ma[sl] - mb[sl]) ** 2).sum() / max(expected[sl].sum(), 1e-300))})
    at += size
per.sort(key=lambda r: -r["ratio"])
print(json.dumps({"draws": n, "weights": int(ma.size), "distance_over_expected": ratio,
                  "cosine_of_mean_gradients": cosine, "largest_ratios": per[:8]}))
PY
python3 - "$OUT" "$TAG" <<'PY'
import json, math, statistics as st, sys
out, tag = sys.argv[1], sys.argv[2]
a, b = (json.load(open(f"{out}/dropout-{s}{tag}.json")) for s in ("cpack", "torch"))
lines = [f"Dropout draws of one batch ({a['queries']} questions × group {a['group']}, base MiniLM): "
         f"{len(a['losses'])} draws per side, hidden-state dropout {a['hidden_dropout']:g} "
         f"(PyTorch {b['hidden_dropout']:g}), attention dropout {a['attention_dropout']:g} "
         f"(PyTorch {b['attention_dropout']:g}).", "",
         "| figure | cpack mean (sd) | PyTorch mean (sd) | difference / its standard error |", "|---|---:|---:|---:|"]
for key, name in (("losses", "loss"), ("grad_norms", "gradient norm")):
    x, y = a[key], b[key]
    se = math.sqrt(st.variance(x) / len(x) + st.variance(y) / len(y))
    lines.append(f"| {name} | {st.mean(x):.4f} ({st.stdev(x):.4f}) | {st.mean(y):.4f} ({st.stdev(y):.4f}) "
                 f"| {(st.mean(x) - st.mean(y)) / se:+.2f} |")
lines.append(f"| without dropout: loss, gradient norm | {a['no_dropout']['loss']:.6f}, {a['no_dropout']['grad_norm']:.4f} "
             f"| {b['no_dropout']['loss']:.6f}, {b['no_dropout']['grad_norm']:.4f} | |")
g = json.load(open(f"{out}/dropout-gradients{tag}.json"))
lines += ["", f"Mean gradient over the draws, {g['weights']:,} weights (word embeddings aside): "
          f"squared distance between the sides / what the draws' variances predict = {g['distance_over_expected']:.3f} "
          f"(about 1 if the expected gradients agree); cosine of the two mean gradients {g['cosine_of_mean_gradients']:.5f}. "
          "Largest per tensor: " + ", ".join(f"{r['name']} {r['ratio']:.2f}" for r in g["largest_ratios"][:4]) + "."]
open(f"{out}/dropout-stats{tag}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
