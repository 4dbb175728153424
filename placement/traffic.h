#pragma once
// Bytes a forward pass reads, the numerator of the memory roofline (design.md "Where the time goes"):
// decode tok/s ≤ bandwidth / bytes_read_per_token.

#include <cstdint>

#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace hetmoe::placement {

struct DecodeTraffic {
  uint64_t dense_bytes = 0;    // attention, router, norms, biases, sinks, output matrix, one embedding row
  uint64_t expert_bytes = 0;   // num_experts_used experts per layer (gate + up + down rows and biases)
  uint64_t kv_bytes = 0;       // K and V rows attended to at this depth, all layers
  uint64_t total() const { return dense_bytes + expert_bytes + kv_bytes; }
};

/// Bytes read to decode one token at context depth `depth` (tokens already in the KV cache). Expert bytes assume
/// every selected expert is distinct (top-k of one token always is). For gpt-oss-20b MXFP4/Q8_0 at depth 0:
/// about 1.27 GB of experts and 1.3 GB dense (gpt-oss-spec.md §7).
DecodeTraffic decode_traffic(const Model& model, uint32_t depth, KvCacheType kv_type);

}  // namespace hetmoe::placement
