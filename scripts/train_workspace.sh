#!/usr/bin/env bash
# Makes (once) the quickstart's training workspace: InsuranceQA with
# all-MiniLM-L6-v2, passages cut at 128 tokens to fit a CPU session, and the
# recipe in [train]: 500 training questions, 2 epochs, refresh every epoch,
# batch 32 × group 4, τ 0.05, lr 5e-5, evaluated on test. The quickstart and
# the training benches share it.
#
#   bash scripts/train_workspace.sh DIR [DATA]
#
# DATA is the BEIR folder (default: InsuranceQA English).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TWS="$1"
DATA="${2:-$ROOT/.cache/data/insuranceqa-en}"
CPACK="${CPACK:-$ROOT/target/release/cpack}"
mkdir -p "$TWS"
cd "$TWS"
[ -f cpack.toml ] && exit 0
"$CPACK" init --data "$DATA" --model "$ROOT/.cache/models/all-MiniLM-L6-v2"
sed -i 's/^passage_max_len = .*/passage_max_len = 128/; /^\[train\]/,$d' cpack.toml
cat >> cpack.toml <<'TOML'
[train]
epochs = 2
refresh_every = 1
max_queries = 500
batch_size = 32
group_size = 4
temperature = 0.05
lr = 5e-5
eval_split = "test"
TOML
