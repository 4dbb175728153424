#include "runtime/model/kv_type.h"

#include <fmt/format.h>

namespace hetmoe {

Expected<KvCacheType> parse_kv_cache_type(std::string_view text) {
  if (text == "f16") return KvCacheType::kF16;
  if (text == "f32") return KvCacheType::kF32;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("KV cache type '{}' is not supported (expected f16 or f32)", text));
}

uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType type) {
  return 2ull * hp.kv_dim() * (type == KvCacheType::kF16 ? 2 : 4);
}

}  // namespace hetmoe
