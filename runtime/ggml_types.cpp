#include "runtime/ggml_types.h"

#include <array>
#include <string>

namespace hetmoe {
namespace {
constexpr std::array<TensorTypeTraits, 5> kTraits = {{
    {TensorType::kF32, "F32", 1, 4},
    {TensorType::kF16, "F16", 1, 2},
    {TensorType::kQ8_0, "Q8_0", kQuantBlockElems, kQ8_0BlockBytes},
    {TensorType::kBF16, "BF16", 1, 2},
    {TensorType::kMXFP4, "MXFP4", kQuantBlockElems, kMXFP4BlockBytes},
}};
}  // namespace

std::optional<TensorTypeTraits> tensor_type_traits(uint32_t type_id) {
  for (const auto& t : kTraits)
    if (static_cast<uint32_t>(t.type) == type_id) return t;
  return std::nullopt;
}

const TensorTypeTraits& tensor_type_traits(TensorType type) {
  for (const auto& t : kTraits)
    if (t.type == type) return t;
  return kTraits[0];  // unreachable for a valid enum value
}

std::string tensor_type_name(uint32_t type_id) {
  if (auto t = tensor_type_traits(type_id)) return std::string(t->name);
  return "type" + std::to_string(type_id);
}

}  // namespace hetmoe
