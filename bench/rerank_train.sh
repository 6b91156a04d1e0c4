#!/usr/bin/env bash
# Reranker training, cpack against a PyTorch peer (bench/peer/rerank_train.py).
#
# 1. The trace: `cpack rerank train` from a MiniLM cross-encoder (the head
#    bench/rerank.sh draws, so both sides start from the same weights), no
#    dropout, no warm-up, 3 steps of 8 queries × group 4 at 128 tokens; the
#    peer replays the run's steps.jsonl and compares each step's loss and
#    gradient norm (before clipping) with cpack's; then sentence-transformers'
#    CrossEncoder loads the trained checkpoint and scores 32 pairs, beside
#    `cpack rerank`'s scores of them.
# 2. Quality: a seeded slice of InsuranceQA (--passages passages holding
#    --train training and --test test questions with their answers;
#    bench/task_slice.py), all-MiniLM-L6-v2 as the embedder (index, one
#    mined round: top 100, skip 3, 7 negatives), then per seed a reranker
#    trained from all-MiniLM-L6-v2 under a new head by each side on that
#    round — --epochs epochs of batch --batch × group --group, pairs cut at
#    --max-len tokens, lr --lr, 10 % warm-up, dropout on — and both
#    evaluated by the same code: `cpack
#    eval --reranker` over the embedder's top --depth hits. Test nDCG@10 /
#    MRR@10 before and after reranking, and each side's training seconds,
#    into target/bench/rerank_train.json and .md.
# 3. Matched (per --matched-seeds): the sides above draw their own heads and
#    batches from a seed, and those draws move nDCG@10 by more than the
#    implementations could. Here cpack trains from the MiniLM cross-encoder
#    of 1. (one head for both) at the same recipe with dropout on, and the
#    peer replays that run's batches at its rates (--replay), drawing only
#    its own dropout masks; the paired per-seed differences measure the
#    implementations alone. A second replay by the peer with other dropout
#    masks (seed + 1000) is the control: how far the peer is from itself.
#    With --no-dropout (every section) nothing is drawn but the batches, and
#    the matched sides must end at the same reranker.
#
#   bash bench/rerank_train.sh [--seeds "1 2 3"] [--passages 3000] [--train 500]
#                              [--test 200] [--depth 20] [--epochs 2] [--batch 8]
#                              [--group 4] [--max-len 128] [--lr 1e-4] [--trace-only]
#                              [--matched-seeds "1 2 3"]  (default: --seeds; "" skips)
#                              [--no-dropout]
#
# The defaults are what a 2-core machine affords in about 25 minutes a seed
# for both sides; at one epoch of batch 16 × group 8 and lr 2e-5 (32 steps)
# neither side's reranker moved off its initial loss (ln 8).
#
# CPACK_BIN runs a given binary. The peer needs .cache/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3" MATCHED_SEEDS=unset PASSAGES=3000 TRAIN=500 TEST=200 DEPTH=20 TRACE_ONLY=0
EPOCHS=2 BATCH=8 GROUP=4 MAX_LEN=128 LR=1e-4 DROPOUT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --matched-seeds) MATCHED_SEEDS=$2; shift 2 ;;
    --passages) PASSAGES=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --depth) DEPTH=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --group) GROUP=$2; shift 2 ;;
    --max-len) MAX_LEN=$2; shift 2 ;;
    --lr) LR=$2; shift 2 ;;
    --trace-only) TRACE_ONLY=1; shift ;;
    --no-dropout) DROPOUT=(--no-dropout); shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
[ "$MATCHED_SEEDS" = unset ] && MATCHED_SEEDS=$SEEDS
bash scripts/setup.sh >/dev/null
CPACK="${CPACK_BIN:-}"
if [ -z "$CPACK" ]; then
  cargo build --release --quiet
  CPACK="$ROOT/target/release/cpack"
fi
VENV="$ROOT/.cache/bench-venv/bin/python"
[ -x "$VENV" ] || { echo "the peer needs .cache/bench-venv: bash bench/peer/setup.sh" >&2; exit 1; }
MINILM="$ROOT/.cache/models/all-MiniLM-L6-v2"
CROSS="$ROOT/.cache/models/minilm-l6-cross-encoder-seed7"
[ -f "$CROSS/model.safetensors" ] || "$VENV" bench/peer/rerank.py --make-model "$CROSS" --seed 7 >/dev/null
WORK="$ROOT/.cache/bench-rerank-train/p$PASSAGES-t$TRAIN-e$TEST"
DATA="$WORK/data" WS="$WORK/ws"
[ -f "$DATA/qrels/test.tsv" ] || python3 bench/task_slice.py "$ROOT/.cache/data/insuranceqa-en" "$DATA" \
  --passages "$PASSAGES" --train "$TRAIN" --test "$TEST" --seed 13
if [ ! -f "$WS/cpack.toml" ]; then
  mkdir -p "$WS" && "$CPACK" init -C "$WS" --data "$DATA" --model "$MINILM" --quiet >/dev/null
fi
cd "$WS"
LENGTHS=(--query-max-len 64 --passage-max-len 256)
"$CPACK" index build "${LENGTHS[@]}" --quiet
# One round, mined once: a later call trains on the same.
"$CPACK" mine export --format ids -o /dev/null --quiet 2>/dev/null \
  || "$CPACK" mine "${LENGTHS[@]}" --topk 100 --skip 3 --negatives 7 --quiet >/dev/null
mkdir -p "$WORK/out"

# 1. The trace.
rm -rf .cpack/rerankers/trace
"$CPACK" rerank train --run trace --from "$CROSS" --no-dropout --warmup-ratio 0 --max-queries 24 \
  --train-batch-size 8 --group-size 4 --max-len 128 --eval-split none --quiet --json >/dev/null
OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/rerank_train.py" --run-dir .cpack/rerankers/trace --data "$DATA" \
  --replay --threads 2 2>/dev/null | tee "$WORK/out/trace.jsonl" | tail -1
# The trained checkpoint in sentence-transformers: CrossEncoder(path) must
# score what `cpack rerank` scores.
python3 - "$DATA" "$WORK/out/check-pairs.jsonl" <<'PY'
import json, sys
data, out = sys.argv[1], sys.argv[2]
queries = [json.loads(l)["text"] for l in open(f"{data}/queries.jsonl", encoding="utf-8")][:8]
passages = [json.loads(l)["text"] for l in open(f"{data}/corpus.jsonl", encoding="utf-8")][:4]
with open(out, "w", encoding="utf-8") as f:
    for q in queries:
        f.write(json.dumps({"query": q, "pos": passages}, ensure_ascii=False) + "\n")
PY
"$CPACK" rerank "$WORK/out/check-pairs.jsonl" --reranker .cpack/rerankers/trace/epoch-1 --rerank-max-len 128 \
  -o "$WORK/out/check-cpack.jsonl" --quiet
OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/rerank.py" "$WORK/out/check-pairs.jsonl" --model .cpack/rerankers/trace/epoch-1 \
  --max-len 128 --output "$WORK/out/check-peer.jsonl" >/dev/null 2>&1
python3 - "$WORK/out" <<'PY' | tee "$WORK/out/check.json"
import json, sys
out = sys.argv[1]
scores = lambda f: [s for l in open(f"{out}/{f}", encoding="utf-8") for s in json.loads(l)["pos_scores"]]
a, b = scores("check-cpack.jsonl"), scores("check-peer.jsonl")
print(json.dumps({"pairs": len(a), "worst_difference_cpack_vs_crossencoder": max(abs(x - y) for x, y in zip(a, b))}))
PY
[ "$TRACE_ONLY" = 1 ] && exit 0

# 2. Quality.
"$CPACK" mine export --format ids -o "$WORK/out/round.jsonl" --quiet
evaluate() {  # reranker folder → eval JSON
  "$CPACK" eval "${LENGTHS[@]}" --reranker "$1" --rerank-depth "$DEPTH" --rerank-max-len "$MAX_LEN" --json --quiet
}
"$CPACK" eval "${LENGTHS[@]}" --json --quiet > "$WORK/out/base.json"
RECIPE="e$EPOCHS-b$BATCH-g$GROUP-l$MAX_LEN-lr$LR${DROPOUT:+-nodrop}"
OUT="$WORK/out/$RECIPE"
mkdir -p "$OUT"
train_cpack() {  # run, starting model, seed, output stem → trained and evaluated
  rm -rf ".cpack/rerankers/$1"
  "$CPACK" rerank train --run "$1" --from "$2" --seed "$3" --epochs "$EPOCHS" --train-batch-size "$BATCH" \
    --group-size "$GROUP" --max-len "$MAX_LEN" --lr "$LR" --max-queries "$TRAIN" "${DROPOUT[@]}" --eval-split none --quiet --json \
    > "$OUT/$4-train-s$3.json"
  evaluate ".cpack/rerankers/$1/epoch-$EPOCHS" > "$OUT/$4-s$3.json"
}
train_peer() {  # run, the peer's seed, output name, seed label, peer flags... → trained and evaluated
  local run=$1 seed=$2 name=$3 label=$4; shift 4
  OMP_NUM_THREADS=2 "$VENV" "$ROOT/bench/peer/rerank_train.py" --run-dir ".cpack/rerankers/$run" --data "$DATA" \
    --save-dir "$OUT/$name-s$label" --seed "$seed" --threads 2 "$@" 2>/dev/null > "$OUT/$name-train-s$label.jsonl"
  evaluate "$OUT/$name-s$label/epoch-$EPOCHS" > "$OUT/$name-s$label.json"
}
for seed in $SEEDS; do
  run="quality-$RECIPE-s$seed"
  [ -f "$OUT/cpack-s$seed.json" ] || train_cpack "$run" "$MINILM" "$seed" cpack
  if [ ! -f "$OUT/peer-s$seed.json" ]; then
    started=$SECONDS
    train_peer "$run" "$seed" peer "$seed" --round-ids "$WORK/out/round.jsonl"
    echo "{\"seconds\": $((SECONDS - started))}" > "$OUT/peer-time-s$seed.json"
  fi
done

# 3. Matched: one head, cpack's batches on both sides.
for seed in $MATCHED_SEEDS; do
  run="matched-$RECIPE-s$seed"
  [ -f "$OUT/matched-cpack-s$seed.json" ] || train_cpack "$run" "$CROSS" "$seed" matched-cpack
  [ -f "$OUT/matched-peer-s$seed.json" ] || train_peer "$run" "$seed" matched-peer "$seed" --replay
  # Without dropout the peer's replay has nothing of its own to draw: no control.
  if [ -z "${DROPOUT[*]}" ] && [ ! -f "$OUT/matched-control-s$seed.json" ]; then
    train_peer "$run" "$((seed + 1000))" matched-control "$seed" --replay
  fi
done
cd "$ROOT"
mkdir -p target/bench
python3 - "$OUT" "$SEEDS" "$DEPTH" "$RECIPE" "$MATCHED_SEEDS" <<'PY'
import json, os, statistics, sys
out, seeds, depth, recipe, matched_seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5].split()
load = lambda name: json.load(open(f"{out}/{name}"))
metric = lambda e, k: e["metrics"][k]
base = load("../base.json")
rows = {"cpack": {"ndcg": [], "mrr": [], "seconds": []}, "pytorch": {"ndcg": [], "mrr": [], "seconds": []}}
for s in seeds:
    c, p = load(f"cpack-s{s}.json"), load(f"peer-s{s}.json")
    rows["cpack"]["ndcg"].append(metric(c, "ndcg_at_10")); rows["cpack"]["mrr"].append(metric(c, "mrr_at_10"))
    rows["pytorch"]["ndcg"].append(metric(p, "ndcg_at_10")); rows["pytorch"]["mrr"].append(metric(p, "mrr_at_10"))
    rows["cpack"]["seconds"].append(sum(e["train_seconds"] for e in load(f"cpack-train-s{s}.json")["epochs"]))
    rows["pytorch"]["seconds"].append(load(f"peer-time-s{s}.json")["seconds"])
matched = {"seeds": matched_seeds, "cpack": [], "pytorch": [], "pytorch_again": [], "difference": [], "control": []}
for s in matched_seeds:
    c, p = (metric(load(f"matched-{side}-s{s}.json"), "ndcg_at_10") for side in ("cpack", "peer"))
    matched["cpack"].append(c); matched["pytorch"].append(p); matched["difference"].append(c - p)
    if os.path.exists(f"{out}/matched-control-s{s}.json"):
        p2 = metric(load(f"matched-control-s{s}.json"), "ndcg_at_10")
        matched["pytorch_again"].append(p2); matched["control"].append(p2 - p)
trace = [json.loads(l) for l in open(f"{out}/../trace.jsonl")][-1]
check = json.load(open(f"{out}/../check.json"))
json.dump({"recipe": recipe, "seeds": seeds, "depth": int(depth), "base": base["metrics"], "rows": rows, "matched": matched,
           "trace": trace, "check": check},
          open("target/bench/rerank_train.json", "w"), indent=1)
cell = lambda v: f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
lines = [f"trace: worst relative loss difference {trace['max_loss_rel_diff']:.1e}, gradient norm {trace['max_grad_norm_rel_diff']:.1e} over {trace['steps']} steps",
         f"the trained checkpoint in CrossEncoder: worst score difference {check['worst_difference_cpack_vs_crossencoder']:.1e} over {check['pairs']} pairs",
         f"| reranker (top {depth} reranked) | test nDCG@10 | test MRR@10 | training seconds (median) |", "|---|---|---|---|",
         f"| none (all-MiniLM-L6-v2 retrieval) | {metric(base, 'ndcg_at_10'):.4f} | {metric(base, 'mrr_at_10'):.4f} | |"]
for name, r in rows.items():
    if r["ndcg"]:
        lines.append(f"| {name} | {cell(r['ndcg'])} | {cell(r['mrr'])} | {statistics.median(r['seconds']):.0f} |")
if matched_seeds:
    per_seed = lambda v: " · ".join(f"{x:.4f}" for x in v)
    lines += ["", f"matched (one head, cpack's batches replayed by the peer; seeds {' '.join(matched_seeds)}): test nDCG@10",
              f"| cpack | {cell(matched['cpack'])} | {per_seed(matched['cpack'])} |",
              f"| PyTorch replay | {cell(matched['pytorch'])} | {per_seed(matched['pytorch'])} |",
              f"| cpack − PyTorch | {cell(matched['difference'])} | {per_seed(matched['difference'])} |"]
    if matched["control"]:
        lines += [f"| PyTorch replay, other dropout masks | {cell(matched['pytorch_again'])} | {per_seed(matched['pytorch_again'])} |",
                  f"| PyTorch − PyTorch (control) | {cell(matched['control'])} | {per_seed(matched['control'])} |"]
open("target/bench/rerank_train.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
