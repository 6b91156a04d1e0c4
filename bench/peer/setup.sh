#!/usr/bin/env bash
# The Python stack cpack is compared with, in its own venv (.cache/bench-venv):
# torch, sentence-transformers, faiss-cpu from PyPI. Several GB; never run in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .cache/bench-venv/bin/python ] || python3 -m venv .cache/bench-venv
.cache/bench-venv/bin/pip install -q torch==2.15.0 sentence-transformers==6.2.0 faiss-cpu==1.15.1
