#pragma once
// Private helpers shared by moe_decode.cu and moe_grouped.cu: SwiGLU-OAI on the device, the argument checks and the
// weighted-sum kernel that both MoE launchers end with.
//
// Scratch layout (floats; both launchers, num_pairs = num_tokens · top_k):
//   act     (num_pairs, ffn_dim)     SwiGLU outputs (decode: pair order; grouped: expert-sorted order)
//   y       (num_pairs, hidden_dim)  expert outputs before weighting, pair order (token-major, then k)
//   sorted  (num_pairs) int32        grouped only: pair index of each sorted row
//   offsets (kMaxExperts + 1) int32  grouped only: first sorted row of each expert
//   tiles   (kMaxExperts + 1) int32  grouped only: first row tile of each expert

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu::detail {

inline constexpr int64_t kMaxExperts = 256;

/// ref::swiglu_oai for one element (α = 1.702, limit 7: gpt-oss-spec.md §3 step 8).
__device__ __forceinline__ float swiglu_oai(float gate, float up) {
  constexpr float kAlpha = 1.702f;
  constexpr float kLimit = 7.0f;
  const float g = fminf(gate, kLimit);
  const float a = fminf(fmaxf(up, -kLimit), kLimit);
  const float glu = g / (1.0f + expf(-kAlpha * g));
  return glu * (a + 1.0f);
}

/// Host-side checks common to both MoE launchers.
inline bool moe_args_ok(const ExpertWeights& ew, const float* x, const int32_t* expert_ids, const float* weights,
                        int64_t num_tokens, int64_t top_k, const float* scratch, const float* out) {
  return weights_shape_ok(ew.type, ew.gate, ew.hidden_dim) && weights_shape_ok(ew.type, ew.up, ew.hidden_dim) &&
         weights_shape_ok(ew.type, ew.down, ew.ffn_dim) && ew.slot_of_expert != nullptr && ew.ffn_dim > 0 &&
         ew.hidden_dim > 0 && x != nullptr && is_aligned(x, 16) && expert_ids != nullptr && weights != nullptr &&
         num_tokens > 0 && top_k > 0 && scratch != nullptr && is_aligned(scratch, 16) && out != nullptr;
}

/// out[t][i] (+)= Σ_{j < top_k, expert resident} weights[t][j] · y[t·top_k + j][i], j in order (the reference's
/// accumulation order). y: (num_tokens · top_k, hidden_dim). Ids outside [0, num_experts) count as not resident.
cudaError_t launch_moe_weighted_sum(const int32_t* slot_of_expert, int64_t num_experts, const int32_t* expert_ids,
                                    const float* weights, const float* y, int64_t num_tokens, int64_t top_k,
                                    int64_t hidden_dim, bool accumulate, float* out, cudaStream_t stream);

}  // namespace hetmoe::gpu::detail
