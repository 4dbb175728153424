// Writes the K and V rows of a batch of tokens into one layer's KV cache (kv_head, slot, row), slot = position %
// capacity, each in its KvType (ops.h):
// - f16: f32 → f16 with round-to-nearest-even (__float2half_rn, as ref::f32_to_f16); one thread per element,
//   grid-stride loop.
// - q8_0 / q4_0: one thread per 32-value block, quantized by kv_blocks.cuh's quantize_kv_block_* (the f32
//   operations of cpu::quantize_kv_q8_0 / quantize_kv_q4_0 in the same order, unfused: the bytes equal the CPU
//   cache's for the same input). A block is 34 or 18 bytes (2-byte aligned at best): written byte by byte. Simple
//   rather than fast: a token writes num_kv_heads · head_dim / 32 blocks (16 for gpt-oss-20b), a negligible part of
//   a step.
// K and V are written by one launch each (their types may differ). Two tokens of the batch must not map to the same
// slot (the runtime sizes sliding rings with spare slots for a prefill batch).

#include <algorithm>

#include "gpu_kernels/attention_common.cuh"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 256;

/// One cache (K or V) in f16: src (num_tokens, num_kv_heads, head_dim) f32 → cache (kv_head, slot, head_dim) f16.
__global__ void kv_store_f16_kernel(__half* __restrict__ cache, int32_t capacity, const float* __restrict__ src,
                                    int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
                                    const int32_t* __restrict__ positions) {
  const int64_t n = num_tokens * num_kv_heads * head_dim;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t d = e % head_dim;
    const int64_t g = (e / head_dim) % num_kv_heads;
    const int64_t t = e / (head_dim * num_kv_heads);
    const int64_t slot = positions[t] % capacity;
    cache[(g * capacity + slot) * head_dim + d] = __float2half_rn(src[e]);
  }
}

/// One cache (K or V) in q8_0 (Q4 false) or q4_0 (Q4 true): src (num_tokens, num_kv_heads, head_dim) f32 → cache
/// (kv_head, slot, row of head_dim / 32 blocks). One thread per block e of the batch (kv_block_target: where it reads
/// and writes).
template <bool Q4>
__global__ void kv_store_blocks_kernel(uint8_t* __restrict__ cache, int32_t capacity, const float* __restrict__ src,
                                       int64_t num_tokens, int64_t num_kv_heads, int64_t head_dim,
                                       const int32_t* __restrict__ positions) {
  constexpr int64_t kBlockBytes = Q4 ? kKvQ4_0BlockBytes : kKvQ8_0BlockBytes;
  const int64_t n = num_tokens * num_kv_heads * (head_dim / kKvBlockElems);
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const detail::KvBlockTarget at =
        detail::kv_block_target(e, num_kv_heads, head_dim, kBlockBytes, capacity, positions);
    if constexpr (Q4)
      detail::quantize_kv_block_q4_0(src + at.src_offset, cache + at.dst_offset);
    else
      detail::quantize_kv_block_q8_0(src + at.src_offset, cache + at.dst_offset);
  }
}

/// Writes one cache of `type`; the arguments are checked by kv_store.
cudaError_t store_one(KvType type, void* cache, int32_t capacity, const float* src, int64_t num_tokens,
                      int64_t num_kv_heads, int64_t head_dim, const int32_t* positions, cudaStream_t stream) {
  const int64_t units = num_tokens * num_kv_heads * (type == KvType::kF16 ? head_dim : head_dim / kKvBlockElems);
  const auto num_blocks = static_cast<unsigned>(std::min<int64_t>(detail::ceil_div(units, kThreads), 65536));
  switch (type) {
    case KvType::kF16:
      kv_store_f16_kernel<<<num_blocks, kThreads, 0, stream>>>(static_cast<__half*>(cache), capacity, src, num_tokens,
                                                              num_kv_heads, head_dim, positions);
      break;
    case KvType::kQ8_0:
      kv_store_blocks_kernel<false><<<num_blocks, kThreads, 0, stream>>>(static_cast<uint8_t*>(cache), capacity, src,
                                                                         num_tokens, num_kv_heads, head_dim, positions);
      break;
    case KvType::kQ4_0:
      kv_store_blocks_kernel<true><<<num_blocks, kThreads, 0, stream>>>(static_cast<uint8_t*>(cache), capacity, src,
                                                                        num_tokens, num_kv_heads, head_dim, positions);
      break;
  }
  return detail::launch_status();
}

/// The shape rule of one cache: f16 2-byte aligned; q8_0 / q4_0 whole blocks per row (byte stores: any alignment).
bool cache_ok(KvType type, const void* cache, int64_t head_dim) {
  if (!detail::is_kv_type(type) || cache == nullptr) return false;
  return type == KvType::kF16 ? detail::is_aligned(cache, 2) : head_dim % kKvBlockElems == 0;
}

}  // namespace

cudaError_t kv_store(const KvLayerView& kv, const float* k, const float* v, int64_t num_tokens, int64_t num_kv_heads,
                     int64_t head_dim, const int32_t* positions, cudaStream_t stream) {
  if (kv.capacity <= 0 || k == nullptr || v == nullptr || positions == nullptr || num_tokens <= 0 ||
      num_kv_heads <= 0 || head_dim <= 0 || num_tokens > kv.capacity || !cache_ok(kv.k_type, kv.k, head_dim) ||
      !cache_ok(kv.v_type, kv.v, head_dim))
    return cudaErrorInvalidValue;
  if (const cudaError_t err =
          store_one(kv.k_type, kv.k, kv.capacity, k, num_tokens, num_kv_heads, head_dim, positions, stream);
      err != cudaSuccess)
    return err;
  return store_one(kv.v_type, kv.v, kv.capacity, v, num_tokens, num_kv_heads, head_dim, positions, stream);
}

}  // namespace hetmoe::gpu
