#!/usr/bin/env bash
# Encoder backends side by side, in one run on one machine: corpus encoding
# tokens/s at max length 128 (batches of 32 full-length InsuranceQA answers)
# for candle f32, ONNX Runtime f32, ONNX Runtime int8 and PyTorch +
# sentence-transformers, alternated round by round because these machines are
# noisy; then InsuranceQA test nDCG@10 (27,413 answers, 2,000 questions,
# passages cut at 128 tokens) with the f32 and int8 ORT encoders.
#
#   bash bench/onnx.sh [--rounds 3] [--threads 2] [--skip-quality]
#
# Writes target/bench/onnx.json and target/bench/onnx.md. The PyTorch side
# needs .cache/bench-venv (bash bench/peer/setup.sh; several GB, never in CI);
# without it that row reads "peer not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS=3 THREADS=2 QUALITY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --skip-quality) QUALITY=0; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
OUT=target/bench/onnx-runs; mkdir -p "$OUT"; rm -f "$OUT"/*.json
VENV=.cache/bench-venv/bin/python
common=(--max-len 128 --threads "$THREADS" --batch 32 --batches 8 --reps 3)
for round in $(seq "$ROUNDS"); do
  ./target/release/cpack-bench encode "${common[@]}" --json "$OUT/candle-f32-$round.json"
  ./target/release/cpack-bench encode "${common[@]}" --backend ort --json "$OUT/ort-f32-$round.json"
  ./target/release/cpack-bench encode "${common[@]}" --backend ort --precision int8 --json "$OUT/ort-int8-$round.json"
  if [ -x "$VENV" ]; then
    OMP_NUM_THREADS=$THREADS "$VENV" bench/peer/encode.py "${common[@]}" --json "$OUT/pytorch-$round.json"
  fi
done

if [ "$QUALITY" = 1 ]; then
  for precision in f32 int8; do
    ws="$ROOT/.cache/bench-onnx-insuranceqa/$precision"
    mkdir -p "$ws"
    [ -f "$ws/cpack.toml" ] || ./target/release/cpack -C "$ws" init \
      --data "$ROOT/.cache/data/insuranceqa-en" --model "$ROOT/.cache/models/all-MiniLM-L6-v2" >/dev/null
    flags=(--encoder ort --encoder-precision "$precision" --passage-max-len 128 --threads "$THREADS")
    ./target/release/cpack -C "$ws" -q index build --force "${flags[@]}" >/dev/null
    ./target/release/cpack -C "$ws" index info --json > "$OUT/build-$precision.json"
    ./target/release/cpack -C "$ws" -q eval --split test --json "${flags[@]}" > "$OUT/quality-$precision.json"
  done
fi

python3 - "$OUT" "$ROUNDS" "$THREADS" <<'PY'
import json, os, statistics, sys, platform, datetime
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None
rows = [("candle f32", "candle-f32"), ("ort f32", "ort-f32"), ("ort int8", "ort-int8"),
        ("pytorch + sentence-transformers", "pytorch")]
rates = {key: [r["tokens_per_second_median"] for i in range(1, rounds + 1)
               if (r := load(f"{key}-{i}.json"))] for _, key in rows}
cpu = (load("candle-f32-1.json") or {}).get("machine", {}).get("cpu", platform.processor())
summary = {"date": datetime.date.today().isoformat(), "cpu": cpu, "threads": int(threads),
           "rounds": rounds, "max_len": 128, "batch": 32, "encode": {}, "quality": {}}
lines = [f"Encode, InsuranceQA answers at max length 128, batches of 32, {threads} threads, "
         f"{rounds} alternated rounds ({cpu}, {summary['date']}):", "",
         "| encoder | tokens/s (median of rounds) | × PyTorch (median of per-round ratios) |",
         "|---|---:|---:|"]
for label, key in rows:
    r = rates[key]
    if not r:
        lines.append(f"| {label} | peer not installed (.cache/bench-venv; bash bench/peer/setup.sh) | |")
        continue
    ratio = ""
    if rates["pytorch"] and key != "pytorch":
        ratio = statistics.median(a / b for a, b in zip(r, rates["pytorch"]))
        summary["encode"][key + "_vs_pytorch"] = round(ratio, 3)
        ratio = f"{ratio:.2f}"
    summary["encode"][key] = {"tokens_per_second": r, "median": statistics.median(r)}
    lines.append(f"| {label} | {statistics.median(r):,.0f} | {ratio} |")
quality = {p: load(f"quality-{p}.json") for p in ("f32", "int8")}
if all(quality.values()):
    lines += ["", "InsuranceQA test (2,000 questions over 27,413 answers), all-MiniLM-L6-v2 through ONNX Runtime:", "",
              "| encoder | nDCG@10 | MRR@10 | Recall@100 | corpus encode s |", "|---|---:|---:|---:|---:|"]
    for p, q in quality.items():
        m = q["metrics"]
        build = load(f"build-{p}.json") or {}
        secs = (build.get("manifest", build).get("timings") or {}).get("encode_seconds", float("nan"))
        summary["quality"][p] = {"ndcg_at_10": m["ndcg_at_10"], "mrr_at_10": m["mrr_at_10"],
                                 "recall_at_100": m["recall_at_100"], "encode_seconds": secs}
        lines.append(f"| ort {p} | {m['ndcg_at_10']:.4f} | {m['mrr_at_10']:.4f} | {m['recall_at_100']:.4f} | {secs:.0f} |")
    d = quality["f32"]["metrics"]["ndcg_at_10"] - quality["int8"]["metrics"]["ndcg_at_10"]
    summary["quality"]["ndcg_at_10_drop"] = round(d, 4)
    lines.append(f"\nint8 nDCG@10 drop: {d:.4f}")
json.dump(summary, open("target/bench/onnx.json", "w"), indent=2)
open("target/bench/onnx.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
