// Router top-k + softmax over the selected logits (gpt-oss-spec.md §3 step 7, runtime/exec/forward_reference.cpp):
// experts ordered by descending logit, ties broken by the lower expert index (the reference's stable sort); the
// weights are ref::softmax of the top_k logits (f32 exp, double sum). A NaN logit ranks as −inf.
// Parallelization: one warp per token (4 tokens per 128-thread block). Lane l holds the logits of experts
// l, l + 32, … (≤ 8 each, num_experts ≤ 256); top_k rounds of a shuffle arg-max over (logit, index) pick the
// experts; lane 0 computes the softmax and writes both outputs.

#include <cstdint>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxExperts = 256;
constexpr int kMaxTopK = 8;
constexpr int kLogitsPerLane = kMaxExperts / kWarpSize;

// true when (va, ia) ranks before (vb, ib): higher logit, or equal logit and lower index.
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

__global__ void router_topk_softmax_kernel(const float* __restrict__ logits, int64_t num_tokens, int num_experts,
                                           int top_k, int32_t* __restrict__ expert_ids, float* __restrict__ weights) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= num_tokens) return;  // warp-uniform
  float v[kLogitsPerLane];
#pragma unroll
  for (int i = 0; i < kLogitsPerLane; ++i) {
    const int e = lane + kWarpSize * i;
    const float raw = e < num_experts ? logits[t * num_experts + e] : -INFINITY;
    v[i] = isnan(raw) ? -INFINITY : raw;
  }
  uint32_t taken = 0;  // bit i: expert lane + 32·i already selected (or does not exist)
#pragma unroll
  for (int i = 0; i < kLogitsPerLane; ++i)
    if (lane + kWarpSize * i >= num_experts) taken |= 1u << i;

  float sel_logit[kMaxTopK];
  int sel_idx[kMaxTopK];
#pragma unroll
  for (int k = 0; k < kMaxTopK; ++k) {
    sel_logit[k] = 0.0f;
    sel_idx[k] = 0;
    if (k < top_k) {
      float best_v = -INFINITY;
      int best_i = kMaxExperts;  // sentinel: ranks after every real expert of equal logit
#pragma unroll
      for (int i = 0; i < kLogitsPerLane; ++i) {
        const int e = lane + kWarpSize * i;
        if (!(taken & (1u << i)) && ranks_before(v[i], e, best_v, best_i)) {
          best_v = v[i];
          best_i = e;
        }
      }
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        const float ov = __shfl_xor_sync(detail::kFullMask, best_v, offset);
        const int oi = __shfl_xor_sync(detail::kFullMask, best_i, offset);
        if (ranks_before(ov, oi, best_v, best_i)) {
          best_v = ov;
          best_i = oi;
        }
      }
      // top_k ≤ num_experts, so an untaken expert always exists and best_i is a real index here.
      if (best_i % kWarpSize == lane) taken |= 1u << (best_i / kWarpSize);
      sel_logit[k] = best_v;
      sel_idx[k] = best_i;
    }
  }
  if (lane != 0) return;
  // ref::softmax over the top_k logits
  float max_val = sel_logit[0];
  for (int k = 1; k < top_k; ++k) max_val = fmaxf(max_val, sel_logit[k]);
  float p[kMaxTopK];
  double sum = 0.0;
  for (int k = 0; k < top_k; ++k) {
    p[k] = expf(sel_logit[k] - max_val);
    sum += p[k];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int k = 0; k < top_k; ++k) {
    expert_ids[t * top_k + k] = sel_idx[k];
    weights[t * top_k + k] = p[k] * inv;
  }
}

}  // namespace

cudaError_t router_topk_softmax(const float* logits, int64_t num_tokens, int64_t num_experts, int64_t top_k,
                                int32_t* expert_ids, float* weights, cudaStream_t stream) {
  if (logits == nullptr || expert_ids == nullptr || weights == nullptr || num_tokens <= 0 || num_experts <= 0 ||
      num_experts > kMaxExperts || top_k <= 0 || top_k > kMaxTopK || top_k > num_experts)
    return cudaErrorInvalidValue;
  const int64_t num_blocks = detail::ceil_div(num_tokens, kWarpsPerBlock);
  if (num_blocks > detail::kMaxGridX) return cudaErrorInvalidValue;
  router_topk_softmax_kernel<<<static_cast<unsigned>(num_blocks), kWarpsPerBlock * kWarpSize, 0, stream>>>(
      logits, num_tokens, static_cast<int>(num_experts), static_cast<int>(top_k), expert_ids, weights);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
