#!/usr/bin/env bash
# `cpack rerank` against sentence-transformers' CrossEncoder.predict
# (bench/peer/rerank.py) on the same pairs at their real lengths: the
# first --queries InsuranceQA test questions, each with its answers and
# random other answers up to --per-query passages, cut at --max-len 256
# tokens (query and passage together, the longer side first), batches of
# 32, 2 threads each, alternated round by round; the ratio is the median of
# per-round ratios. The model is all-MiniLM-L6-v2 under a seeded new
# classification head (transformers' initialisation), written once by the
# peer script: both sides score the same folder, and the worst difference
# of their logits is reported (parity at the real MiniLM cross-encoder shape).
#
#   bash bench/rerank.sh [--queries 250] [--per-query 8] [--rounds 2] [--threads 2] [--bf16]
#
# The peer needs .cache/bench-venv (bash bench/peer/setup.sh). Writes
# target/bench/rerank.json. CPACK_BIN runs a given binary.
set -euo pipefail
cd "$(dirname "$0")/.."
QUERIES=250 PER_QUERY=8 ROUNDS=2 THREADS=2 BF16=0 MAX_LEN=256
while [ $# -gt 0 ]; do
  case "$1" in
    --queries) QUERIES=$2; shift 2 ;;
    --per-query) PER_QUERY=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --bf16) BF16=1; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
CPACK="${CPACK_BIN:-}"
if [ -z "$CPACK" ]; then
  cargo build --release -q --bin cpack
  CPACK=./target/release/cpack
fi
VENV=.cache/bench-venv/bin/python
[ -x "$VENV" ] || { echo "the peer needs .cache/bench-venv: bash bench/peer/setup.sh" >&2; exit 1; }
OUT=target/bench/rerank; mkdir -p "$OUT"
MODEL=.cache/models/minilm-l6-cross-encoder-seed7
[ -f "$MODEL/model.safetensors" ] || "$VENV" bench/peer/rerank.py --make-model "$MODEL" --seed 7 >/dev/null
python3 - .cache/data/insuranceqa-en "$QUERIES" "$PER_QUERY" "$OUT/pairs.jsonl" <<'PY'
import json, random, sys
data, queries, per_query, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
load = lambda f: {str(r.get("_id", r.get("id"))): r["text"] for r in map(json.loads, open(f"{data}/{f}", encoding="utf-8"))}
texts, corpus = load("queries.jsonl"), load("corpus.jsonl")
judged = {}
for line in list(open(f"{data}/qrels/test.tsv", encoding="utf-8"))[1:]:
    q, d, _ = line.rstrip("\n").split("\t")
    judged.setdefault(q, []).append(d)
rng, ids = random.Random(5), sorted(corpus)
with open(out, "w", encoding="utf-8") as w:
    for q in sorted(judged)[:queries]:
        pos = judged[q][:per_query]
        pos += rng.sample(ids, per_query - len(pos))
        w.write(json.dumps({"query": texts[q], "pos": [corpus[d] for d in pos]}, ensure_ascii=False) + "\n")
PY
for round in $(seq "$ROUNDS"); do
  RAYON_NUM_THREADS=$THREADS "$CPACK" rerank "$OUT/pairs.jsonl" -o "$OUT/cpack-scored.jsonl" --reranker "$MODEL" \
    --rerank-max-len "$MAX_LEN" --rerank-batch-size 32 --threads "$THREADS" --quiet --json > "$OUT/cpack-$round.json"
  OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/rerank.py "$OUT/pairs.jsonl" --output "$OUT/peer-scored.jsonl" \
    --model "$MODEL" --max-len "$MAX_LEN" --threads "$THREADS" > "$OUT/peer-$round.json" 2>/dev/null
  if [ "$BF16" = 1 ]; then
    OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/rerank.py "$OUT/pairs.jsonl" --output "$OUT/peer-bf16-scored.jsonl" \
      --model "$MODEL" --max-len "$MAX_LEN" --threads "$THREADS" --bf16 > "$OUT/peer-bf16-$round.json" 2>/dev/null
  fi
done
python3 - "$OUT" "$ROUNDS" "$MAX_LEN" <<'PY'
import json, os, statistics, sys
out, rounds, max_len = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda name: [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)] if os.path.exists(f"{out}/{name}-1.json") else []
cpack, peer, bf16 = load("cpack"), load("peer"), load("peer-bf16")
scores = lambda f: [s for l in open(f"{out}/{f}", encoding="utf-8") for s in json.loads(l)["pos_scores"]]
worst = max(abs(a - b) for a, b in zip(scores("cpack-scored.jsonl"), scores("peer-scored.jsonl")))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
report = {"cpu": cpu, "pairs": cpack[0]["pairs"], "max_len": int(max_len), "worst_logit_difference": worst,
          "cpack_pairs_per_second": [c["pairs_per_second"] for c in cpack]}
lines = [f"reranking {report['pairs']} InsuranceQA (question, answer) pairs, MiniLM-L6 cross-encoder, max length {max_len} ({cpu})",
         "cpack rerank: " + " · ".join(f"{c['pairs_per_second']:.1f}" for c in cpack) + " pairs/s"]
for name, runs in (("CrossEncoder.predict", peer), ("CrossEncoder.predict bf16 autocast", bf16)):
    if not runs:
        continue
    ratios = [c["pairs_per_second"] / p["pairs_per_second"] for c, p in zip(cpack, runs)]
    report[name] = {"pairs_per_second": [p["pairs_per_second"] for p in runs],
                    "cpu_capability": runs[0]["cpu_capability"], "cpack_ratio_median": statistics.median(ratios)}
    lines.append(f"{name}: " + " · ".join(f"{p['pairs_per_second']:.1f}" for p in runs)
                 + f" pairs/s (torch {runs[0]['cpu_capability']}); cpack/peer median {statistics.median(ratios):.2f}x")
lines.append(f"worst |logit difference| cpack vs sentence-transformers: {worst:.2e}")
json.dump(report, open("target/bench/rerank.json", "w"), indent=1)
print("\n".join(lines))
PY
