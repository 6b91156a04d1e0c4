#!/usr/bin/env bash
# `cpack filter` against the same filter written with sentence-transformers
# (bench/peer/filter.py), on real pairs: InsuranceQA's training (question,
# answer) pairs, the first --pairs of them, MiniLM, --min-score 0.43 (C-MTP's
# threshold), chunks of 4,096 pairs, both sides at max length 256 for
# passages, same threads. Alternated round by round; the ratio is the median
# of per-round ratios. Also reports how many pairs each side kept and how
# many decisions differ (pairs whose cosine sits at the threshold).
#
#   bash bench/filter.sh [--pairs 20000] [--rounds 2] [--threads 2] [--bf16]
#
# --bf16 adds the peer under torch.autocast("cpu", bfloat16), its best setting
# on CPUs with AMX or AVX-512 BF16. The peer needs .cache/bench-venv (bash
# bench/peer/setup.sh); without it only cpack runs. Writes target/bench/filter.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=20000 ROUNDS=2 THREADS=2 BF16=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --bf16) BF16=1; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --bin cpack
OUT=target/bench/filter; mkdir -p "$OUT"
DATA=.cache/data/insuranceqa-en MODEL=.cache/models/all-MiniLM-L6-v2
python3 - "$DATA" "$PAIRS" "$OUT/pairs.jsonl" <<'PY'
import json, sys
data, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda f: {r.get("_id", r.get("id")): r["text"] for r in map(json.loads, open(f"{data}/{f}", encoding="utf-8"))}
queries, corpus = load("queries.jsonl"), load("corpus.jsonl")
with open(f"{data}/qrels/train.tsv", encoding="utf-8") as f, open(out, "w", encoding="utf-8") as w:
    rows = [l.rstrip("\n").split("\t") for l in f][1:]
    for q, d, *_ in rows[:limit]:
        w.write(json.dumps({"query": queries[q], "pos": corpus[d]}, ensure_ascii=False) + "\n")
PY
VENV=.cache/bench-venv/bin/python
for round in $(seq "$ROUNDS"); do
  rm -f "$OUT"/cpack-kept.jsonl
  RAYON_NUM_THREADS=$THREADS ./target/release/cpack filter "$OUT/pairs.jsonl" -o "$OUT/cpack-kept.jsonl" \
    --model "$MODEL" --min-score 0.43 --threads "$THREADS" --quiet --json > "$OUT/cpack-$round.json"
  if [ -x "$VENV" ]; then
    OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/filter.py "$OUT/pairs.jsonl" --output "$OUT/peer-kept.jsonl" \
      --model "$MODEL" --min-score 0.43 --threads "$THREADS" > "$OUT/peer-$round.json" 2>/dev/null
    if [ "$BF16" = 1 ]; then
      OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/filter.py "$OUT/pairs.jsonl" --output "$OUT/peer-bf16-kept.jsonl" \
        --model "$MODEL" --min-score 0.43 --threads "$THREADS" --bf16 > "$OUT/peer-bf16-$round.json" 2>/dev/null
    fi
  fi
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
load = lambda name: [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)] if os.path.exists(f"{out}/{name}-1.json") else []
cpack, peer, bf16 = load("cpack"), load("peer"), load("peer-bf16")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
report = {"cpu": cpu, "pairs": cpack[0]["pairs"], "cpack_pairs_per_second": [c["pairs_per_second"] for c in cpack],
          "cpack_kept": cpack[0]["kept"]}
lines = [f"cpack filter, {report['pairs']} InsuranceQA training pairs, MiniLM, min score 0.43 ({cpu})",
         "cpack: " + " · ".join(f"{c['pairs_per_second']:.1f}" for c in cpack) + f" pairs/s, kept {cpack[0]['kept']}"]
for name, runs in (("sentence-transformers", peer), ("sentence-transformers bf16 autocast", bf16)):
    if not runs:
        continue
    ratios = [c["pairs_per_second"] / p["pairs_per_second"] for c, p in zip(cpack, runs)]
    report[name] = {"pairs_per_second": [p["pairs_per_second"] for p in runs], "kept": runs[0]["kept"],
                    "cpu_capability": runs[0]["cpu_capability"], "cpack_ratio_median": statistics.median(ratios)}
    lines.append(f"{name}: " + " · ".join(f"{p['pairs_per_second']:.1f}" for p in runs)
                 + f" pairs/s, kept {runs[0]['kept']} (torch {runs[0]['cpu_capability']}); cpack/peer median {statistics.median(ratios):.2f}x")
if peer:
    mine = set(open(f"{out}/cpack-kept.jsonl", encoding="utf-8"))
    theirs = set(open(f"{out}/peer-kept.jsonl", encoding="utf-8"))
    report["decisions_differing"] = len(mine ^ theirs)
    lines.append(f"lines kept by one side only: {len(mine ^ theirs)}")
json.dump(report, open("target/bench/filter.json", "w"), indent=1)
print("\n".join(lines))
PY
