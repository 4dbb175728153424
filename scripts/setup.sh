#!/usr/bin/env bash
# Installs every Debian package hetmoe needs to build and test (idempotent, quiet), then the end-to-end test clients
# of `hetmoe serve` (tests/e2e: the openai npm package and Codex CLI, pinned by package-lock.json) with `npm ci`.
# Usage: bash scripts/setup.sh      (as root, or with sudo available; HETMOE_SKIP_NPM=1 skips the npm step)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang
  libtbb-dev libhwloc-dev libnuma-dev libxsimd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libfmt-dev libspdlog-dev libpcre2-dev libedit-dev
  libcpp-httplib-dev
)
# Node.js and npm for tests/e2e, from Debian unless a node is already installed (e.g. NodeSource's, which bundles npm).
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
install_e2e_clients() {
  [ "${HETMOE_SKIP_NPM:-0}" = 1 ] && return 0
  local e2e
  e2e="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e"
  if [ -d "$e2e/node_modules/openai" ] && [ -x "$e2e/node_modules/.bin/codex" ] &&
     cmp -s "$e2e/package-lock.json" "$e2e/node_modules/.package-lock.json.ci" 2>/dev/null; then
    return 0
  fi
  echo "setup.sh: npm ci in tests/e2e (openai, @openai/codex)" >&2
  if (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error); then
    cp "$e2e/package-lock.json" "$e2e/node_modules/.package-lock.json.ci"
  else
    echo "setup.sh: npm ci failed in tests/e2e: the ServeE2E tests will be skipped" >&2
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  install_e2e_clients
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_e2e_clients
