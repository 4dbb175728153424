#!/usr/bin/env bash
# Runs a command inside a memory cgroup of SIZE after dropping the page cache, as on a 16 GB laptop that has not
# just read the model file: file pages the command reads are charged to it, and going over SIZE reclaims or kills.
#
# Usage: scripts/laptop16.sh SIZE -- CMD [ARGS...]
#   SIZE: bytes with a unit, e.g. 14GiB, 12G, 10240M (K/M/G/T = powers of 1024; a bare number is bytes).
# Prints on stderr, after the command: "laptop16: limit=… peak=… oom_kill=… exit=…" (peak = the cgroup's highest
# usage: RSS plus the page cache charged to it). Exit: the command's exit code; 137 when it was killed for memory.
# Needs root and a writable memory cgroup (v1 `memory` hierarchy or v2 with the memory controller). Library callers
# and CI do not use this: it is for the measurements in docs/performance.md.
set -euo pipefail

usage() { echo "usage: $0 SIZE -- CMD [ARGS...]   (SIZE like 14GiB, 12G, 10240M)" >&2; exit 2; }
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
size_text=$1; shift 2

to_bytes() {
  local t=${1^^}; t=${t%IB}; t=${t%B}
  local num=${t%[KMGT]} unit=${t:${#t}-1}
  [[ $num =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "laptop16: SIZE '$1' is not a size (expected e.g. 14GiB)" >&2; exit 2; }
  case $unit in
    K) awk -v n="$num" 'BEGIN{printf "%.0f", n*1024}' ;;
    M) awk -v n="$num" 'BEGIN{printf "%.0f", n*1024^2}' ;;
    G) awk -v n="$num" 'BEGIN{printf "%.0f", n*1024^3}' ;;
    T) awk -v n="$num" 'BEGIN{printf "%.0f", n*1024^4}' ;;
    *) [[ $t =~ ^[0-9]+$ ]] || { echo "laptop16: SIZE '$1' has an unknown unit" >&2; exit 2; }; echo "$t" ;;
  esac
}
limit=$(to_bytes "$size_text")
[ "$limit" -ge $((64 << 20)) ] || { echo "laptop16: SIZE $size_text is below 64 MiB" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "laptop16: needs root (cgroups and drop_caches)" >&2; exit 1; }

name="hetmoe-laptop16-$$"
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  version=2
  parent=/sys/fs/cgroup$(awk -F: '$1=="0"{print $3}' /proc/self/cgroup)
  cg=$parent/$name
  mkdir "$cg"
  echo "$limit" > "$cg/memory.max"
  echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
else
  version=1
  root=/sys/fs/cgroup/memory
  [ -d "$root" ] || { echo "laptop16: no memory cgroup hierarchy (neither v2 nor v1 memory is mounted)" >&2; exit 1; }
  cg=$root$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)/$name
  mkdir "$cg"
  echo "$limit" > "$cg/memory.limit_in_bytes"
  echo "$limit" > "$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true  # no swapping around the limit
fi
cleanup() { rmdir "$cg" 2>/dev/null || true; }
trap cleanup EXIT

sync
echo 3 > /proc/sys/vm/drop_caches

set +e
bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' laptop16 "$cg" "$@"
status=$?
set -e

if [ $version = 2 ]; then
  peak=$(cat "$cg/memory.peak" 2>/dev/null || echo unknown)
  oom=$(awk '$1=="oom_kill"{print $2}' "$cg/memory.events")
else
  peak=$(cat "$cg/memory.max_usage_in_bytes")
  oom=$(awk '$1=="oom_kill"{print $2}' "$cg/memory.oom_control")
  oom=${oom:-unknown}
fi
echo "laptop16: cgroup v$version limit=$limit peak=$peak oom_kill=$oom exit=$status" >&2
exit $status
