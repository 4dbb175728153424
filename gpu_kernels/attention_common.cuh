#pragma once
// Private helpers shared by attention_decode.cu and attention_prefill.cu.

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu::detail {

/// Host-side checks common to both attention launchers: non-null buffers, a window no larger than the ring, a GQA
/// group that divides the heads, and the alignment of the float2 / half2 loads.
inline bool attention_args_ok(const float* q, const KvLayerView& kv, int64_t num_tokens, int64_t num_heads,
                              int64_t num_kv_heads, const int32_t* positions, const float* out) {
  return q != nullptr && kv.k != nullptr && kv.v != nullptr && kv.capacity > 0 && kv.window > 0 &&
         kv.window <= kv.capacity && positions != nullptr && out != nullptr && num_tokens > 0 && num_heads > 0 &&
         num_kv_heads > 0 && num_heads % num_kv_heads == 0 && num_heads <= kMaxGridY && is_aligned(q, 8) &&
         is_aligned(kv.k, 4) && is_aligned(kv.v, 4);
}

}  // namespace hetmoe::gpu::detail
