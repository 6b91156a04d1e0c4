#!/usr/bin/env bash
# The test command: install what the tests need (idempotent), then run every
# test of the workspace. Tests read ../shared (fixtures, cmrc2018) and the
# MiniLM model that scripts/setup.sh unpacks into .cache/. Then the wheel is
# built and tested as a pip user gets it (scripts/test-wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace
# The wheel, installed with pip into a fresh venv, runs the main job on a slice.
bash scripts/test-wheel.sh
