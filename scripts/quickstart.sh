#!/usr/bin/env bash
# The main job, end to end on a real dataset: set up, build cpack, then in a
# workspace for InsuranceQA (English, 27,413 answers) with all-MiniLM-L6-v2:
# init → index build → eval on the 2,000 test questions → a few searches.
# Re-running resumes or skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin cpack
CPACK="$PWD/target/release/cpack"
WS="${CPACK_QUICKSTART_DIR:-$PWD/.cache/quickstart-insuranceqa}"
mkdir -p "$WS"
cd "$WS"
[ -f cpack.toml ] || "$CPACK" init --data "$OLDPWD/.cache/data/insuranceqa-en" --model "$OLDPWD/.cache/models/all-MiniLM-L6-v2"
"$CPACK" index build
"$CPACK" eval --split test
for q in "Does renters insurance cover theft from my car?" \
         "How long does a life insurance claim take to pay?" \
         "Can I get Medicare if I retire at 62?"; do
  echo "== $q"
  "$CPACK" search -k 3 "$q"
done
