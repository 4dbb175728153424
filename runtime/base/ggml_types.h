#pragma once
// GGML tensor types that hetmoe reads, with their block layouts (gpt-oss-spec.md §2, §4;
// ggml/src/ggml-common.h). Header-only so kernels can use it without linking the runtime.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hetmoe {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ8_0 = 8,    // 32 elements in 34 bytes: f16 d; int8 qs[32]; value = d * q
  kBF16 = 30,
  kMXFP4 = 39,  // 32 elements in 17 bytes: uint8 e; uint8 qs[16]; see cpu_kernels/reference.h
  // Not a GGUF type (no file may name it): MXFP4 with every 16 rows interleaved block by block for the CPU kernels
  // (cpu_kernels/repack.h). The same bytes per row as kMXFP4, but a row is not contiguous: only groups of 16 rows
  // are (rows 16g..16g+15 occupy the bytes of those rows in kMXFP4).
  kMXFP4_R16 = 0x10000 + 39,
  // Not a GGUF type either: Q8_0 with every 16 rows interleaved block by block (cpu_kernels/repack.h), as kMXFP4_R16.
  kQ8_0_R16 = 0x10000 + 8,
};

/// Layout of one type: a row of ne0 elements takes ne0 / block_elems * block_bytes bytes.
struct TensorTypeTraits {
  TensorType type;
  std::string_view name;
  uint32_t block_elems;
  uint32_t block_bytes;
  bool in_gguf = true;  // a type a GGUF file may hold (false: a layout hetmoe makes in memory)
};

inline constexpr uint32_t kQ8_0BlockBytes = 34;
inline constexpr uint32_t kMXFP4BlockBytes = 17;
inline constexpr uint32_t kQuantBlockElems = 32;

inline constexpr std::array<TensorTypeTraits, 7> kTensorTypeTraits = {{
    {TensorType::kF32, "F32", 1, 4},
    {TensorType::kF16, "F16", 1, 2},
    {TensorType::kQ8_0, "Q8_0", kQuantBlockElems, kQ8_0BlockBytes},
    {TensorType::kBF16, "BF16", 1, 2},
    {TensorType::kMXFP4, "MXFP4", kQuantBlockElems, kMXFP4BlockBytes},
    {TensorType::kMXFP4_R16, "MXFP4_R16", kQuantBlockElems, kMXFP4BlockBytes, false},
    {TensorType::kQ8_0_R16, "Q8_0_R16", kQuantBlockElems, kQ8_0BlockBytes, false},
}};

/// Traits for a raw GGML type id, or nullopt if hetmoe does not support that type (in-memory layouts such as
/// kMXFP4_R16 and kQ8_0_R16 are not GGML types: nullopt).
inline std::optional<TensorTypeTraits> tensor_type_traits(uint32_t type_id) {
  for (const auto& t : kTensorTypeTraits)
    if (t.in_gguf && static_cast<uint32_t>(t.type) == type_id) return t;
  return std::nullopt;
}

/// Traits for a supported type.
inline const TensorTypeTraits& tensor_type_traits(TensorType type) {
  for (const auto& t : kTensorTypeTraits)
    if (t.type == type) return t;
  return kTensorTypeTraits[0];  // unreachable for a valid enum value
}

/// "F32", "Q8_0", ... for a supported type (and "MXFP4_R16", "Q8_0_R16" for those layouts); "type<id>" otherwise.
inline std::string tensor_type_name(uint32_t type_id) {
  for (const auto& t : kTensorTypeTraits)
    if (static_cast<uint32_t>(t.type) == type_id) return std::string(t.name);
  return "type" + std::to_string(type_id);
}

/// Bytes of one row of num_elements values (num_elements a multiple of the block size).
inline uint64_t tensor_row_bytes(TensorType type, uint64_t num_elements) {
  const auto& t = tensor_type_traits(type);
  return num_elements / t.block_elems * t.block_bytes;
}

}  // namespace hetmoe
