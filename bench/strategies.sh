#!/usr/bin/env bash
# Negative strategies against today's recipe, at the quickstart's size
# (InsuranceQA, 500 questions, 2 epochs, batch 32 × group 4, τ 0.05, lr 5e-5,
# passages at 128; the workspace of scripts/train_workspace.sh), each with
# the given seeds. Rows:
#
#   in-batch     --group-size 1 (no mined negatives)
#   static       --refresh-every 0 (the base model's round throughout)
#   refresh      --refresh-every 1 (today's default: full re-encode and re-mine)
#   incremental  refresh re-encoding only the training queries' top-200 pool
#                and positives (--refresh incremental); evaluation encodes
#                its own index, counted apart as "eval encode s"
#   incremental-topK  incremental, re-encoding only the top K ranks of
#                each question's pool and the positives (--refresh-depth K;
#                rows incremental-top12 and incremental-top50)
#   incremental-topK-aligned  the same, the passages left out mapped into
#                the new checkpoint's space (--stale-vectors aligned; rows
#                for K = 4, 12, 16)
#   simans       refresh, negatives drawn by SimANS (--sample simans)
#   perc-pos     refresh, TopK-PercPos filter (--filter perc-pos)
#   margin-pos   refresh, TopK-MarginPos filter (--filter margin-pos)
#   clustered    refresh, topic-clustered batches (--batching clustered)
#   query-side   refresh with --freeze-passages (ADORE: only queries train,
#                the base index is searched again, never re-encoded)
#   replace-easy static, negatives scored 0.3 below the positive retired
#                for the rest of a pool of 12 (--replace-easy 0.3)
#   teacher      static on a round a stronger model mined (--negatives-from):
#                the teacher is refresh seed 1's final checkpoint, which
#                mines once in a workspace of its own (TWS-teacher); the
#                student starts from the base model as every other row
#
#   bash bench/strategies.sh [--seeds "1 2 3"] [--strategies "static refresh ..."]
#
# For each strategy: nDCG@10 on the 2,000 test questions after each epoch
# (mean and spread over the seeds), and where the time went, summed over a
# run and averaged over the seeds: training, encoding the corpus, indexing,
# mining, evaluating. Every epoch of every strategy but query-side
# re-encodes the corpus for its evaluation (and a refresh reuses that
# encoding); "corpus encodes" counts them per run. Finished runs are reused
# (the static and refresh runs of bench/train_seeds.sh too: same names, same
# flags), so an interrupted call resumes. Writes target/bench/strategies.{json,md}.
# CPACK_BIN runs a given binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3"
STRATEGIES="in-batch static refresh incremental incremental-top12 incremental-top50 incremental-top4-aligned incremental-top12-aligned incremental-top16-aligned simans perc-pos margin-pos clustered query-side replace-easy teacher"
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --strategies) STRATEGIES=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
source bench/quickstart_training.sh
flags() {  # strategy → its flags
  case "$1" in
    in-batch) echo "--group-size 1 --refresh-every 0" ;;
    static) echo "--refresh-every 0" ;;
    refresh) echo "--refresh-every 1" ;;
    incremental) echo "--refresh-every 1 --refresh incremental" ;;
    incremental-top*-aligned) local depth=${1#incremental-top}
      echo "--refresh-every 1 --refresh incremental --refresh-depth ${depth%-aligned} --stale-vectors aligned" ;;
    incremental-top*) echo "--refresh-every 1 --refresh incremental --refresh-depth ${1#incremental-top}" ;;
    simans) echo "--refresh-every 1 --sample simans" ;;
    perc-pos) echo "--refresh-every 1 --filter perc-pos" ;;
    margin-pos) echo "--refresh-every 1 --filter margin-pos" ;;
    clustered) echo "--refresh-every 1 --batching clustered" ;;
    query-side) echo "--refresh-every 1 --freeze-passages" ;;
    replace-easy) echo "--refresh-every 0 --replace-easy 0.3" ;;
    teacher) echo "--refresh-every 0 --negatives-from $(teacher_round)" ;;
    *) echo "unknown strategy $1" >&2; return 1 ;;
  esac
}
finished() {  # run name
  [ -f ".cpack/runs/$1/report.json" ] && python3 -c "import json,sys;r=json.load(open('.cpack/runs/$1/report.json'));sys.exit(len(r['epochs'])<r['spec']['epochs'])"
}
run() {  # strategy seed: trains (or resumes) one run in the current workspace
  local name="$1-s$2" extra
  finished "$name" && return
  read -r -a extra <<< "$(flags "$1")"
  echo "$name" >&2
  if [ -f ".cpack/runs/$name/run.json" ]; then
    "$CPACK" -q train --run "$name" --resume >/dev/null
  else
    "$CPACK" -q train --run "$name" --seed "$2" "${extra[@]}" >/dev/null
  fi
}
TEACHER_WS="$TWS-teacher"
teacher_round() {  # mines the teacher's round once, in its own workspace; prints its number
  if [ ! -f "$TEACHER_WS/teacher-round" ]; then
    (cd "$TWS" && run refresh 1)
    local teacher="$TWS/.cpack/runs/refresh-s1/epoch-2"
    # 3 negatives per question: the recipe's group of 4 less the positive,
    # as the students' own rounds would hold.
    bash "$ROOT/scripts/train_workspace.sh" "$TEACHER_WS" >/dev/null
    (cd "$TEACHER_WS" && "$CPACK" -q index build --model "$teacher" >/dev/null &&
      "$CPACK" -q mine --model "$teacher" --negatives 3 --json) |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["round"])' > "$TEACHER_WS/teacher-round.tmp"
    mv "$TEACHER_WS/teacher-round.tmp" "$TEACHER_WS/teacher-round"
  fi
  cat "$TEACHER_WS/teacher-round"
}
for strategy in $STRATEGIES; do
  for seed in $SEEDS; do
    if [ "$strategy" = teacher ]; then
      teacher_round >/dev/null  # makes TEACHER_WS before run enters it
      (cd "$TEACHER_WS" && run teacher "$seed")
    else
      run "$strategy" "$seed"
    fi
  done
done
mkdir -p "$ROOT/target/bench"
python3 - "$ROOT/target/bench/strategies" "$TEACHER_WS" "$STRATEGIES" $SEEDS <<'PY'
import json, os, statistics, sys
stem, teacher_ws, strategies, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
lines = ["| strategy | seeds | nDCG@10 epoch 1 | epoch 2 | train s | encode s | passages encoded | index s | mine s | eval s | eval encode s | corpus encodes |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
summary = {}
for strategy in strategies:
    reports = []
    for s in seeds:
        runs = os.path.join(teacher_ws, ".cpack/runs") if strategy == "teacher" else ".cpack/runs"
        path = f"{runs}/{strategy}-s{s}/report.json"
        if os.path.exists(path):
            r = json.load(open(path))
            if len(r["epochs"]) >= 2:
                reports.append((s, r))
    if not reports:
        continue
    ndcg = [[e["eval"]["metrics"]["ndcg_at_10"] for e in r["epochs"]] for _, r in reports]
    mean = [statistics.mean(v[e] for v in ndcg) for e in range(2)]
    spread = [max(v[e] for v in ndcg) - min(v[e] for v in ndcg) for e in range(2)]
    def seconds(key):
        return statistics.mean(sum(e[key] for e in r["epochs"]) for _, r in reports)
    def seconds_or_zero(key):
        return statistics.mean(sum(e.get(key, 0.0) for e in r["epochs"]) for _, r in reports)
    def eval_seconds():
        return statistics.mean(sum(e["eval"]["seconds"] for e in r["epochs"]) for _, r in reports)
    encodes = statistics.mean(sum(e["encode_seconds"] > 0 for e in r["epochs"]) for _, r in reports)
    encoded = statistics.mean(sum(e.get("passages_encoded", 0) for e in r["epochs"]) for _, r in reports)
    row = {"seeds": [s for s, _ in reports], "ndcg_per_seed": ndcg, "mean": mean, "spread": spread,
           "train_seconds": seconds("train_seconds"), "encode_seconds": seconds("encode_seconds"),
           "index_seconds": seconds("index_seconds"), "mine_seconds": seconds("mine_seconds"),
           "eval_seconds": eval_seconds(), "corpus_encodes": encodes,
           "passages_encoded": encoded, "eval_encode_seconds": seconds_or_zero("eval_encode_seconds")}
    fits = [e["alignment"] for _, r in reports for e in r["epochs"] if (e.get("alignment") or {}).get("cosine_kept")]
    if fits:  # --stale-vectors aligned: held-out cosine of kept and mapped vectors to the new ones
        row["alignment_cosine"] = {k: statistics.mean(f[k] for f in fits) for k in ("cosine_kept", "cosine_aligned")}
    summary[strategy] = row
    lines.append(f"| {strategy} | {len(reports)} | {mean[0]:.4f} ({spread[0]:.4f}) | {mean[1]:.4f} ({spread[1]:.4f}) "
                 f"| {row['train_seconds']:.0f} | {row['encode_seconds']:.0f} | {encoded:.0f} | {row['index_seconds']:.1f} "
                 f"| {row['mine_seconds']:.0f} | {row['eval_seconds']:.0f} | {row['eval_encode_seconds']:.0f} | {encodes:g} |")
json.dump(summary, open(stem + ".json", "w"), indent=2)
open(stem + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
