#!/usr/bin/env bash
# `cpack serve` under load on loopback: the quickstart's InsuranceQA workspace
# (all-MiniLM-L6-v2, 27,413 passages, Flat index; built here if missing),
# its 2,000 test questions as single-query POST /search (k 10) from 8
# concurrent clients and then from 1, beside the same queries through
# `cpack search`'s in-process path (encode + search, one query at a time).
# Bounded: at most --requests requests and --seconds per phase.
#
#   bash bench/serve.sh [--requests 400] [--clients 8] [--seconds 60]
#
# Prints requests/s and p50/p99 latency; writes target/bench/serve-load.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
bash scripts/setup.sh >/dev/null
cargo build --release -q --workspace --bins
WS="${CPACK_QUICKSTART_DIR:-$ROOT/.cache/quickstart-insuranceqa}"
mkdir -p "$WS"
if [ ! -f "$WS/cpack.toml" ]; then
  (cd "$WS" && "$ROOT/target/release/cpack" init --data "$ROOT/.cache/data/insuranceqa-en" \
    --model "$ROOT/.cache/models/all-MiniLM-L6-v2")
fi
(cd "$WS" && "$ROOT/target/release/cpack" index build)
mkdir -p target/bench
./target/release/cpack-bench serve-load --workspace "$WS" --json target/bench/serve-load.json "$@" >/dev/null
