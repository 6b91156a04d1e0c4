#!/usr/bin/env bash
# The paper's batch-size question for its pair stage, at a 2-core machine's
# size: `cpack train --pairs` (in-batch negatives only) on InsuranceQA's
# training (question, answer) pairs — a seeded slice of --train questions,
# every answer of each one a pair — at each of --batches, the same number of
# passes (--epochs) over the same pairs, GradCache (--mini-batch 32) above 32.
# Then the checkpoint's test nDCG@10 over the slice's corpus (its --test test
# questions' answers among --passages passages), and the seconds per epoch.
# all-MiniLM-L6-v2, lr 5e-5, τ 0.05, no warm-up (with a step or two per
# epoch at the largest batch, a warm-up would spend the first one at lr 0),
# query max length 48, passage 128, no instruction (C-MTP's pairs have none).
# Per-seed values into target/bench/pair_stage.json and .md (mean ± spread).
# Finished runs are reused, so an interrupted call resumes.
#
#   bash bench/pair_stage.sh [--seeds "1 2 3"] [--batches "32 256 1024 4096"]
#                            [--train 2600] [--test 300] [--passages 3000]
#                            [--epochs 1]
#
# CPACK_BIN runs a given binary (to keep rebuilding the tree meanwhile).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3" BATCHES="32 256 1024 4096" TRAIN=2600 TEST=300 PASSAGES=3000 EPOCHS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --passages) PASSAGES=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
CPACK="${CPACK_BIN:-}"
if [ -z "$CPACK" ]; then
  cargo build --release --quiet
  CPACK="$ROOT/target/release/cpack"
fi
MODEL="$ROOT/.cache/models/all-MiniLM-L6-v2"
WORK="$ROOT/.cache/bench-pair-stage/t$TRAIN-e$TEST-p$PASSAGES"
DATA="$WORK/data" WS="$WORK/ws"
[ -f "$DATA/qrels/test.tsv" ] || python3 bench/task_slice.py "$ROOT/.cache/data/insuranceqa-en" "$DATA" \
  --passages "$PASSAGES" --train "$TRAIN" --test "$TEST" --seed 11
if [ ! -f "$WORK/pairs.jsonl" ]; then
  python3 - "$DATA" "$WORK/pairs.jsonl" <<'PY'
import json, os, sys
data, out = sys.argv[1], sys.argv[2]
load = lambda f: {str(r["id"]): r["text"] for r in map(json.loads, open(f"{data}/{f}", encoding="utf-8"))}
queries, corpus = load("queries.jsonl"), load("corpus.jsonl")
with open(f"{data}/qrels/train.tsv", encoding="utf-8") as f, open(out + ".tmp", "w", encoding="utf-8") as w:
    next(f)
    for line in f:
        q, d, _ = line.rstrip("\n").split("\t")
        w.write(json.dumps({"query": queries[q], "pos": corpus[d]}, ensure_ascii=False) + "\n")
os.rename(out + ".tmp", out)
PY
fi
if [ ! -f "$WS/cpack.toml" ]; then
  mkdir -p "$WS" && "$CPACK" init -C "$WS" --data "$DATA" --model "$MODEL" --quiet >/dev/null
fi
LENGTHS=(--query-max-len 48 --passage-max-len 128)
evaluate() {  # model folder, output json
  [ -f "$2" ] && return
  (cd "$WS" && "$CPACK" index build --model "$1" "${LENGTHS[@]}" --quiet >/dev/null &&
    "$CPACK" eval --model "$1" "${LENGTHS[@]}" --json --quiet >"$2.tmp")
  mv "$2.tmp" "$2"
}
mkdir -p "$WORK/eval"
evaluate "$MODEL" "$WORK/eval/base.json"
for seed in $SEEDS; do
  for batch in $BATCHES; do
    name="b$batch-s$seed"
    report="$WS/.cpack/runs/$name/report.json"
    if ! { [ -f "$report" ] && python3 -c "import json,sys;r=json.load(open('$report'));sys.exit(len(r['epochs'])<r['spec']['epochs'])"; }; then
      flags=(train --pairs "$WORK/pairs.jsonl" --run "$name" --epochs "$EPOCHS" --train-batch-size "$batch"
        --lr 5e-5 --temperature 0.05 --warmup-ratio 0 --seed "$seed" "${LENGTHS[@]}" --quiet)
      [ "$batch" -gt 32 ] && flags+=(--mini-batch 32)
      [ -f "$WS/.cpack/runs/$name/run.json" ] && flags+=(--resume)
      started=$SECONDS
      (cd "$WS" && "$CPACK" "${flags[@]}" >/dev/null)
      echo "pair stage: $name in $((SECONDS - started)) s" >&2
    fi
    last=$(python3 -c "import json;print(json.load(open('$report'))['epochs'][-1]['checkpoint'])")
    case "$last" in /*) ;; *) last="$WS/$last" ;; esac
    evaluate "$last" "$WORK/eval/$name.json"
  done
done
mkdir -p target/bench
python3 - "$WORK" "$SEEDS" "$BATCHES" <<'PY'
import json, os, statistics, sys
work, seeds, batches = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
ndcg = lambda path: json.load(open(path))["metrics"]["ndcg_at_10"] if os.path.exists(path) else None
base = ndcg(f"{work}/eval/base.json")
rows = {}
for batch in batches:
    row = {"ndcg_at_10": [], "seconds_per_epoch": [], "steps_per_epoch": None}
    for seed in seeds:
        path = f"{work}/ws/.cpack/runs/b{batch}-s{seed}/report.json"
        score = ndcg(f"{work}/eval/b{batch}-s{seed}.json")
        if score is None or not os.path.exists(path):
            continue
        report = json.load(open(path))
        row["ndcg_at_10"].append(score)
        row["seconds_per_epoch"] += [e["train_seconds"] for e in report["epochs"]]
        row["steps_per_epoch"] = report["epochs"][0]["optimizer_steps"]
    rows[batch] = row
pairs = sum(1 for _ in open(f"{work}/pairs.jsonl", encoding="utf-8"))
json.dump({"seeds": seeds, "pairs": pairs, "base_ndcg_at_10": base, "batches": rows},
          open("target/bench/pair_stage.json", "w"), indent=1)
def spread(values, digits=4):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
lines = [f"{pairs} pairs, base model test nDCG@10 {base:.4f}",
         "| batch | steps per epoch | test nDCG@10 (mean ± sd) | per seed | seconds per epoch (median) |",
         "|---|---|---|---|---|"]
for batch, row in rows.items():
    secs = f"{statistics.median(row['seconds_per_epoch']):.0f}" if row["seconds_per_epoch"] else "-"
    lines.append(f"| {batch} | {row['steps_per_epoch']} | {spread(row['ndcg_at_10'])} | "
                 f"{', '.join(f'{v:.4f}' for v in row['ndcg_at_10'])} | {secs} |")
open("target/bench/pair_stage.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
