#!/usr/bin/env bash
# Fuzzes the GGUF reader with libFuzzer: scripts/fuzz_gguf.sh [SECONDS=60]
# Builds build-fuzz/fuzz_gguf with clang++ directly (no cmake), writes a seed corpus (small files made by
# gguf::Writer plus the first 64 KiB of the test fixtures), then runs one fuzzing job for SECONDS.
# New inputs accumulate in build-fuzz/corpus; crashes, leaks and timeouts land in build-fuzz/crashes/.
# Reproduce one with: build-fuzz/fuzz_gguf build-fuzz/crashes/crash-...
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/build-fuzz
cxx=${CXX_FUZZ:-clang++}
max_len=65536

mkdir -p "$out/corpus" "$out/seeds" "$out/crashes"
sources=("$root/runtime/model/gguf.cpp" "$root/runtime/model/gguf_writer.cpp")
if [[ -f "$root/runtime/base/ggml_types.cpp" ]]; then sources+=("$root/runtime/base/ggml_types.cpp"); fi  # else header-only
common=(-std=c++20 -g -O1 -fno-omit-frame-pointer -I"$root")
sanitize=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

echo "building $out/fuzz_gguf"
"$cxx" "${common[@]}" "${sanitize[@]}" "$root/tests/fuzz/fuzz_gguf.cpp" "${sources[@]}" -o "$out/fuzz_gguf"
"$cxx" "${common[@]}" -DHETMOE_FUZZ_WRITE_SEEDS "$root/tests/fuzz/fuzz_gguf.cpp" "${sources[@]}" \
  -o "$out/fuzz_gguf_seeds"

"$out/fuzz_gguf_seeds" "$out/seeds"
for fixture in gpt-oss-tiny.gguf o200k-harmony-vocab.gguf; do
  if [[ -f "$root/tests/data/$fixture" ]]; then
    head -c "$max_len" "$root/tests/data/$fixture" > "$out/seeds/${fixture%.gguf}-head.gguf"
  fi
done

cat > "$out/gguf.dict" <<'DICT'
"GGUF"
"\x03\x00\x00\x00"
"\x02\x00\x00\x00"
"general.alignment"
"general.architecture"
"tokenizer.ggml.tokens"
"\x09\x00\x00\x00\x08\x00\x00\x00"
"\x20\x00\x00\x00"
"\x40\x00\x00\x00"
"\xff\xff\xff\xff\xff\xff\xff\x7f"
"\xff\xff\xff\xff\xff\xff\xff\xff"
"\x27\x00\x00\x00"
"\x1e\x00\x00\x00"
DICT

echo "fuzzing for ${seconds}s (corpus: $out/corpus, crashes: $out/crashes)"
"$out/fuzz_gguf" -max_len="$max_len" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -dict="$out/gguf.dict" -artifact_prefix="$out/crashes/" -print_final_stats=1 \
  "$out/corpus" "$out/seeds"
