#pragma once
// Test helper: copies a GGUF file into memory with edits (drop or replace metadata, drop, retype or reshape
// tensors), to build malformed or variant models from the fixture.

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cpu_kernels/reference.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace hetmoe::test {

struct TensorEdit {
  bool drop = false;
  std::optional<TensorType> convert_to;      // dequantize and store as F32, F16 or BF16
  std::optional<std::vector<uint64_t>> shape;  // new shape; data is truncated or zero-padded to fit
};

struct GgufEdits {
  /// Called for every key: return false to drop it.
  std::function<bool(const std::string& key)> keep_key = [](const std::string&) { return true; };
  /// Called after the copied metadata: add replacements here.
  std::function<void(gguf::Writer&)> add_metadata = [](gguf::Writer&) {};
  /// Called for every tensor.
  std::function<TensorEdit(const gguf::TensorInfo&)> edit_tensor = [](const gguf::TensorInfo&) { return TensorEdit{}; };
};

inline void copy_value(gguf::Writer& w, const std::string& key, const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::kUint8: w.add_u8(key, static_cast<uint8_t>(v.u64)); break;
    case ValueType::kUint16: case ValueType::kUint32: w.add_u32(key, static_cast<uint32_t>(v.u64)); break;
    case ValueType::kUint64: w.add_u64(key, v.u64); break;
    case ValueType::kInt8: case ValueType::kInt16: case ValueType::kInt32: case ValueType::kInt64:
      w.add_i32(key, static_cast<int32_t>(v.i64)); break;
    case ValueType::kFloat32: case ValueType::kFloat64: w.add_f32(key, static_cast<float>(v.f64)); break;
    case ValueType::kBool: w.add_bool(key, v.u64 != 0); break;
    case ValueType::kString: w.add_string(key, v.str); break;
    case ValueType::kArray:
      if (v.array_type == ValueType::kString) {
        std::vector<std::string> s(v.array_strings.begin(), v.array_strings.end());
        w.add_string_array(key, s);
      } else if (v.array_type == ValueType::kInt32) {
        std::vector<int32_t> a(v.array_count);
        std::memcpy(a.data(), v.array_data, a.size() * 4);
        w.add_i32_array(key, a);
      } else if (v.array_type == ValueType::kFloat32) {
        std::vector<float> a(v.array_count);
        std::memcpy(a.data(), v.array_data, a.size() * 4);
        w.add_f32_array(key, a);
      }
      break;
  }
}

/// The edited copy of `src` as bytes (parse with gguf::File::from_memory).
inline std::vector<uint8_t> rewrite_gguf(const gguf::File& src, const GgufEdits& edits) {
  gguf::Writer w;
  for (const auto& kv : src.metadata())
    if (kv.key != "general.alignment" && edits.keep_key(kv.key)) copy_value(w, kv.key, kv.value);
  edits.add_metadata(w);
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : src.tensors()) {
    const TensorEdit e = edits.edit_tensor(t);
    if (e.drop) continue;
    std::vector<uint64_t> shape(t.ne, t.ne + t.n_dims);
    TensorType type = t.type;
    std::vector<uint8_t> bytes(t.data, t.data + t.num_bytes);
    if (e.convert_to) {
      std::vector<float> f(t.num_elements);
      ref::dequantize_row(t.type, t.data, f.data(), static_cast<int64_t>(t.num_elements));
      type = *e.convert_to;
      bytes.assign(tensor_row_bytes(type, t.num_elements), 0);
      for (uint64_t i = 0; i < t.num_elements; ++i) {
        if (type == TensorType::kF32) {
          std::memcpy(&bytes[4 * i], &f[i], 4);
        } else {
          uint32_t bits;
          std::memcpy(&bits, &f[i], 4);
          const uint16_t h = type == TensorType::kF16 ? ref::f32_to_f16(f[i]) : static_cast<uint16_t>(bits >> 16);
          std::memcpy(&bytes[2 * i], &h, 2);
        }
      }
    }
    if (e.shape) shape = *e.shape;
    const uint64_t n = w.add_tensor(t.name, type, shape);
    bytes.resize(n, 0);
    data.push_back(std::move(bytes));
  }
  std::vector<uint8_t> out;
  w.open_memory(&out);
  (void)w.write_header();
  for (const auto& d : data) (void)w.write_tensor_data(d);
  (void)w.finish();
  return out;
}

}  // namespace hetmoe::test
