#!/usr/bin/env bash
# The main job, end to end on a real dataset: set up, build cpack, then in a
# workspace for InsuranceQA (English, 27,413 answers) with all-MiniLM-L6-v2:
# init → index build → eval on the 2,000 test questions → a few searches →
# mine hard negatives for the 12,889 training questions → export and check them;
# then, in a second workspace (passage length 128, to fit a CPU session), the
# closed loop: `cpack train --refresh-every 1` on 500 training questions for
# 2 epochs (re-encode, re-index, re-mine after each), evaluated on test.
# Re-running resumes or skips what is already done. CPACK=cpack runs it with
# a cpack installed from the wheel instead of building one.
set -euo pipefail
if [ -n "${CPACK:-}" ]; then # resolved here, relative to where it was given
  found=$(command -v "$CPACK") || { echo "quickstart: CPACK=$CPACK is not a command" >&2; exit 1; }
  CPACK="$(readlink -f "$found")"
fi
cd "$(dirname "$0")/.."
ROOT="$PWD"
if [ -n "${CPACK:-}" ]; then
  # A cpack installed from the wheel (CPACK=cpack): no build tools, no build.
  CPACK_SETUP_DATA_ONLY=1 bash scripts/setup.sh
else
  bash scripts/setup.sh
  cargo build --release --bin cpack
  CPACK="$ROOT/target/release/cpack"
fi
export CPACK
WS="${CPACK_QUICKSTART_DIR:-$ROOT/.cache/quickstart-insuranceqa}"
mkdir -p "$WS"
cd "$WS"
[ -f cpack.toml ] || "$CPACK" init --data "$ROOT/.cache/data/insuranceqa-en" --model "$ROOT/.cache/models/all-MiniLM-L6-v2"
"$CPACK" index build
"$CPACK" eval --split test
for q in "Does renters insurance cover theft from my car?" \
         "How long does a life insurance claim take to pay?" \
         "Can I get Medicare if I retire at 62?"; do
  echo "== $q"
  "$CPACK" search -k 3 "$q"
done
"$CPACK" mine --topk 200 --skip 10
"$CPACK" mine stats
"$CPACK" mine export --format ids --output negatives-ids.jsonl
"$CPACK" mine export --format flag-embedding --output negatives-flag-embedding.jsonl
python3 "$ROOT/scripts/check_mined.py" --ids negatives-ids.jsonl --flag negatives-flag-embedding.jsonl \
  --qrels "$ROOT/.cache/data/insuranceqa-en/qrels" --skip 10 --topk 200

# The closed loop. [train] in cpack.toml holds the recipe; flags override it.
TWS="${CPACK_QUICKSTART_TRAIN_DIR:-$ROOT/.cache/train-insuranceqa}"
bash "$ROOT/scripts/train_workspace.sh" "$TWS"
cd "$TWS"
if [ -f .cpack/runs/refresh/run.json ]; then
  "$CPACK" train --run refresh --resume
else
  "$CPACK" train --run refresh
fi
"$CPACK" report --run refresh --html refresh.html
