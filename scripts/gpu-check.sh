#!/usr/bin/env bash
# The one prepared check of cpack's CUDA build on a GPU machine.
#
# Here, on the build machine (after scripts/setup.sh and scripts/build-cuda.sh):
#   bash scripts/gpu-check.sh --prepare
# fills gpu-carry/ (git-ignored): the package dist/cpack-cuda.tar.xz,
# all-MiniLM-L6-v2 with its weights stored as f16 (the f32 file alone is over
# the 64 MiB a device call carries), InsuranceQA, and the reference
# embeddings of the sentence-transformers fixture sentences computed here on
# the CPU under those same f16-rounded weights (f32 arithmetic). It prints
# the carry's size, which must stay under 64 MiB with the working tree.
#
# On the GPU machine (device `run` with carry ["gpu-carry"], timeout 540):
#   bash scripts/gpu-check.sh
# unpacks the binary, points LD_LIBRARY_PATH at the machine's CUDA 13
# libraries (its Python's nvidia/cu13/lib), and writes $OUT/gpu-check.json
# step by step (a step that fails records its error and the rest still run):
#   parity    cpack --device cuda embeds the fixture sentences in f32 and in
#             bf16; min cosine to the CPU reference and to sentence-transformers
#             (targets: f32 ≥ 0.9999, bf16 ≥ 0.999)
#   encode    passages/s encoding the 27,413 answers in bf16 at 128 and 256
#             tokens on the GPU (batches of at most 65,536 padded tokens),
#             beside sentence-transformers on the same GPU and texts
#   search    FAISS-GPU against CPU FAISS on the same index: the mined round
#             (top 200, skip 10) of every training question from each, which
#             match only if the candidates do
#   refresh   one refresh round on the GPU: encode the corpus, index, mine
#             the 12,889 training questions, in seconds
#   train     1 epoch of `cpack train --refresh-every 1` on 2,000 training
#             questions on the GPU (batch 64 × group 8), its passages/s and
#             nDCG@10, beside PyTorch bf16's passages/s on the same shape
#   scale     exact top-200 search over 1M vectors: a corpus of the 27,413
#             answers plus 972,587 passages recombined from their sentences
#             (cut at 32 tokens: the encode is not what is measured), indexed
#             on the GPU, the 12,889 training questions mined stage by stage;
#             cpack's FAISS-GPU search q/s beside torch's matrix product +
#             top-k (fp16, the peer's method) over the same 1M vectors
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CARRY="$ROOT/gpu-carry"

prepare() {
  local pkg="$ROOT/dist/cpack-cuda.tar.xz" model="$ROOT/.cache/models/all-MiniLM-L6-v2"
  local data="$ROOT/.cache/data/insuranceqa-en"
  [ -f "$pkg" ] || { echo "gpu-check: $pkg is missing: run scripts/build-cuda.sh" >&2; exit 1; }
  [ -d "$model" ] && [ -d "$data" ] || { echo "gpu-check: run scripts/setup.sh first" >&2; exit 1; }
  rm -rf "$CARRY.tmp" && mkdir -p "$CARRY.tmp/model"
  cp "$pkg" "$CARRY.tmp/"
  find "$model" -maxdepth 1 -type f ! -name model.safetensors ! -name README.md -exec cp {} "$CARRY.tmp/model/" \;
  cp -r "$model/1_Pooling" "$CARRY.tmp/model/"
  # f16 weights, and the word embeddings of tokens that no text of the check
  # uses set to zero (they compress to nothing and cannot change a result);
  # the tokenizer from the peer's venv (bash bench/peer/setup.sh).
  "$ROOT/.cache/bench-venv/bin/python" - "$model" "$CARRY.tmp/model/model.safetensors" "$data" \
    "$ROOT/../shared/fixtures/minilm-reference/embeddings.jsonl" <<'PY'
import json, struct, sys
import numpy as np
from tokenizers import Tokenizer
model, dst, data, fixture = sys.argv[1:5]
tok = Tokenizer.from_file(f"{model}/tokenizer.json")
tok.no_truncation()  # every token of every text counts
texts = []
for line in open(f"{data}/corpus.jsonl"):
    r = json.loads(line)
    texts += [r.get("title", ""), r["text"]]
texts += [json.loads(l)["text"] for l in open(f"{data}/queries.jsonl")]
texts += [json.loads(l)["text"] for l in open(fixture)]
used = {i for enc in tok.encode_batch(texts) for i in enc.ids} | set(range(1000))
raw = open(f"{model}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
out, chunks, offset = {}, [], 0
for name, info in header.items():
    if name == "__metadata__":
        out[name] = info
        continue
    start, end = info["data_offsets"]
    dtype = info["dtype"]
    if dtype == "F32":
        values = np.frombuffer(body[start:end], dtype=np.float32).astype(np.float16)
        if name.endswith("word_embeddings.weight"):
            values = values.reshape(info["shape"]).copy()
            unused = np.setdiff1d(np.arange(values.shape[0]), np.fromiter(used, dtype=np.int64))
            values[unused] = 0
        values, dtype = values.tobytes(), "F16"
    else:  # integer buffers (position ids) as they are
        values = body[start:end]
    out[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(values)]}
    chunks.append(values)
    offset += len(values)
text = json.dumps(out).encode()
text += b" " * (-len(text) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
print(f"gpu-check: {len(used)} word embeddings kept", file=sys.stderr)
PY
  tar -C "$data/.." -cJf "$CARRY.tmp/insuranceqa-en.tar.xz" "$(basename "$data")"
  # The fixture sentences, embedded here on the CPU under the f16 weights.
  cp "$ROOT/../shared/fixtures/minilm-reference/embeddings.jsonl" "$CARRY.tmp/fixture.jsonl"
  python3 - "$ROOT/../shared/fixtures/minilm-reference/embeddings.jsonl" "$CARRY.tmp/sentences.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as f:
    for line in open(sys.argv[1]):
        f.write(json.dumps({"text": json.loads(line)["text"]}, ensure_ascii=False) + "\n")
PY
  local ws; ws=$(mktemp -d)
  "$ROOT/target/release/cpack" -q init -C "$ws" --data "$data" --model "$CARRY.tmp/model" >/dev/null
  "$ROOT/target/release/cpack" -q embed -C "$ws" --input "$CARRY.tmp/sentences.jsonl" \
    --output "$CARRY.tmp/reference.jsonl"
  tar -C "$CARRY.tmp" -cJf "$CARRY.tmp/model.tar.xz" model && rm -rf "$CARRY.tmp/model"
  rm -rf "$ws" "$CARRY" && mv "$CARRY.tmp" "$CARRY"
  local tree; tree=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 stat -c %s) | awk '{s += $1} END {print s}')
  local carry; carry=$(du -sb "$CARRY" | cut -f1)
  echo "gpu-check: gpu-carry/ $((carry / 1048576)) MiB + working tree $((tree / 1048576)) MiB (limit 64 MiB)" >&2
  [ $((carry + tree)) -le $((64 * 1048576)) ] || { echo "gpu-check: too large to carry" >&2; exit 1; }
}

# --- on the GPU machine ---------------------------------------------------
OUT="${OUT:-$ROOT/target/gpu-check}"
RESULT="$OUT/gpu-check.json"
record() {  # step, JSON value
  python3 - "$RESULT" "$1" "$2" <<'PY'
import json, os, sys
path, step, value = sys.argv[1], sys.argv[2], sys.argv[3]
doc = json.load(open(path)) if os.path.exists(path) else {}
try:
    doc[step] = json.loads(value)
except json.JSONDecodeError:
    doc[step] = {"error": value}
json.dump(doc, open(path + ".tmp", "w"), indent=2)
os.replace(path + ".tmp", path)
PY
}
step() {  # name, function: runs it, records its JSON or its error
  local name=$1; shift
  local log="$OUT/$name.log"
  if out=$("$@" 2>"$log"); then record "$name" "$out"; else record "$name" "$(tail -5 "$log")"; fi
}

setup_gpu() {
  mkdir -p "$OUT" /tmp/cpack-gpu
  tar -C /tmp/cpack-gpu -xJf "$CARRY/cpack-cuda.tar.xz"
  tar -C /tmp/cpack-gpu -xJf "$CARRY/insuranceqa-en.tar.xz"
  tar -C /tmp/cpack-gpu -xJf "$CARRY/model.tar.xz"
  local cu13; cu13=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
  export LD_LIBRARY_PATH="/tmp/cpack-gpu/lib:$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CPACK=/tmp/cpack-gpu/cpack DATA=/tmp/cpack-gpu/insuranceqa-en MODEL=/tmp/cpack-gpu/model
  WS=/tmp/cpack-gpu/ws
  rm -rf "$WS" && "$CPACK" -q init -C "$WS" --data "$DATA" --model "$MODEL" >/dev/null
  record machine "{\"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)\", \"commit\": \"$(cat /tmp/cpack-gpu/COMMIT)\", \"date\": \"$(date -u +%F)\"}"
}

parity() {
  for precision in f32 bf16; do
    "$CPACK" -q embed -C "$WS" --device cuda --encoder-precision "$precision" \
      --input "$CARRY/sentences.jsonl" --output "$OUT/gpu-embeddings-$precision.jsonl"
  done
  python3 - "$CARRY/reference.jsonl" "$OUT" "$CARRY/fixture.jsonl" <<'PY'
import json, math, sys
def rows(p): return [json.loads(l) for l in open(p)]
def cos(a, b): return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
ref, fixture = rows(sys.argv[1]), rows(sys.argv[3])
out = {}
for precision, target in [("f32", 0.9999), ("bf16", 0.999)]:
    gpu = rows(f"{sys.argv[2]}/gpu-embeddings-{precision}.jsonl")
    to_cpu = [cos(a["embedding"], b["embedding"]) for a, b in zip(gpu, ref)]
    # The fixture holds each sentence at 128 and 256 tokens; cpack embedded at 256.
    to_st = [cos(a["embedding"], f["embedding"]) for a, f in zip(gpu, fixture) if f["max_seq_length"] == 256]
    out[precision] = {"sentences": len(to_cpu), "min_cosine_to_cpu_f32": min(to_cpu),
                      "min_cosine_to_sentence_transformers": min(to_st), "target": target}
print(json.dumps(out))
PY
}

encode() {
  local rows="{}"
  for len in 128 256; do
    "$CPACK" -q index build -C "$WS" --device cuda --encoder-precision bf16 --batch-size 1024 --batch-tokens 65536 --passage-max-len "$len" --force >/dev/null
    local secs; secs=$("$CPACK" -q index info -C "$WS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["encode_seconds"])')
    local peer; peer=$(python3 - "$DATA/corpus.jsonl" "$MODEL" "$len" <<'PY'
import json, sys, time
from sentence_transformers import SentenceTransformer
texts = [(r.get("title", "") + " " + r["text"]).strip() for r in map(json.loads, open(sys.argv[1]))]
model = SentenceTransformer(sys.argv[2], device="cuda")
model.max_seq_length = int(sys.argv[3])
model.encode(texts[:512], batch_size=256)
start = time.perf_counter()
model.encode(texts, batch_size=256)
print(len(texts) / (time.perf_counter() - start))
PY
)
    rows=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['len_$len']={'cpack_passages_per_s': 27413/$secs, 'sentence_transformers_passages_per_s': $peer}; print(json.dumps(d))" "$rows")
  done
  echo "$rows"
}

search_and_refresh() {
  "$CPACK" -q index build -C "$WS" --device cuda --batch-size 1024 --batch-tokens 65536 --force >/dev/null
  local start end
  start=$(date +%s.%N)
  "$CPACK" -q index build -C "$WS" --device cuda --batch-size 1024 --batch-tokens 65536 --force >/dev/null
  "$CPACK" -q mine -C "$WS" --device cuda --index-device gpu --topk 200 --skip 10 --force >/dev/null
  end=$(date +%s.%N)
  "$CPACK" -q mine export -C "$WS" --format ids --output "$OUT/round-gpu.jsonl"
  "$CPACK" -q mine -C "$WS" --device cuda --index-device cpu --topk 200 --skip 10 --force >/dev/null
  "$CPACK" -q mine export -C "$WS" --format ids --output "$OUT/round-cpu.jsonl"
  python3 - "$OUT/round-gpu.jsonl" "$OUT/round-cpu.jsonl" "$start" "$end" <<'PY'
import json, sys
a = {r["query_id"]: r["neg"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["query_id"]: r["neg"] for r in map(json.loads, open(sys.argv[2]))}
same = sum(a[q] == b.get(q) for q in a)
print(json.dumps({"queries": len(a), "same_round_share": same / max(1, len(a)), "target": 0.999,
                  "refresh_round_seconds": float(sys.argv[4]) - float(sys.argv[3])}))
PY
}

train() {
  "$CPACK" -q train -C "$WS" --device cuda --index-device gpu --run gpu --epochs 1 --refresh-every 1 \
    --max-queries 2000 --train-batch-size 64 --group-size 8 --eval-split test --json > "$OUT/train.json"
  local peer; peer=$(python3 "$ROOT/bench/peer/train_step.py" --model "$MODEL" --corpus "$DATA/corpus.jsonl" \
    --queries 64 --passages 512 --passage-len 128 --reps 3 --device cuda --bf16 2>/dev/null | tail -1 || echo null)
  python3 - "$OUT/train.json" "$peer" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["epochs"][-1]
print(json.dumps({"ndcg_at_10": e["eval"]["metrics"]["ndcg_at_10"], "train_seconds": e["train_seconds"],
                  "cpack_passages_per_s": r["train_queries"] * 8 / e["train_seconds"],
                  "pytorch_bf16_step": json.loads(sys.argv[2]) if sys.argv[2] != "null" else None}))
PY
}

scale() {
  local data=/tmp/cpack-gpu/scale-data ws=/tmp/cpack-gpu/scale-ws
  rm -rf "$data" "$ws" && mkdir -p "$data"
  cp -r "$DATA/qrels" "$DATA/queries.jsonl" "$data/"
  python3 - "$DATA/corpus.jsonl" "$data/corpus.jsonl" "${SCALE_ROWS:-1000000}" <<'PY'
import json, random, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sentences = [s.strip() for r in rows for s in r["text"].split(". ") if s.strip()]
rng = random.Random(0)
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
    for i in range(int(sys.argv[3]) - len(rows)):
        text = ". ".join(rng.sample(sentences, 3))
        f.write(json.dumps({"id": f"synthetic-{i}", "title": "", "text": text}) + "\n")
PY
  "$CPACK" -q init -C "$ws" --data "$data" --model "$MODEL" >/dev/null
  "$CPACK" -q index build -C "$ws" --device cuda --index-device gpu --encoder-precision bf16 \
    --passage-max-len 32 --batch-size 1024 --batch-tokens 65536 >/dev/null
  "$CPACK" -q mine -C "$ws" --device cuda --index-device gpu --passage-max-len 32 --topk 200 --skip 10 \
    --no-overlap --json > "$OUT/scale-mine.json"
  local vectors; vectors=$(ls "$ws"/.cpack/index/gen-*/embeddings.* | head -1)
  python3 - "$OUT/scale-mine.json" "$vectors" <<'PY'
import json, sys, time
import numpy as np, torch
mined, path = json.load(open(sys.argv[1])), sys.argv[2]
stored = np.float16 if path.endswith(".f16") else np.float32
device = "cuda" if torch.cuda.is_available() else "cpu"
corpus = torch.from_numpy(np.fromfile(path, dtype=stored).reshape(-1, 384)).to(device).half()
queries = corpus[torch.randperm(corpus.shape[0], device=device)[:mined["queries"]]]
def search():
    for chunk in queries.split(4096):
        torch.topk(chunk @ corpus.T, 200, dim=1)
    if device == "cuda":
        torch.cuda.synchronize()
search()  # warm-up
start = time.perf_counter()
search()
peer = len(queries) / (time.perf_counter() - start)
print(json.dumps({"vectors": corpus.shape[0], "queries": len(queries),
                  "cpack_search_queries_per_s": len(queries) / mined["timings"]["search_seconds"],
                  "torch_matmul_topk_fp16_queries_per_s": peer, "target_ratio": 0.9}))
PY
}

case "${1:-}" in
  --prepare) prepare ;;
  "")
    [ -d "$CARRY" ] || { echo "gpu-check: gpu-carry/ is missing: run --prepare on the build machine and carry it" >&2; exit 1; }
    setup_gpu
    step parity parity
    step encode encode
    step search search_and_refresh
    step train train
    step scale scale
    cat "$RESULT"
    ;;
  *) echo "usage: bash scripts/gpu-check.sh [--prepare]" >&2; exit 2 ;;
esac
