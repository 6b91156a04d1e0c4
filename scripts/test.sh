#!/usr/bin/env bash
# The test command: install what the tests need (idempotent), then run every
# test of the workspace. Tests read ../shared (fixtures, cmrc2018) and the
# MiniLM model that scripts/setup.sh unpacks into .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace
