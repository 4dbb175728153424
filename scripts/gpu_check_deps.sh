#!/usr/bin/env bash
# scripts/gpu_check_deps.sh [DIR] — downloads (apt-get download: nothing is installed) the Debian packages that
# scripts/gpu_check.sh needs to build hetmoe and its GPU tests, into DIR (default: .gpu-deps in the repository,
# git-ignored), for a GPU machine whose CUDA image lacks them and cannot fetch anything. gpu_check.sh unpacks them
# into a prefix of its own (never into /) when pkg-config does not find the project's libraries there.
# They are Debian 12 (bookworm) builds: on an image with an older glibc than 2.36 their libraries may not load.
# Run on a machine with network access and apt (this one); then carry DIR with the check (docs/gpu.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$ROOT/.gpu-deps}
packages=(
  libtbb-dev libtbb12 libtbbmalloc2 libtbbbind-2-5
  libhwloc-dev libhwloc15
  libnuma-dev libnuma1
  libxsimd-dev libgtest-dev libcli11-dev nlohmann-json3-dev
  libtomlplusplus-dev libtomlplusplus3
  libfmt-dev libfmt9
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libedit-dev libedit2 libbsd0 libmd0
)
mkdir -p "$DIR"
cd "$DIR"
apt-get download "${packages[@]}"
du -sh "$DIR"
