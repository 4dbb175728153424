#include "runtime/model/kv_type.h"

#include <fmt/format.h>

#include <algorithm>

namespace hetmoe {

Expected<KvCacheType> parse_kv_cache_type(std::string_view text) {
  if (text == "f16") return KvCacheType::kF16;
  if (text == "f32") return KvCacheType::kF32;
  if (text == "q8_0") return KvCacheType::kQ8_0;
  if (text == "q4_0") return KvCacheType::kQ4_0;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("KV cache type '{}' is not supported (expected f16, f32, q8_0 or q4_0)", text));
}

const char* kv_cache_type_name(KvCacheType type) {
  switch (type) {
    case KvCacheType::kF16:
      return "f16";
    case KvCacheType::kF32:
      return "f32";
    case KvCacheType::kQ8_0:
      return "q8_0";
    case KvCacheType::kQ4_0:
      return "q4_0";
  }
  return "unknown";
}

uint64_t kv_row_bytes(KvCacheType type, uint32_t head_dim) {
  switch (type) {
    case KvCacheType::kF16:
      return 2ull * head_dim;
    case KvCacheType::kF32:
      return 4ull * head_dim;
    case KvCacheType::kQ8_0:
      return 34ull * (head_dim / 32);
    case KvCacheType::kQ4_0:
      return 18ull * (head_dim / 32);
  }
  return 0;
}

uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType k_type, KvCacheType v_type) {
  return static_cast<uint64_t>(hp.num_kv_heads) * (kv_row_bytes(k_type, hp.head_dim) + kv_row_bytes(v_type, hp.head_dim));
}

uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType type) { return kv_bytes_per_position(hp, type, type); }

uint64_t kv_cache_bytes(const ModelHparams& hp, uint32_t context_length, KvCacheType k_type, KvCacheType v_type) {
  uint64_t positions = 0;
  for (uint32_t l = 0; l < hp.num_layers; ++l)
    positions += hp.is_sliding(l) ? std::min(hp.sliding_window, context_length) : context_length;
  return positions * kv_bytes_per_position(hp, k_type, v_type);
}

Status check_kv_cache_type(const ModelHparams& hp, KvCacheType type, std::string_view what) {
  if (is_quantized(type) && hp.head_dim % 32 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} {}: the model's head_dim {} is not a multiple of 32 (the q8_0/q4_0 block); use "
                                  "f16 or f32",
                                  what, kv_cache_type_name(type), hp.head_dim));
  return {};
}

}  // namespace hetmoe
