// libFuzzer target for the GGUF reader (runtime/model/gguf.cpp). Each input is parsed with File::from_memory; on success
// every metadata value, every string and every tensor byte is read (so ASan flags any view outside the input) and the
// File's invariants are checked; on failure the Error must be well-formed. A broken invariant traps.
//
// Built with -DHETMOE_FUZZ_WRITE_SEEDS instead of -fsanitize=fuzzer, this file is a small program that writes seed
// GGUF files (made with gguf::Writer) into the folder given as its argument; scripts/fuzz_gguf.sh uses both.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

#ifndef HETMOE_FUZZ_WRITE_SEEDS

namespace {

using hetmoe::gguf::File;
using hetmoe::gguf::ValueType;

constexpr std::string_view kName = "fuzz.gguf";
// Lookups (find, getters) are linear in the number of entries; they are exercised on the first entries only so that
// inputs with thousands of tiny records stay fast.
constexpr size_t kMaxLookups = 256;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

uint64_t hash_bytes(uint64_t h, const void* p, uint64_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (uint64_t i = 0; i < n; ++i) h = mix(h, b[i]);
  return h;
}

uint64_t hash_string(uint64_t h, std::string_view s) { return hash_bytes(h, s.data(), s.size()); }

uint64_t element_bytes(ValueType t) {
  switch (t) {
    case ValueType::kUint8: case ValueType::kInt8: case ValueType::kBool: return 1;
    case ValueType::kUint16: case ValueType::kInt16: return 2;
    case ValueType::kUint32: case ValueType::kInt32: case ValueType::kFloat32: return 4;
    case ValueType::kUint64: case ValueType::kInt64: case ValueType::kFloat64: return 8;
    default: return 0;
  }
}

bool inside(const uint8_t* p, uint64_t n, const uint8_t* data, size_t size) {
  if (n == 0) return p >= data && p <= data + size;
  return p >= data && p <= data + size && n <= static_cast<uint64_t>(data + size - p);
}

uint64_t touch_metadata(const File& file, const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  size_t index = 0;
  for (const auto& kv : file.metadata()) {
    const bool lookup = index++ < kMaxLookups;
    if (lookup) check(file.find(kv.key) == &kv);  // keys are unique
    check(kv.file_offset < size);
    const auto& v = kv.value;
    h = hash_string(h, kv.key);
    h = mix(h, v.u64);
    h = mix(h, static_cast<uint64_t>(v.i64));
    h = hash_bytes(h, &v.f64, sizeof(v.f64));
    h = hash_string(h, v.str);
    if (v.type == ValueType::kString) {
      check(inside(reinterpret_cast<const uint8_t*>(v.str.data()), v.str.size(), data, size));
    }
    if (v.type == ValueType::kArray) {
      check(v.array_type != ValueType::kArray);
      if (v.array_type == ValueType::kString) {
        check(v.array_strings.size() == v.array_count);
        for (std::string_view s : v.array_strings) {
          check(inside(reinterpret_cast<const uint8_t*>(s.data()), s.size(), data, size));
          h = hash_string(h, s);
        }
      } else {
        const uint64_t n = v.array_count * element_bytes(v.array_type);
        check(inside(v.array_data, n, data, size));
        h = hash_bytes(h, v.array_data, n);
      }
    }
    if (!lookup) continue;
    // Every getter on the key: each must return a value or an Error, never crash.
    if (auto x = file.get_u32(kv.key)) {
      h = mix(h, *x);
    } else {
      check(x.error().code == hetmoe::ErrorCode::kFormat);
    }
    if (auto x = file.get_u64(kv.key)) {
      h = mix(h, *x);
    } else {
      check(x.error().code == hetmoe::ErrorCode::kFormat);
    }
    if (auto x = file.get_f32(kv.key)) h = hash_bytes(h, &*x, sizeof(float));
    if (auto x = file.get_bool(kv.key)) h = mix(h, *x ? 1 : 0);
    if (auto x = file.get_string(kv.key)) h = hash_string(h, *x);
    if (auto x = file.get_string_array(kv.key)) h = mix(h, x->size());
    if (auto x = file.get_i32_array(kv.key)) {
      for (int32_t e : *x) h = mix(h, static_cast<uint32_t>(e));
    }
    if (auto x = file.get_f32_array(kv.key)) h = hash_bytes(h, x->data(), x->size() * sizeof(float));
  }
  if (!file.find("fuzz.absent.key")) {
    const auto absent = file.get_u32("fuzz.absent.key");
    check(!absent && absent.error().code == hetmoe::ErrorCode::kMissing);
  }
  return h;
}

uint64_t touch_tensors(const File& file, const uint8_t* data, size_t size) {
  uint64_t h = 0;
  check(file.data_offset() <= file.file_size());
  size_t index = 0;
  for (const auto& t : file.tensors()) {
    if (index++ < kMaxLookups) check(file.find_tensor(t.name) == &t);  // names are unique
    check(t.n_dims >= 1 && t.n_dims <= hetmoe::gguf::kMaxDims);
    check(t.offset % file.alignment() == 0);
    check(inside(t.data, t.num_bytes, data, size));
    check(t.data == data + file.data_offset() + t.offset);
    h = hash_string(h, t.name);
    h = hash_bytes(h, t.data, t.num_bytes);
  }
  return h;
}

volatile uint64_t g_sink;  // keeps the reads from being optimized away

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = File::from_memory(std::span<const uint8_t>(data, size), std::string(kName));
  if (!file) {
    const auto& e = file.error();
    check(e.code == hetmoe::ErrorCode::kFormat || e.code == hetmoe::ErrorCode::kUnsupported);
    check(e.file_offset.has_value() && *e.file_offset <= size);
    check(e.message.compare(0, kName.size() + 2, std::string(kName) + ": ") == 0);
    g_sink = g_sink + e.to_string().size();
    return 0;
  }
  check(file->file_size() == size);
  check(file->alignment() != 0 && (file->alignment() & (file->alignment() - 1)) == 0);
  g_sink = g_sink + touch_metadata(*file, data, size) + touch_tensors(*file, data, size);
  return 0;
}

#else

namespace {

using hetmoe::TensorType;
using hetmoe::gguf::Writer;

bool save(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

/// Writes every declared tensor's bytes (a simple ramp) and returns the finished file.
std::vector<uint8_t> finish(Writer& w, const std::vector<uint64_t>& sizes) {
  std::vector<uint8_t> out;
  w.open_memory(&out);
  if (!w.write_header()) return {};
  for (uint64_t n : sizes) {
    std::vector<uint8_t> bytes(n);
    for (uint64_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
    if (!w.write_tensor_data(bytes)) return {};
  }
  if (!w.finish()) return {};
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = true;
  {
    Writer w;
    ok &= save(dir + "/empty.gguf", finish(w, {}));
  }
  {
    Writer w;
    w.add_u8("a.u8", 7);
    w.add_u32("a.u32", 123456);
    w.add_i32("a.i32", -5);
    w.add_u64("a.u64", 1ull << 40);
    w.add_f32("a.f32", 1.5f);
    w.add_bool("a.bool", true);
    w.add_string("general.architecture", "gpt-oss");
    const std::vector<std::string> strings = {"a", "bc", "", "def"};
    w.add_string_array("tokenizer.ggml.tokens", strings);
    const std::vector<int32_t> ints = {1, -2, 3};
    w.add_i32_array("tokenizer.ggml.token_type", ints);
    const std::vector<float> floats = {0.5f, -1.0f};
    w.add_f32_array("a.f32s", floats);
    ok &= save(dir + "/metadata.gguf", finish(w, {}));
  }
  {
    Writer w;
    w.add_string("general.architecture", "gpt-oss");
    std::vector<uint64_t> sizes;
    const uint64_t s4[] = {4};
    const uint64_t s32x2[] = {32, 2};
    const uint64_t s32[] = {32};
    const uint64_t s2x2x2[] = {2, 2, 2};
    const uint64_t s64x1x1x2[] = {64, 1, 1, 2};
    sizes.push_back(w.add_tensor("f32", TensorType::kF32, s4));
    sizes.push_back(w.add_tensor("q8_0", TensorType::kQ8_0, s32x2));
    sizes.push_back(w.add_tensor("mxfp4", TensorType::kMXFP4, s32));
    sizes.push_back(w.add_tensor("f16", TensorType::kF16, s2x2x2));
    sizes.push_back(w.add_tensor("bf16", TensorType::kBF16, s64x1x1x2));
    ok &= save(dir + "/tensors.gguf", finish(w, sizes));
  }
  {
    Writer w(64);
    w.add_u32("gpt-oss.block_count", 1);
    const uint64_t s8[] = {8};
    const uint64_t s32x3[] = {32, 3};
    std::vector<uint64_t> sizes;
    sizes.push_back(w.add_tensor("blk.0.attn_norm.weight", TensorType::kF32, s8));
    sizes.push_back(w.add_tensor("blk.0.ffn_up_exps.weight", TensorType::kMXFP4, s32x3));
    ok &= save(dir + "/aligned64.gguf", finish(w, sizes));
  }
  if (!ok) std::fprintf(stderr, "could not write the seeds into %s\n", dir.c_str());
  return ok ? 0 : 1;
}

#endif
