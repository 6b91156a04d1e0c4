#!/usr/bin/env bash
# The paper's task-specific stage at a 2-core machine's size: three tasks —
# InsuranceQA English, InsuranceQA Chinese (the same PyPI package's other
# half) and cmrc2018 (../shared/data) — each a seeded slice of --passages
# passages holding --train training and --test test questions with their
# answers (bench/task_slice.py). all-MiniLM-L6-v2, 2 epochs, refreshed every
# epoch (each task re-encoded and re-mined in its own corpus), batch 16 ×
# group 4, τ 0.05, lr 5e-5. For each seed:
#   a  one run over the three tasks, each with its own instruction
#   b  the same run with no instruction anywhere
#   c  one run per task (cpack train --task T), with its instruction
# Test nDCG@10 of every task after the last epoch (and the base model's, with
# and without instructions) into target/bench/tasks.json and .md, mean and
# spread over seeds. Finished runs are reused, so an interrupted call resumes.
#
#   bash bench/tasks.sh [--seeds "1 2 3"] [--configs "a b c"] [--passages 800]
#                       [--train 200] [--test 200]
#
# CPACK_BIN runs a given binary (to keep rebuilding the tree meanwhile).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3" CONFIGS="a b c" PASSAGES=800 TRAIN=200 TEST=200
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --passages) PASSAGES=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
CPACK="${CPACK_BIN:-}"
if [ -z "$CPACK" ]; then
  cargo build --release --quiet
  CPACK="$ROOT/target/release/cpack"
fi
WORK="$ROOT/.cache/bench-tasks/p$PASSAGES-t$TRAIN-e$TEST"
DATA="$WORK/data"
if [ ! -f "$ROOT/.cache/data/insuranceqa-zh/qrels/test.tsv" ]; then
  tmp=$(mktemp -d)
  tar -xzf "$(ls "$ROOT"/.cache/downloads/insuranceqa_data-1.0.tar.gz)" -C "$tmp"
  python3 scripts/insuranceqa_to_beir.py "$tmp/insuranceqa_data-1.0/insuranceqa_data" \
    "$ROOT/.cache/data/insuranceqa-zh" --lang zh
  rm -rf "$tmp"
fi
slice() {  # source, task, seed
  [ -f "$DATA/$2/qrels/test.tsv" ] || python3 bench/task_slice.py "$1" "$DATA/$2" \
    --passages "$PASSAGES" --train "$TRAIN" --test "$TEST" --seed "$3"
}
slice "$ROOT/.cache/data/insuranceqa-en" insurance-en 7
slice "$ROOT/.cache/data/insuranceqa-zh" insurance-zh 8
slice "$ROOT/../shared/data/cmrc2018" cmrc 9
TASKS="insurance-en insurance-zh cmrc"
instruction() {  # task
  case "$1" in
    insurance-en) echo "Represent this sentence for searching relevant passages: " ;;
    insurance-zh) echo "为这个保险问题检索相关的回答：" ;;
    cmrc) echo "为这个句子生成表示以用于检索相关文章：" ;;
  esac
}
workspace() {  # folder, with instructions (yes/no)
  mkdir -p "$1"
  {
    printf 'seed = 7\n\n[model]\npath = "%s"\n' "$ROOT/.cache/models/all-MiniLM-L6-v2"
    for task in $TASKS; do
      local text=""
      [ "$2" = yes ] && text=$(instruction "$task")
      printf '\n[[task]]\nname = "%s"\ndata = "%s"\nquery_instruction = "%s"\n' "$task" "$DATA/$task" "$text"
    done
  } >"$1/cpack.toml"
}
workspace "$WORK/with" yes
workspace "$WORK/without" no
RECIPE=(--epochs 2 --refresh-every 1 --group-size 4 --train-batch-size 16 --topk 50 --skip 3
  --lr 5e-5 --temperature 0.05 --passage-max-len 128 --query-max-len 48 --eval-split test --quiet)
train() {  # workspace, run name, flags...
  local ws=$1 name=$2; shift 2
  local report="$ws/.cpack/runs/$name/report.json"
  if [ -f "$report" ] && python3 -c "import json,sys;r=json.load(open('$report'));sys.exit(len(r['epochs'])<r['spec']['epochs'])"; then
    return
  fi
  local started=$SECONDS
  if [ -f "$ws/.cpack/runs/$name/run.json" ]; then
    (cd "$ws" && "$CPACK" train --run "$name" --resume "${RECIPE[@]}" "$@" >/dev/null)
  else
    (cd "$ws" && "$CPACK" train --run "$name" "${RECIPE[@]}" "$@" >/dev/null)
  fi
  echo "tasks: $(basename "$ws")/$name in $((SECONDS - started)) s" >&2
}
wanted() { case " $CONFIGS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for seed in $SEEDS; do
  wanted a && train "$WORK/with" "a-s$seed" --seed "$seed"
  wanted b && train "$WORK/without" "b-s$seed" --seed "$seed"
  if wanted c; then
    for task in $TASKS; do
      train "$WORK/with" "c-$task-s$seed" --seed "$seed" --task "$task"
    done
  fi
done
mkdir -p target/bench
python3 - "$WORK" "$SEEDS" "$TASKS" <<'PY'
import json, os, statistics, sys
work, seeds, tasks = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def report(ws, run):
    path = os.path.join(work, ws, ".cpack/runs", run, "report.json")
    return json.load(open(path)) if os.path.exists(path) else None
def ndcg(point):
    return point["metrics"]["ndcg_at_10"] if point else None
rows = {}
for task in tasks:
    row = {}
    for seed in seeds:
        a, b = report("with", f"a-s{seed}"), report("without", f"b-s{seed}")
        c = report("with", f"c-{task}-s{seed}")
        for key, r in (("a", a), ("b", b), ("c", c)):
            if r and r["epochs"]:
                row.setdefault(key, []).append(ndcg(r["epochs"][-1]["tasks"][task]["eval"]))
        for key, r in (("base-a", a), ("base-b", b)):
            if r and key not in row:
                row[key] = [ndcg(r["tasks"][task]["base"])]
    rows[task] = row
json.dump({"seeds": seeds, "ndcg_at_10": rows}, open("target/bench/tasks.json", "w"), indent=1)
def cell(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({', '.join(f'{v:.3f}' for v in values)})"
lines = ["| task | base, instructions | base, none | (a) tasks, own instructions | (b) tasks, no instructions | (c) one run per task |",
         "|---|---|---|---|---|---|"]
for task, row in rows.items():
    lines.append(f"| {task} | {cell(row.get('base-a'))} | {cell(row.get('base-b'))} | {cell(row.get('a'))} | {cell(row.get('b'))} | {cell(row.get('c'))} |")
means = {}
for key in ("base-a", "base-b", "a", "b", "c"):
    per_seed = [statistics.mean(v) for v in zip(*(rows[t].get(key, []) for t in tasks))] if all(rows[t].get(key) for t in tasks) else []
    means[key] = per_seed
lines.append(f"| mean | {cell(means['base-a'])} | {cell(means['base-b'])} | {cell(means['a'])} | {cell(means['b'])} | {cell(means['c'])} |")
open("target/bench/tasks.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
