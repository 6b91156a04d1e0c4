#!/usr/bin/env bash
# Quality of the closed loop against its controls, at the quickstart's size:
# in the training workspace of scripts/quickstart.sh (InsuranceQA, [train] in
# its cpack.toml: 500 training questions, 2 epochs, passage length 128),
# runs `refresh` (the quickstart's run), `static` (--refresh-every 0) and
# `in-batch` (--group-size 1) with otherwise identical settings, then the
# same static recipe in PyTorch on the same questions and negatives
# (bench/peer/train_recipe.py, if .cache/bench-venv exists). Prints nDCG@10
# on test per epoch. Each run resumes or is skipped if already complete.
#
#   bash bench/train_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TWS="${CPACK_QUICKSTART_TRAIN_DIR:-$ROOT/.cache/train-insuranceqa}"
[ -f "$TWS/cpack.toml" ] || { echo "run bash scripts/quickstart.sh first (it makes $TWS)" >&2; exit 1; }
cargo build --release -q --workspace --bins
CPACK="$ROOT/target/release/cpack"
cd "$TWS"
run() {  # name, extra flags...
  local name=$1; shift
  if [ -f ".cpack/runs/$name/run.json" ]; then
    "$CPACK" -q train --run "$name" --resume "$@" >/dev/null
  else
    "$CPACK" -q train --run "$name" "$@" >/dev/null
  fi
}
run refresh
run static --refresh-every 0
run in-batch --group-size 1
VENV="$ROOT/.cache/bench-venv/bin/python"
if [ -x "$VENV" ] && [ ! -f .cpack/runs/static/pytorch.json ]; then
  round=$(python3 -c "import json;print(json.load(open('.cpack/runs/static/report.json'))['epochs'][0]['round'])")
  "$CPACK" mine export --round "$round" --format ids --output .cpack/runs/static/round-ids.jsonl
  OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/train_recipe.py" --run-dir .cpack/runs/static \
    --data "$ROOT/.cache/data/insuranceqa-en" \
    --round-ids .cpack/runs/static/round-ids.jsonl --threads 2 --json .cpack/runs/static/pytorch.json
fi
python3 - <<'PY'
import json, os
rows = []
for name in ["in-batch", "static", "refresh"]:
    r = json.load(open(f".cpack/runs/{name}/report.json"))
    rows.append((f"cpack {name}", r["base"]["metrics"]["ndcg_at_10"] if r.get("base") else None,
                 [e["eval"]["metrics"]["ndcg_at_10"] for e in r["epochs"]],
                 sum(e["train_seconds"] for e in r["epochs"])))
if os.path.exists(".cpack/runs/static/pytorch.json"):
    p = json.load(open(".cpack/runs/static/pytorch.json"))
    rows.append(("PyTorch static (same questions, negatives, recipe)", None,
                 [e["ndcg_at_10"] for e in p["epochs"]], sum(e["train_seconds"] for e in p["epochs"])))
print("| run | base | " + " | ".join(f"epoch {i+1}" for i in range(max(len(r[2]) for r in rows))) + " | train s |")
print("|---|---|" + "---|" * max(len(r[2]) for r in rows) + "---|")
for name, base, per_epoch, secs in rows:
    print(f"| {name} | {'' if base is None else f'{base:.4f}'} | " + " | ".join(f"{x:.4f}" for x in per_epoch) + f" | {secs:.0f} |")
PY
