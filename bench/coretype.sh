#!/usr/bin/env bash
# Does cpack's speed depend on what the system OpenBLAS thinks of the CPU?
# Runs the encode (full batches and real passages), train-step and mine
# benches with OPENBLAS_CORETYPE=Prescott (the generic SSE3 kernels an unknown
# CPU gets from Debian's OpenBLAS 0.3.21) and with OPENBLAS_CORETYPE=Haswell,
# alternated round by round, and prints them side by side with the ratio.
# cpack's products run on its own kernel (index/src/matmul.rs), so the
# ratios should be 1 within noise; the machine facts line of each run names
# the kernel and the core OpenBLAS picked.
#
#   bash bench/coretype.sh [--rounds 2] [--threads 2] [--workspace DIR]
#
# The mine bench needs a workspace with a built index (default: the
# quickstart's, .cache/quickstart-insuranceqa; built here if missing).
# Writes target/bench/coretype.json and target/bench/coretype.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ROUNDS=2 THREADS=2 WS="$ROOT/.cache/quickstart-insuranceqa"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --workspace) WS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
if [ ! -f "$WS/.cpack/index/CURRENT" ]; then
  mkdir -p "$WS"
  [ -f "$WS/cpack.toml" ] || ./target/release/cpack -C "$WS" init \
    --data "$ROOT/.cache/data/insuranceqa-en" --model "$ROOT/.cache/models/all-MiniLM-L6-v2"
  ./target/release/cpack -C "$WS" index build
fi
OUT=target/bench/coretype-runs; mkdir -p "$OUT"; rm -f "$OUT"/*.json
B=./target/release/cpack-bench
for round in $(seq "$ROUNDS"); do
  for core in Prescott Haswell; do
    export OPENBLAS_CORETYPE=$core
    $B encode --max-len 128 --threads "$THREADS" --reps 5 --json "$OUT/encode-$core-$round.json"
    $B encode --real 2000 --max-len 256 --threads "$THREADS" --reps 1 --json "$OUT/encode-real-$core-$round.json"
    $B train-step --threads "$THREADS" --reps 3 --json "$OUT/train-step-$core-$round.json" >/dev/null
    $B mine --workspace "$WS" --threads "$THREADS" --rounds 1 --json "$OUT/mine-$core-$round.json"
  done
done
unset OPENBLAS_CORETYPE
python3 - "$OUT" "$ROUNDS" <<'PY'
import datetime, json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(os.path.join(out, name)))
benches = [
    ("encode, 32 × 128 full batches", "encode", "tokens_per_second_median", "tokens/s"),
    ("encode, 2,000 real passages at 256", "encode-real", "tokens_per_second_median", "tokens/s"),
    ("train step, 16 × 32 + 32 × 128", "train-step", "tokens_per_second", "tokens/s"),
    ("mining round, 12,889 questions", "mine", "queries_per_second", "queries/s"),
    ("plain FAISS flat search (floor)", "mine", "floor_search_seconds", "s"),
]
machine = load("encode-Haswell-1.json")["machine"]
lines = [f"OPENBLAS_CORETYPE=Prescott against =Haswell, {rounds} alternated rounds, "
         f"{datetime.date.today().isoformat()} ({machine['cpu']}; cpack matmul kernel "
         f"{machine['matmul_kernel']}):", "",
         "| bench | unit | Prescott (per round) | Haswell (per round) | Prescott / Haswell (median) |",
         "|---|---|---|---|---:|"]
summary = {"machine": machine, "rounds": rounds, "benches": {}}
for label, stem, key, unit in benches:
    p = [load(f"{stem}-Prescott-{i}.json")[key] for i in range(1, rounds + 1)]
    h = [load(f"{stem}-Haswell-{i}.json")[key] for i in range(1, rounds + 1)]
    ratio = statistics.median(a / b for a, b in zip(p, h))
    cores = {c: load(f"{stem}-{c}-1.json")["machine"]["system_blas_core"] for c in ("Prescott", "Haswell")}
    summary["benches"][label] = {"prescott": p, "haswell": h, "ratio": ratio, "openblas_core": cores}
    fmt = lambda v: " · ".join(f"{x:,.2f}" if unit == "s" else f"{x:,.0f}" for x in v)
    lines.append(f"| {label} | {unit} | {fmt(p)} | {fmt(h)} | {ratio:.2f} |")
json.dump(summary, open("target/bench/coretype.json", "w"), indent=2)
open("target/bench/coretype.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
