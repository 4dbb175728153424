#pragma once
// Private helpers shared by attention_decode.cu, attention_prefill.cu and kv_store.cu: the host-side argument checks;
// the reader of KV-cache rows of every KvType (load_kv_values) and the row addressing are in kv_blocks.cuh.

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/kv_blocks.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu::detail {

/// True for the three KvType values (a view built from a bad cast is rejected, not read).
inline bool is_kv_type(KvType type) {
  return type == KvType::kF16 || type == KvType::kQ8_0 || type == KvType::kQ4_0;
}

/// Host-side checks common to both attention launchers: non-null buffers, a window no larger than the ring, a GQA
/// group that divides the heads, known KV types, and the alignment of the float2 / half2 loads.
inline bool attention_args_ok(const float* q, const KvLayerView& kv, int64_t num_tokens, int64_t num_heads,
                              int64_t num_kv_heads, const int32_t* positions, const float* out) {
  return q != nullptr && kv.k != nullptr && kv.v != nullptr && kv.capacity > 0 && kv.window > 0 &&
         kv.window <= kv.capacity && positions != nullptr && out != nullptr && num_tokens > 0 && num_heads > 0 &&
         num_kv_heads > 0 && num_heads % num_kv_heads == 0 && num_heads <= kMaxGridY && is_kv_type(kv.k_type) &&
         is_kv_type(kv.v_type) && is_aligned(q, 8) && is_aligned(kv.k, 4) && is_aligned(kv.v, 4);
}

}  // namespace hetmoe::gpu::detail
