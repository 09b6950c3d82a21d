#!/usr/bin/env bash
# CMAKE_ARGS for building llama-cpp-python (the benchmark's peer) for this machine's CPU.
# Why not GGML_NATIVE: on Xeons with AMX, llama.cpp's native build dies with SIGILL in its AMX matmul
# here, so the instruction sets are named one by one from /proc/cpuinfo, AMX always off. Naming AVX-512
# on a CPU without it (an AVX2-only EPYC, say) would build a library that dies the same way.
set -euo pipefail
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
echo "-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)" \
  "-DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VNNI=$(has avx512_vnni)" \
  "-DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
