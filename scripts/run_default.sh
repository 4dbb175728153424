#!/usr/bin/env bash
# README command (1): sets up, builds, and generates from the embedded default model (the synthetic tiny model,
# written once to the cache directory), printing the text and tok/s. Arguments go to `hetmoe generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build/bin/hetmoe generate "$@"
