// Writes the K and V rows of a batch of tokens into one layer's f16 KV cache (kv_head, slot, head_dim), slot =
// position % capacity. f32 → f16 with round-to-nearest-even (__float2half_rn), as ref::f32_to_f16.
// Parallelization: one thread per element of the (token, kv_head, head_dim) batch, grid-stride loop. Two tokens of
// the batch must not map to the same slot (the runtime sizes sliding rings with spare slots for a prefill batch).

#include <algorithm>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void kv_store_kernel(__half* __restrict__ k_cache, __half* __restrict__ v_cache, int32_t capacity,
                                const float* __restrict__ k, const float* __restrict__ v, int64_t num_tokens,
                                int64_t num_kv_heads, int64_t head_dim, const int32_t* __restrict__ positions) {
  const int64_t n = num_tokens * num_kv_heads * head_dim;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t d = e % head_dim;
    const int64_t g = (e / head_dim) % num_kv_heads;
    const int64_t t = e / (head_dim * num_kv_heads);
    const int64_t slot = positions[t] % capacity;
    const int64_t dst = (g * capacity + slot) * head_dim + d;
    k_cache[dst] = __float2half_rn(k[e]);
    v_cache[dst] = __float2half_rn(v[e]);
  }
}

}  // namespace

cudaError_t kv_store(const KvLayerView& kv, const float* k, const float* v, int64_t num_tokens, int64_t num_kv_heads,
                     int64_t head_dim, const int32_t* positions, cudaStream_t stream) {
  if (kv.k == nullptr || kv.v == nullptr || kv.capacity <= 0 || k == nullptr || v == nullptr ||
      positions == nullptr || num_tokens <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_tokens > kv.capacity ||
      !detail::is_aligned(kv.k, 2) || !detail::is_aligned(kv.v, 2))
    return cudaErrorInvalidValue;
  const int64_t n = num_tokens * num_kv_heads * head_dim;
  const int64_t num_blocks = std::min<int64_t>(detail::ceil_div(n, kThreads), 65536);
  kv_store_kernel<<<static_cast<unsigned>(num_blocks), kThreads, 0, stream>>>(
      static_cast<__half*>(kv.k), static_cast<__half*>(kv.v), kv.capacity, k, v, num_tokens, num_kv_heads, head_dim,
      positions);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
