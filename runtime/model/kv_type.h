#pragma once
// The KV cache's element type and the bytes it takes per position: what placement and the executor both need to
// know of the KV cache (the cache itself is runtime/exec/kv_cache.h).

#include <cstdint>
#include <string_view>

#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe {

enum class KvCacheType { kF16, kF32 };

/// Parses "f16" / "f32". Errors: kInvalidArgument naming the value and the choices.
Expected<KvCacheType> parse_kv_cache_type(std::string_view text);

/// Bytes one position takes in one layer (K and V): 2 · kv_dim · element size.
uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType type);

}  // namespace hetmoe
