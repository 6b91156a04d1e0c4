#!/usr/bin/env bash
# A cross-encoder teacher in the loop, against full refresh, at the
# quickstart's recipe (InsuranceQA, 500 training questions, 2 epochs, batch
# 32 × group 4, τ 0.05, lr 5e-5, passages at 128; scripts/train_workspace.sh)
# with the given seeds. Rows:
#
#   refresh          --refresh-every 1 (today's default; its kept runs are train_seeds.sh's too)
#   refresh-denoise  refresh, each round denoised by the teacher (--denoise:
#                    candidates it scores above the question's positive go)
#   refresh-distill  refresh, KL from the teacher's group softmax added (--distill kl)
#   refresh-both     refresh, denoised and distilled
#   static-distill   the base model's round throughout, distilled
#
# The teacher is a MiniLM-L6 cross-encoder trained by `cpack rerank train`
# from all-MiniLM-L6-v2 on the 2,001 questions of the dev split (never the
# students' training questions) and a round mined for them by the base
# model: 2 epochs of batch 8 × group 4, pairs at 128 tokens, lr 1e-4 (the
# recipe of bench/rerank_train.sh). It scores pairs at 128 tokens, a pool of
# 16 per question; a teacher's run mines only its 500 questions.
#
#   bash bench/teacher.sh [--seeds "1 2 3"] [--rows "refresh refresh-distill ..."]
#
# Another dataset, the same commands (here InsuranceQA's Chinese translation,
# which scripts/setup.sh makes beside the English):
#   CPACK_QUICKSTART_TRAIN_DIR=.cache/train-insuranceqa-zh \
#   CPACK_QUICKSTART_TRAIN_DATA=$PWD/.cache/data/insuranceqa-zh bash bench/teacher.sh
#
# For each row: nDCG@10 on the test questions after each epoch (mean and
# spread over the seeds) and where a run's time went (training, encoding,
# mining, the teacher's scoring, evaluating). Writes
# target/bench/teacher.{json,md} (teacher-<workspace>.* for another
# workspace). CPACK_BIN runs a given binary.
#
# Each finished run's report is kept in bench/results/runs/<workspace>/
# (bench/kept_runs.sh; commit it) with the teacher's checksum: a run whose
# kept report names this teacher (or, for refresh, none) is not run again,
# and an interrupted run resumes from its last checkpoint in .cache. The
# teacher is trained only when a row needs it (`--rows refresh` does not).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SEEDS="1 2 3"
ROWS="refresh refresh-denoise refresh-distill refresh-both static-distill"
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
source bench/quickstart_training.sh
TEACHER="$TWS/.cpack/rerankers/teacher-dev/epoch-2"
TAUGHT_ROWS=$(for row in $ROWS; do [ "$row" = refresh ] || echo "$row"; done)
if [ -n "$TAUGHT_ROWS" ] && [ ! -f "$TEACHER/model.safetensors" ]; then
  # The teacher's pairs (and the rounds' scoring) at 128 tokens.
  grep -q '^max_len = 128' cpack.toml || sed -i 's/^\[rerank\]$/[rerank]\nmax_len = 128/' cpack.toml
  "$CPACK" -q index build >/dev/null
  round=$("$CPACK" -q mine --split dev --negatives 3 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["round"])')
  "$CPACK" -q rerank train --run teacher-dev --round "$round" --split dev --epochs 2 \
    --train-batch-size 8 --group-size 4 --max-len 128 --lr 1e-4 --eval-split none --json >/dev/null
fi
TEACHER_SHA=""
[ -z "$TAUGHT_ROWS" ] || TEACHER_SHA=$(sha256sum "$TEACHER/model.safetensors" | cut -c1-16)
source "$ROOT/bench/kept_runs.sh"
kept_dir
if [ -n "$TAUGHT_ROWS" ]; then
  # What the teacher cost to train, kept beside the runs it taught.
  python3 - "$TEACHER/../report.json" "$KEPT/teacher-train.json" "$TEACHER_SHA" "$("$CPACK" --version)" "$(basename "$CPACK")" <<'PY'
import json, os, sys
report, out, sha, version, binary = sys.argv[1:]
kept = {"teacher_sha256": sha, "cpack": version.splitlines(), "binary": binary, "report": json.load(open(report))}
json.dump(kept, open(out + ".part", "w"), indent=1)
os.replace(out + ".part", out)
PY
fi
flags() {  # row → its flags
  local teach=(--teacher "$TEACHER")
  case "$1" in
    refresh) echo "--refresh-every 1" ;;
    refresh-denoise) echo "--refresh-every 1 ${teach[*]} --denoise" ;;
    refresh-distill) echo "--refresh-every 1 ${teach[*]} --distill kl" ;;
    refresh-both) echo "--refresh-every 1 ${teach[*]} --denoise --distill kl" ;;
    static-distill) echo "--refresh-every 0 ${teach[*]} --distill kl" ;;
    *) echo "unknown row $1" >&2; return 1 ;;
  esac
}
teacher_of() { [ "$1" = refresh ] || echo "$TEACHER_SHA"; }  # row → the teacher its runs use
keep_round_stats() {  # run → its rounds' `mine stats` (the teacher's scores, what denoising dropped), kept
  [ -f "$KEPT/$1.rounds.json" ] || python3 - "$CPACK" "$KEPT/$1.json" "$KEPT/$1.rounds.json" <<'PY'
import json, os, subprocess, sys
cpack, kept, out = sys.argv[1:]
stats = {}
for epoch in json.load(open(kept))["report"]["epochs"]:
    described = subprocess.run([cpack, "-q", "mine", "stats", "--round", str(epoch["round"]), "--json"],
                               capture_output=True, text=True)
    if described.returncode != 0:  # a store that no longer holds the round: nothing to keep
        sys.exit(print(f"{kept}: round {epoch['round']}: {described.stderr.strip()}", file=sys.stderr))
    stats[f"epoch {epoch['epoch']}"] = json.loads(described.stdout)
json.dump(stats, open(out + ".part", "w"), indent=1)
os.replace(out + ".part", out)
PY
}
# Seed by seed, so that an interrupted call leaves every row at its first seeds.
for seed in $SEEDS; do
  for row in $ROWS; do
    name="$row-s$seed"
    if kept_current "$name" "$(teacher_of "$row")" || keep "$name" "$(teacher_of "$row")"; then
      keep_round_stats "$name"
      continue
    fi
    echo "$name" >&2
    read -r -a extra <<< "$(flags "$row")"
    if [ -f ".cpack/runs/$name/run.json" ]; then
      "$CPACK" -q train --run "$name" --resume >/dev/null
    else
      "$CPACK" -q train --run "$name" --seed "$seed" "${extra[@]}" >/dev/null
    fi
    keep "$name" "$(teacher_of "$row")"
    keep_round_stats "$name"
  done
done
# How good a teacher it is (after the runs: reranking 2,000 × 20 pairs is
# slow on a CPU): the base model's test top 20, reranked by it.
if [ -n "$TAUGHT_ROWS" ] && ! python3 -c "import json,sys; sys.exit(json.load(open('$KEPT/teacher-eval.json'))['teacher_sha256'] != '$TEACHER_SHA')" 2>/dev/null; then
  "$CPACK" -q index build >/dev/null
  base=$("$CPACK" -q eval --json)
  taught=$("$CPACK" -q eval --reranker "$TEACHER" --rerank-depth 20 --json)
  python3 - "$KEPT/teacher-eval.json" "$TEACHER_SHA" "$base" "$taught" <<'PY'
import json, os, sys
out, sha, base, taught = sys.argv[1:]
json.dump({"teacher_sha256": sha, "base": json.loads(base), "top20_reranked": json.loads(taught)},
          open(out + ".part", "w"), indent=1)
os.replace(out + ".part", out)
PY
fi
mkdir -p "$ROOT/target/bench"
stem="$ROOT/target/bench/teacher"
[ "$TWS" = "$ROOT/.cache/train-insuranceqa" ] || stem="$stem-$(basename "$TWS")"
python3 - "$stem" "$ROWS" "$KEPT" $SEEDS <<'PY'
import json, os, statistics, sys
stem, rows, kept, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4:]
keys = ["train_seconds", "encode_seconds", "mine_seconds", "teacher_seconds"]
lines = ["| row | seeds | nDCG@10 epoch 1 | epoch 2 | train s | encode s | mine s | teacher s | eval s |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
summary = {}
for row in rows:
    reports = []
    for s in seeds:
        path = f"{kept}/{row}-s{s}.json"
        if os.path.exists(path):
            reports.append(json.load(open(path))["report"])
    if not reports:
        continue
    ndcg = [[e["eval"]["metrics"]["ndcg_at_10"] for e in r["epochs"]] for r in reports]
    mean = [statistics.mean(v[e] for v in ndcg) for e in range(2)]
    spread = [max(v[e] for v in ndcg) - min(v[e] for v in ndcg) for e in range(2)]
    cost = {k: statistics.mean(sum(e.get(k, 0.0) for e in r["epochs"]) for r in reports) for k in keys}
    cost["eval_seconds"] = statistics.mean(sum(e["eval"]["seconds"] for e in r["epochs"]) for r in reports)
    summary[row] = {"seeds": len(reports), "ndcg_per_seed": ndcg, "mean": mean, "spread": spread, **cost}
    lines.append(f"| {row} | {len(reports)} | {mean[0]:.4f} ({spread[0]:.4f}) | {mean[1]:.4f} ({spread[1]:.4f}) | "
                 + " | ".join(f"{cost[k]:.0f}" for k in keys + ["eval_seconds"]) + " |")
if os.path.exists(f"{kept}/teacher-eval.json"):
    teacher = json.load(open(f"{kept}/teacher-eval.json"))
    base, taught = (teacher[k]["metrics"]["ndcg_at_10"] for k in ("base", "top20_reranked"))
    summary["teacher"] = {"base_ndcg_at_10": base, "base_top20_reranked_ndcg_at_10": taught}
    lines.append(f"\nthe teacher: test nDCG@10 of the base model {base:.4f}; its top 20 reranked by the teacher {taught:.4f}")
if os.path.exists(f"{kept}/teacher-train.json"):
    trained = json.load(open(f"{kept}/teacher-train.json"))["report"]["epochs"]
    seconds = sum(e["train_seconds"] for e in trained)
    summary.setdefault("teacher", {})["train_seconds"] = seconds
    lines.append(f"the teacher trained in {seconds:.0f} s ({len(trained)} epochs), once for every row and seed")
json.dump(summary, open(stem + ".json", "w"), indent=2)
open(stem + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
