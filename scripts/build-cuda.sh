#!/usr/bin/env bash
# Builds cpack with the `cuda` feature (candle on CUDA, FAISS-GPU) on a
# machine without a GPU or an installed CUDA, and packs what the GPU machine
# needs besides its own CUDA libraries into dist/cpack-cuda.tar.xz.
#
#   bash scripts/build-cuda.sh
#
# 1. A CUDA 13.0 toolkit from NVIDIA's PyPI wheels (nvcc pinned to 13.0: the
#    GPU machine's driver is CUDA 13.0 and cannot JIT newer PTX), unpacked
#    under $CPACK_CUDA_CACHE (default ~/.cache/cpack-cuda, outside git), with
#    a link-time stub of libcuda (no wheel ships it; the driver's real one is
#    used at run time). Done once; later calls reuse it.
# 2. `cargo build --release --features cuda --bin cpack` into target/cuda
#    (FAISS-GPU compiles from source: the first build takes about half an
#    hour on 2 cores; cargo caches it).
# 3. dist/cpack-cuda.tar.xz: the binary and the BLAS/LAPACK/Fortran runtime
#    libraries it links, which the GPU machine may lack. CUDA's own libraries
#    (cuBLAS alone is 540 MB) come from the GPU machine's Python `nvidia`
#    packages: scripts/gpu-check.sh points LD_LIBRARY_PATH at them.
#
# Not part of CI. Idempotent: every step is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${CPACK_CUDA_CACHE:-$HOME/.cache/cpack-cuda}"
TOOLKIT="$CACHE/toolkit-13.0"
CUDA="$TOOLKIT/nvidia/cu13"
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-profiler-api==13.0.85 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
)
say() { echo "build-cuda: $*" >&2; }

toolkit() {
  [ -x "$CUDA/bin/nvcc" ] && [ -f "$CUDA/lib/stubs/libcuda.so" ] && return
  mkdir -p "$CACHE/wheels"
  say "fetching the CUDA 13.0 toolkit wheels from PyPI into $CACHE/wheels"
  python3 -m pip download --quiet --no-deps --dest "$CACHE/wheels" "${WHEELS[@]}"
  rm -rf "$TOOLKIT.tmp" && mkdir -p "$TOOLKIT.tmp"
  for wheel in "$CACHE"/wheels/nvidia_*.whl; do
    python3 - "$wheel" "$TOOLKIT.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("nvidia/"):
            z.extract(name, sys.argv[2])
PY
  done
  local cu="$TOOLKIT.tmp/nvidia/cu13"
  chmod +x "$cu"/bin/* "$cu"/nvvm/bin/* 2>/dev/null || true
  ln -sfn lib "$cu/lib64"
  for lib in cublas cublasLt cudart curand nvrtc; do
    local versioned; versioned=$(ls "$cu"/lib/lib$lib.so.* 2>/dev/null | head -1)
    [ -n "$versioned" ] && ln -sfn "$(basename "$versioned")" "$cu/lib/lib$lib.so"
  done
  libcuda_stub "$cu"
  mv "$TOOLKIT.tmp" "$TOOLKIT"
}

# The driver API's functions as empty symbols, so that the link succeeds;
# names come from the preprocessed cuda.h (its macros map cuFoo to cuFoo_v2).
libcuda_stub() {
  local cu=$1 src="$CACHE/libcuda-stub.c"
  mkdir -p "$cu/lib/stubs"
  gcc -E -P -I "$cu/include" "$cu/include/cuda.h" \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
    | sed 's/.*/void &(void) {}/' > "$src"
  gcc -shared -fPIC -o "$cu/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$src"
  ln -sfn libcuda.so "$cu/lib/stubs/libcuda.so.1"
}

build() {
  export CUDA_PATH="$CUDA" CUDA_HOME="$CUDA" CUDA_ROOT="$CUDA" CUDAToolkit_ROOT="$CUDA"
  export PATH="$CUDA/bin:$PATH"
  export LIBRARY_PATH="$CUDA/lib:$CUDA/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$CUDA/lib:$CUDA/lib/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # candle asks nvidia-smi for the compute capability otherwise; the H200 is 9.0.
  export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
  # FAISS's kernels as sm_90 machine code only (no PTX copy beside it, which
  # CUDAARCHS=90 adds: the H200 runs sm_90 code as it is), compressed for
  # size: the package must fit a device call's carry. candle's kernels are
  # PTX by design (loaded at run time).
  export CUDAARCHS=90-real CUDAFLAGS="--compress-mode=size" CUDACXX="$CUDA/bin/nvcc"
  # Whole-program LTO drops the Rust code cpack never reaches — candle's
  # quantized (GGUF) matmuls and mixture-of-experts ops — and with it every
  # reference into candle-kernels' static libmoe.a, so the linker leaves out
  # its machine code, otherwise half of the binary's CUDA code.
  export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_INCREMENTAL=false
  say "cargo build --release --features cuda (target/cuda)"
  cargo build --release --features cuda --bin cpack --target-dir "$ROOT/target/cuda"
}

package() {
  local bin="$ROOT/target/cuda/release/cpack" stage="$ROOT/target/cuda/dist"
  rm -rf "$stage" && mkdir -p "$stage/lib" "$ROOT/dist"
  cp "$bin" "$stage/cpack"
  # Symbols are most of an unstripped binary's size; the carry is small.
  strip "$stage/cpack"
  # Everything it links outside glibc, the C++ runtime and CUDA itself.
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
      libcuda.so*|libcublas*|libcudart*|libcurand*|libnvrtc*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
  git -C "$ROOT" rev-parse HEAD > "$stage/COMMIT"
  tar -C "$stage" -cJf "$ROOT/dist/cpack-cuda.tar.xz.tmp" .
  mv "$ROOT/dist/cpack-cuda.tar.xz.tmp" "$ROOT/dist/cpack-cuda.tar.xz"
  local mib=$(( $(stat -c %s "$ROOT/dist/cpack-cuda.tar.xz") / 1048576 ))
  local fatbin; fatbin=$(objdump -h "$stage/cpack" | awk '$2 == ".nv_fatbin" {print $3}')
  say "dist/cpack-cuda.tar.xz: ${mib} MiB; CUDA machine code $(( 16#${fatbin:-0} / 1048576 )) MiB ($(ls "$stage/lib" | tr '\n' ' '))"
  if [ "$mib" -gt 60 ]; then
    say "the package is over 60 MiB and will not fit the device carry"
    exit 1
  fi
}

toolkit
build
package
