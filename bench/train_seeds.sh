#!/usr/bin/env bash
# Training quality against PyTorch over seeds, at the quickstart's size
# (InsuranceQA, 500 questions, 2 epochs, batch 32 × group 4, τ 0.05, lr 5e-5,
# passages at 128; the training workspace of scripts/quickstart.sh, made here
# if missing). For each seed: cpack static (--refresh-every 0), cpack refresh
# (every epoch), and the PyTorch peer of the static recipe on the same
# questions and the same mined negatives with its own draws
# (bench/peer/train_recipe.py --seed), dropout on everywhere. With --batching
# plain, cpack's runs also repeat with plain (FlagEmbedding-style) batches.
# With --no-dropout every run trains with dropout off (runs named
# static-nodrop-sN, ...; the peer follows the run's spec), which leaves each
# side's own draws as the only difference. With --train-precision bf16
# cpack's runs train on bf16 products (runs named refresh-bf16-sN, ...), to
# set beside the f32 runs of the same seeds. The kind `replay` trains PyTorch
# on exactly the batches of a seed's cpack static run, dropout on with its
# own masks (train_recipe.py --replay --replay-with-dropout): the draws are
# then the same, and what is left to differ is the dropout and the rest of
# the training.
# nDCG@10 on the 2,000 test questions after each epoch, per seed and mean;
# the PyTorch epochs are saved and scored by `cpack eval` too, so one
# evaluator scores both sides.
#
#   bash bench/train_seeds.sh [--seeds "1 2 3"] [--runs "static refresh pytorch replay"]
#                             [--batching plain] [--no-dropout] [--train-precision bf16]
#
# --runs picks which kinds this call trains (static, refresh and pytorch by
# default; the PyTorch runs of a seed need that seed's static run). Writes
# target/bench/train-seeds.json and .md (train-seeds-nodrop.* with
# --no-dropout, train-seeds-bf16.* with --train-precision bf16) over every
# run of the given seeds found; finished steps of a run (cpack epochs, the
# PyTorch training, each PyTorch epoch's evaluation) are reused, so an
# interrupted call resumes. A finished cpack run's report is kept in
# bench/results/runs/<workspace>/ (bench/kept_runs.sh; commit it), which
# outlives the session's .cache: a kept run is not trained again. CPACK_BIN runs a given binary instead of building one (to keep
# rebuilding the tree during a long call). The peer needs .cache/bench-venv
# (bash bench/peer/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3" RUNS="static refresh pytorch" EXTRA="" NODROP="" PRECISION=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --batching) EXTRA=$2; shift 2 ;;
    --no-dropout) NODROP=1; shift ;;
    --train-precision) PRECISION=${2:?--train-precision needs f32 or bf16}; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
TAG="${NODROP:+-nodrop}${PRECISION:+-$PRECISION}"
RUN_FLAGS=(${NODROP:+--no-dropout} ${PRECISION:+--train-precision "$PRECISION"})
VENV="$ROOT/.cache/bench-venv/bin/python"
source bench/quickstart_training.sh
source "$ROOT/bench/kept_runs.sh"
kept_dir
train() {  # run name, flags...
  local name=$1; shift
  kept_current "$name" && return
  keep "$name" && return
  if [ -f ".cpack/runs/$name/run.json" ]; then
    "$CPACK" train --run "$name" --resume "$@" >/dev/null
  else
    "$CPACK" train --run "$name" "$@" >/dev/null
  fi
  keep "$name"
}
wanted() { case " $RUNS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
peer() {  # seed, kind (pytorch: own draws; replay: the cpack run's batches)
  local seed=$1 kind=$2 run=".cpack/runs/static$TAG-s$1"
  local out="$run/$kind" extra=()
  if [ "$kind" = replay ]; then extra=(--replay "$run/steps.jsonl" --replay-with-dropout); fi
  [ -f "$out.json" ] && return
  if [ ! -f "$run/report.json" ]; then
    echo "PyTorch seed $seed needs the static run of that seed first (--runs static)" >&2
    return 1
  fi
  if [ ! -f "$run/round-ids.jsonl" ]; then
    round=$(python3 -c "import json;print(json.load(open('$run/report.json'))['epochs'][0]['round'])")
    "$CPACK" -q mine export --round "$round" --format ids --output "$run/round-ids.jsonl.tmp"
    mv "$run/round-ids.jsonl.tmp" "$run/round-ids.jsonl"
  fi
  if [ ! -f "$out-train.json" ]; then
    rm -rf "$out"
    OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/train_recipe.py" --run-dir "$run" \
      --data "$ROOT/.cache/data/insuranceqa-en" --round-ids "$run/round-ids.jsonl" \
      --seed "$seed" --threads 2 --save-dir "$out" --no-eval "${extra[@]}" --json "$out-train.json.tmp" >/dev/null
    mv "$out-train.json.tmp" "$out-train.json"
  fi
  # Both sides are evaluated by the same evaluator: each PyTorch epoch is
  # indexed and scored by `cpack eval` (encoder parity with
  # sentence-transformers is tested), in a scratch copy of this workspace.
  for dir in "$out"/epoch-?; do
    scratch="$dir-eval" model="$(realpath "$dir")"
    [ -f "$scratch/eval.json" ] && continue
    mkdir -p "$scratch"
    cp cpack.toml "$scratch/"
    (cd "$scratch" && "$CPACK" -q index build --model "$model" >/dev/null \
      && "$CPACK" -q eval --model "$model" --split test --json > eval.json.tmp \
      && mv eval.json.tmp eval.json)
    rm -rf "$scratch/.cpack"
  done
  python3 - "$out" <<'PY2'
import json, sys
out = sys.argv[1]
trained = json.load(open(f"{out}-train.json"))
for row in trained["epochs"]:
    row["ndcg_at_10"] = json.load(open(f"{out}/epoch-{row['epoch']}-eval/eval.json"))["metrics"]["ndcg_at_10"]
    row["evaluated_by"] = "cpack eval"
json.dump(trained, open(f"{out}.json", "w"), indent=2)
PY2
}
for seed in $SEEDS; do
  echo "seed $seed" >&2
  if wanted static; then train "static$TAG-s$seed" --seed "$seed" --refresh-every 0 "${RUN_FLAGS[@]}"; fi
  if wanted refresh; then train "refresh$TAG-s$seed" --seed "$seed" --refresh-every 1 "${RUN_FLAGS[@]}"; fi
  if [ -n "$EXTRA" ] && wanted static; then
    train "static$TAG-$EXTRA-s$seed" --seed "$seed" --refresh-every 0 --batching "$EXTRA" "${RUN_FLAGS[@]}"
  fi
  if wanted pytorch && [ -x "$VENV" ]; then peer "$seed" pytorch; fi
  if wanted replay && [ -x "$VENV" ]; then peer "$seed" replay; fi
done
mkdir -p "$ROOT/target/bench"
python3 - "$ROOT/target/bench/train-seeds$TAG" "$EXTRA" "$TAG" "$KEPT" $SEEDS <<'PY'
import json, os, statistics, sys
stem, extra, tag, kept, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
def cpack(name):
    path = f"{kept}/{name}.json"
    if not os.path.exists(path):
        return None
    return [e["eval"]["metrics"]["ndcg_at_10"] for e in json.load(open(path))["report"]["epochs"]]
def peer(seed, kind="pytorch"):
    path = f".cpack/runs/static{tag}-s{seed}/{kind}.json"
    return [e["ndcg_at_10"] for e in json.load(open(path))["epochs"]] if os.path.exists(path) else None
kind = [label for part, label in (("-nodrop", "dropout off"), ("-bf16", "bf16 products")) if part in tag]
suffix = f" ({', '.join(kind)})" if kind else ""
rows = [(f"cpack static{suffix}", lambda s: cpack(f"static{tag}-s{s}")),
        (f"cpack refresh{suffix}", lambda s: cpack(f"refresh{tag}-s{s}"))]
if extra:
    rows.append((f"cpack static, --batching {extra}", lambda s: cpack(f"static{tag}-{extra}-s{s}")))
rows.append(("PyTorch static (same questions and negatives, own draws)", peer))
rows.append(("PyTorch on cpack static's batches (own dropout masks)", lambda s: peer(s, "replay")))
summary, lines = {}, ["| run | seed | epoch 1 | epoch 2 |", "|---|---|---:|---:|"]
for label, get in rows:
    per_seed = {s: get(s) for s in seeds}
    got = {s: v for s, v in per_seed.items() if v and len(v) >= 2}  # finished runs only
    for s, v in got.items():
        lines.append(f"| {label} | {s} | {v[0]:.4f} | {v[1]:.4f} |")
    if got:
        means = [statistics.mean(v[e] for v in got.values()) for e in range(2)]
        spread = [max(v[e] for v in got.values()) - min(v[e] for v in got.values()) for e in range(2)]
        lines.append(f"| **{label}, mean (spread)** | {len(got)} seeds | **{means[0]:.4f}** ({spread[0]:.4f}) | **{means[1]:.4f}** ({spread[1]:.4f}) |")
        summary[label] = {"per_seed": got, "mean": means, "spread": spread}
json.dump(summary, open(stem + ".json", "w"), indent=2)
open(stem + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
