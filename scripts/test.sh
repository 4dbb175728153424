#!/usr/bin/env bash
# Sets up (Debian packages), builds and runs the whole test suite with ctest. This is README command (2) and
# exactly what .ci/run calls. GPU tests skip themselves where no GPU is present.
# The test build compiles CUDA for one architecture (HETMOE_CUDA_ARCHS, default 75: sm_75 code plus PTX that newer
# GPUs JIT-compile), which keeps nvcc time low on 2-core CI machines; release builds (scripts/build.sh) target all.
# The microbenchmarks (HETMOE_BENCH) are built too, so a kernel change that breaks them fails here; they are not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HETMOE_BUILD_DIR=${HETMOE_BUILD_DIR:-build} bash scripts/build.sh "-DCMAKE_CUDA_ARCHITECTURES=${HETMOE_CUDA_ARCHS:-75}" -DHETMOE_BENCH=ON "$@"
ctest --test-dir "${HETMOE_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
