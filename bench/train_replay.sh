#!/usr/bin/env bash
# Step-by-step check of cpack's training against PyTorch: `cpack train` with
# dropout off at the quickstart's recipe (InsuranceQA, 500 questions,
# 2 epochs, refresh every epoch; the training workspace of
# scripts/quickstart.sh, made here if missing), then PyTorch +
# transformers trains the same base model on exactly the batches cpack's
# steps.jsonl records, at cpack's learning rate for each step
# (bench/peer/train_recipe.py --replay). Passes when every step's loss and
# gradient norm agree within 1e-3 relative and nDCG@10 after each epoch
# within 0.001.
#
#   bash bench/train_replay.sh [--run NAME]
#
# Writes target/bench/train-replay.json and .md. Needs .cache/bench-venv
# (bash bench/peer/setup.sh; several GB, never in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RUN=replay
while [ $# -gt 0 ]; do
  case "$1" in
    --run) RUN=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
VENV="$ROOT/.cache/bench-venv/bin/python"
[ -x "$VENV" ] || { echo "the PyTorch side needs .cache/bench-venv: bash bench/peer/setup.sh" >&2; exit 1; }
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
CPACK="$ROOT/target/release/cpack"
TWS="${CPACK_QUICKSTART_TRAIN_DIR:-$ROOT/.cache/train-insuranceqa}"
bash scripts/train_workspace.sh "$TWS" >/dev/null
cd "$TWS"
if [ -f ".cpack/runs/$RUN/run.json" ]; then
  "$CPACK" train --run "$RUN" --resume --no-dropout
else
  "$CPACK" train --run "$RUN" --no-dropout
fi
mkdir -p "$ROOT/target/bench"
OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/train_recipe.py" --run-dir ".cpack/runs/$RUN" \
  --data "$ROOT/.cache/data/insuranceqa-en" --replay ".cpack/runs/$RUN/steps.jsonl" --threads 2 \
  --json "$ROOT/target/bench/train-replay-peer.json" > "$ROOT/target/bench/train-replay-steps.jsonl"
python3 - ".cpack/runs/$RUN/report.json" "$ROOT/target/bench/train-replay-peer.json" "$ROOT/target/bench/train-replay" <<'PY'
import json, sys
report, peer, stem = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
rows, ok = [], peer["max_loss_rel_diff"] <= 1e-3 and peer["max_grad_norm_rel_diff"] <= 1e-3
for mine, theirs in zip(report["epochs"], peer["epochs"]):
    a, b = mine["eval"]["metrics"]["ndcg_at_10"], theirs["ndcg_at_10"]
    ok &= abs(a - b) <= 0.001
    rows.append({"epoch": mine["epoch"], "steps": theirs["steps"], "cpack_ndcg_at_10": a,
                 "pytorch_ndcg_at_10": b, "difference": a - b})
summary = {"max_loss_rel_diff": peer["max_loss_rel_diff"],
           "max_grad_norm_rel_diff": peer["max_grad_norm_rel_diff"], "epochs": rows, "pass": bool(ok)}
json.dump(summary, open(stem + ".json", "w"), indent=2)
lines = [f"Replay of `cpack train --no-dropout` in PyTorch, same batches and rates: largest per-step "
         f"difference {peer['max_loss_rel_diff']:.1e} (loss, relative), {peer['max_grad_norm_rel_diff']:.1e} "
         f"(gradient norm before clipping, relative) — {'PASS' if ok else 'FAIL'} (limits 1e-3, 1e-3, 0.001).", "",
         "| epoch | steps | nDCG@10 cpack | nDCG@10 PyTorch | difference |", "|---|---:|---:|---:|---:|"]
lines += [f"| {r['epoch']} | {r['steps']} | {r['cpack_ndcg_at_10']:.4f} | {r['pytorch_ndcg_at_10']:.4f} | {r['difference']:+.4f} |" for r in rows]
open(stem + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if ok else 1)
PY
