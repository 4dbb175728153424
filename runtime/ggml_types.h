#pragma once
// GGML tensor types that hetmoe reads, with their block layouts (gpt-oss-spec.md §2, §4;
// ggml/src/ggml-common.h).

#include <cstdint>
#include <optional>
#include <string_view>

namespace hetmoe {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ8_0 = 8,    // 32 elements in 34 bytes: f16 d; int8 qs[32]; value = d * q
  kBF16 = 30,
  kMXFP4 = 39,  // 32 elements in 17 bytes: uint8 e; uint8 qs[16]; see cpu_kernels/reference.h
};

/// Layout of one type: a row of ne0 elements takes ne0 / block_elems * block_bytes bytes.
struct TensorTypeTraits {
  TensorType type;
  std::string_view name;
  uint32_t block_elems;
  uint32_t block_bytes;
};

/// Traits for a raw GGML type id, or nullopt if hetmoe does not support that type.
std::optional<TensorTypeTraits> tensor_type_traits(uint32_t type_id);

/// Traits for a supported type (never fails).
const TensorTypeTraits& tensor_type_traits(TensorType type);

/// "F32", "Q8_0", ... for a supported type; "type<id>" otherwise.
std::string tensor_type_name(uint32_t type_id);

inline constexpr uint32_t kQ8_0BlockBytes = 34;
inline constexpr uint32_t kMXFP4BlockBytes = 17;
inline constexpr uint32_t kQuantBlockElems = 32;

}  // namespace hetmoe
