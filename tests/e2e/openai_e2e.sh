#!/usr/bin/env bash
# ctest entry of openai_e2e.mjs: exit 77 (skipped) with the reason when node or the pinned openai package is missing.
# usage: openai_e2e.sh BUILD/bin/hetmoe MODEL.gguf
here=$(cd "$(dirname "$0")" && pwd)
command -v node > /dev/null || { echo "SKIPPED: node not found (scripts/setup.sh installs nodejs and npm)"; exit 77; }
[ -d "$here/node_modules/openai" ] ||
  { echo "SKIPPED: $here/node_modules/openai not found: run 'npm ci --prefix tests/e2e' (scripts/setup.sh does)"; exit 77; }
exec node "$here/openai_e2e.mjs" "$@"
