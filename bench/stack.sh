#!/usr/bin/env bash
# cpack side by side with the Python stack people mine and train with today
# (sentence-transformers + faiss-cpu + PyTorch, FlagEmbedding hn_mine.py's
# mining recipe), on InsuranceQA (27,413 answers) + all-MiniLM-L6-v2, in one
# run on one machine, cpack and the peer alternated job by job (A B A B):
#
#   encode       corpus tokens/s and docs/s at max length 128 and 256, per backend
#   index        FAISS build + top-200 search per factory, on the same embeddings
#   refresh      one refresh round at passage length 128: encode the corpus,
#                build the flat index, mine the 12,889 train questions
#                (top 200, skip 10, 7 negatives), then nDCG@10 on test
#   train step   forward + backward + AdamW, 16 queries × 32 + 32 passages × 128 tokens
#   scale        synthetic unit vectors at 100k and 1M passages: build, search,
#                mining selection + store, peak RSS, per factory
#
#   bash bench/stack.sh [--rounds 2] [--threads 2] [--scale-rows 100000,1000000] [--no-peer]
#
# Writes target/bench/stack.json and target/bench/stack.md (the README's
# tables). The peer runs in .cache/bench-venv, which this script installs or
# updates with pip (bench/peer/setup.sh: torch, sentence-transformers,
# faiss-cpu; several GB, never in CI). With --no-peer, or when pip fails, the
# peer cells read "peer not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS=2 THREADS=2 SCALE_ROWS=100000,1000000 PEER_SETUP=1
FACTORIES=("Flat" "IVF1024,Flat" "HNSW32")
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --scale-rows) SCALE_ROWS=$2; shift 2 ;;
    --no-peer) PEER_SETUP=0; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
CPACK="$ROOT/target/release/cpack"
BENCH="$ROOT/target/release/cpack-bench"
VENV="$ROOT/.cache/bench-venv/bin/python"
if [ "$PEER_SETUP" = 1 ]; then
  bash bench/peer/setup.sh || echo "bench: installing the Python peer failed; running cpack only" >&2
fi
PEER=0
if [ -x "$VENV" ] && "$VENV" -c "import faiss, sentence_transformers" 2>/dev/null; then PEER=1; fi
peer() { OMP_NUM_THREADS=$THREADS "$VENV" "$@"; }
OUT="$ROOT/target/bench/stack"; rm -rf "$OUT"; mkdir -p "$OUT"
WS="$ROOT/.cache/bench-stack-insuranceqa"
if [ ! -f "$WS/cpack.toml" ]; then
  mkdir -p "$WS"
  "$CPACK" -C "$WS" init --data "$ROOT/.cache/data/insuranceqa-en" \
    --model "$ROOT/.cache/models/all-MiniLM-L6-v2" >/dev/null
  sed -i 's/^passage_max_len = .*/passage_max_len = 128/' "$WS/cpack.toml"
fi
echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $THREADS threads, peer installed: $PEER" >&2

refresh_cpack() {  # backend flags…; prints one JSON object
  local started; started=$(date +%s.%N)
  "$CPACK" -C "$WS" -q index build --force --threads "$THREADS" "$@" >/dev/null
  "$CPACK" -C "$WS" index info --json > "$OUT/.build.json"
  "$CPACK" -C "$WS" -q mine --json --threads "$THREADS" "$@" > "$OUT/.mine.json"
  local mined; mined=$(date +%s.%N)
  "$CPACK" -C "$WS" -q eval --split test --json --threads "$THREADS" "$@" > "$OUT/.eval.json"
  "$CPACK" -C "$WS" -q mine --gc --keep 1 >/dev/null
  python3 - "$OUT" "$started" "$mined" <<'PY'
import json, sys
out, started, mined = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
build = json.load(open(f"{out}/.build.json")); mine = json.load(open(f"{out}/.mine.json"))
ev = json.load(open(f"{out}/.eval.json"))
t = build["timings"]
print(json.dumps({"round_seconds": mined - started, "encode_seconds": t["encode_seconds"],
                  "index_seconds": t["index_seconds"], "mine_seconds": mine["seconds"],
                  "ndcg_at_10": ev["metrics"]["ndcg_at_10"], "train_queries": mine["queries"]}))
PY
}

for round in $(seq "$ROUNDS"); do
  echo "bench: round $round of $ROUNDS" >&2
  for len in 128 256; do
    common=(--max-len "$len" --threads "$THREADS" --batch 32 --batches 8 --reps 3)
    "$BENCH" encode "${common[@]}" --json "$OUT/encode-$len-candle-$round.json" >/dev/null
    "$BENCH" encode "${common[@]}" --backend ort --json "$OUT/encode-$len-ort-f32-$round.json" >/dev/null
    "$BENCH" encode "${common[@]}" --backend ort --precision int8 --json "$OUT/encode-$len-ort-int8-$round.json" >/dev/null
    [ "$PEER" = 0 ] || peer bench/peer/encode.py "${common[@]}" --json "$OUT/encode-$len-pytorch-$round.json" >/dev/null 2>&1
  done
  "$BENCH" train-step --threads "$THREADS" --reps 3 --json "$OUT/train-cpack-$round.json" >/dev/null 2>&1
  [ "$PEER" = 0 ] || peer bench/peer/train_step.py --threads "$THREADS" --reps 3 --json "$OUT/train-pytorch-$round.json" >/dev/null 2>&1
  refresh_cpack --encoder ort --encoder-precision int8 > "$OUT/refresh-ort-int8-$round.json"
  [ "$PEER" = 0 ] || peer bench/peer/stack.py refresh --threads "$THREADS" > "$OUT/refresh-pytorch-$round.json" 2>/dev/null
  refresh_cpack > "$OUT/refresh-candle-$round.json"  # last: the live index is candle's
  # Mining on its own, next to its floor (one plain FAISS search), on the live index.
  "$BENCH" mine --workspace "$WS" --threads "$THREADS" --rounds 1 --json "$OUT/mine-cpack-$round.json" >/dev/null
  # The index rows use the live index's embeddings (candle f32, length 128).
  gen=$(cat "$WS/.cpack/index/CURRENT")
  for f in "${FACTORIES[@]}"; do
    tag=${f//,/_}
    "$BENCH" scale-case 0 "$f" "$THREADS" "$WS/.cpack/index/$gen/embeddings.f32" > "$OUT/index-$tag-cpack-$round.json"
    [ "$PEER" = 0 ] || peer bench/peer/stack.py index --factory "$f" --threads "$THREADS" \
      --embeddings "$WS/.cpack/index/$gen/embeddings.f32" > "$OUT/index-$tag-pytorch-$round.json"
  done
done

for rows in ${SCALE_ROWS//,/ }; do
  for f in "${FACTORIES[@]}"; do
    tag=${f//,/_}
    echo "bench: scale $rows × $f" >&2
    "$BENCH" scale-case "$rows" "$f" "$THREADS" > "$OUT/scale-$rows-$tag-cpack.json"
    [ "$PEER" = 0 ] || peer bench/peer/stack.py index --factory "$f" --threads "$THREADS" \
      --synthetic "$rows" > "$OUT/scale-$rows-$tag-pytorch.json"
  done
done

python3 bench/stack_report.py "$OUT" "$THREADS" "$ROUNDS" "$SCALE_ROWS" "${FACTORIES[@]}"
