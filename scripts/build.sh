#!/usr/bin/env bash
# Configures and builds hetmoe into build/ (Release). Extra arguments go to the CMake configure step,
# e.g. -DCMAKE_CUDA_ARCHITECTURES=89 or -DHETMOE_CUDA=OFF.
# Environment: HETMOE_BUILD_DIR (default build), HETMOE_JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${HETMOE_BUILD_DIR:-build}
jobs=${HETMOE_JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j "$jobs"
