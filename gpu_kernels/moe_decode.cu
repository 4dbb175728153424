// MoE experts for decode-size batches: out[t] (+)= Σ_j w[t][j] · expert_{e[t][j]}(x[t]) over the resident experts,
// expert(x) = down · swiglu_oai(gate·x + bg, up·x + bu) + bd (runtime/exec/forward_reference.cpp moe_block).
// Parallelization, atomics-free in three launches:
//   1. grid (⌈ffn_dim / 4⌉, pair): one warp per ffn row computes the gate and the up row dots for one (token, k)
//      pair (warp GEMV as matvec.cu) and writes swiglu to act[pair][row]; a pair whose expert is not resident
//      (slot −1) returns at once.
//   2. grid (⌈hidden_dim / 4⌉, pair): one warp per hidden row: y[pair][row] = down_row · act[pair] + bd.
//   3. one thread per (token, element): the weighted sum over k in order, then the store or the add into out.
// pair = t · top_k + j ≤ 65535 (gridDim.y); larger batches belong to moe_experts_grouped.

#include <algorithm>
#include <climits>

#include "gpu_kernels/moe_common.cuh"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kWarpsPerBlock = 4;

template <TensorType Type>
__global__ void moe_gate_up_kernel(const uint8_t* __restrict__ gate, const uint8_t* __restrict__ up,
                                   const float* __restrict__ gate_bias, const float* __restrict__ up_bias,
                                   const int32_t* __restrict__ slot_of_expert, int64_t hidden_dim, int64_t ffn_dim,
                                   int64_t row_bytes, const float* __restrict__ x,
                                   const int32_t* __restrict__ expert_ids, int64_t top_k, float* __restrict__ act) {
  const int64_t pair = blockIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int32_t slot = slot_of_expert[expert_ids[pair]];
  if (slot < 0 || row >= ffn_dim) return;  // warp-uniform
  const float* xt = x + (pair / top_k) * hidden_dim;
  const int64_t w_row = static_cast<int64_t>(slot) * ffn_dim + row;
  float g = detail::warp_dot_row<Type>(gate + w_row * row_bytes, xt, hidden_dim, lane);
  float u = detail::warp_dot_row<Type>(up + w_row * row_bytes, xt, hidden_dim, lane);
  if (lane != 0) return;
  if (gate_bias != nullptr) g += gate_bias[w_row];
  if (up_bias != nullptr) u += up_bias[w_row];
  act[pair * ffn_dim + row] = detail::swiglu_oai(g, u);
}

template <TensorType Type>
__global__ void moe_down_kernel(const uint8_t* __restrict__ down, const float* __restrict__ down_bias,
                                const int32_t* __restrict__ slot_of_expert, int64_t hidden_dim, int64_t ffn_dim,
                                int64_t row_bytes, const int32_t* __restrict__ expert_ids,
                                const float* __restrict__ act, float* __restrict__ y) {
  const int64_t pair = blockIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int32_t slot = slot_of_expert[expert_ids[pair]];
  if (slot < 0 || row >= hidden_dim) return;  // warp-uniform
  const int64_t w_row = static_cast<int64_t>(slot) * hidden_dim + row;
  const float v = detail::warp_dot_row<Type>(down + w_row * row_bytes, act + pair * ffn_dim, ffn_dim, lane);
  if (lane == 0) y[pair * hidden_dim + row] = v + (down_bias != nullptr ? down_bias[w_row] : 0.0f);
}

__global__ void moe_weighted_sum_kernel(const int32_t* __restrict__ slot_of_expert, int64_t num_experts,
                                        const int32_t* __restrict__ expert_ids, const float* __restrict__ weights,
                                        const float* __restrict__ y, int64_t num_tokens, int64_t top_k,
                                        int64_t hidden_dim, bool accumulate, float* __restrict__ out) {
  const int64_t n = num_tokens * hidden_dim;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = e / hidden_dim;
    const int64_t i = e % hidden_dim;
    float sum = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t pair = t * top_k + j;
      const int32_t expert = expert_ids[pair];
      if (expert >= 0 && expert < num_experts && slot_of_expert[expert] >= 0)
        sum += weights[pair] * y[pair * hidden_dim + i];
    }
    out[e] = accumulate ? out[e] + sum : sum;
  }
}

}  // namespace

namespace detail {

cudaError_t launch_moe_weighted_sum(const int32_t* slot_of_expert, int64_t num_experts, const int32_t* expert_ids,
                                    const float* weights, const float* y, int64_t num_tokens, int64_t top_k,
                                    int64_t hidden_dim, bool accumulate, float* out, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t num_blocks = std::min<int64_t>(ceil_div(num_tokens * hidden_dim, kThreads), 65536);
  moe_weighted_sum_kernel<<<static_cast<unsigned>(num_blocks), kThreads, 0, stream>>>(
      slot_of_expert, num_experts, expert_ids, weights, y, num_tokens, top_k, hidden_dim, accumulate, out);
  return launch_status();
}

}  // namespace detail

int64_t moe_scratch_floats(int64_t num_tokens, int64_t top_k, int64_t ffn_dim, int64_t hidden_dim) {
  const int64_t num_pairs = num_tokens * top_k;
  return num_pairs * (ffn_dim + hidden_dim) + num_pairs + 2 * (detail::kMaxExperts + 1);
}

cudaError_t moe_experts_decode(const ExpertWeights& experts, const float* x, const int32_t* expert_ids,
                               const float* weights, int64_t num_tokens, int64_t top_k, bool accumulate,
                               float* scratch, float* out, cudaStream_t stream) {
  if (!detail::moe_args_ok(experts, x, expert_ids, weights, num_tokens, top_k, scratch, out) ||
      num_tokens * top_k > detail::kMaxGridY)
    return cudaErrorInvalidValue;
  const int64_t num_pairs = num_tokens * top_k;
  const int64_t hidden_dim = experts.hidden_dim;
  const int64_t ffn_dim = experts.ffn_dim;
  float* act = scratch;                       // (num_pairs, ffn_dim)
  float* y = scratch + num_pairs * ffn_dim;   // (num_pairs, hidden_dim)
  const auto gate_row_bytes = static_cast<int64_t>(tensor_row_bytes(experts.type, static_cast<uint64_t>(hidden_dim)));
  const auto down_row_bytes = static_cast<int64_t>(tensor_row_bytes(experts.type, static_cast<uint64_t>(ffn_dim)));
  const cudaError_t err = detail::dispatch_type(experts.type, [&](auto type_tag) {
    constexpr TensorType kType = decltype(type_tag)::value;
    const dim3 grid1(static_cast<unsigned>(detail::ceil_div(ffn_dim, kWarpsPerBlock)),
                     static_cast<unsigned>(num_pairs));
    moe_gate_up_kernel<kType><<<grid1, kWarpsPerBlock * kWarpSize, 0, stream>>>(
        static_cast<const uint8_t*>(experts.gate), static_cast<const uint8_t*>(experts.up), experts.gate_bias,
        experts.up_bias, experts.slot_of_expert, hidden_dim, ffn_dim, gate_row_bytes, x, expert_ids, top_k, act);
    if (const cudaError_t e = detail::launch_status(); e != cudaSuccess) return e;
    const dim3 grid2(static_cast<unsigned>(detail::ceil_div(hidden_dim, kWarpsPerBlock)),
                     static_cast<unsigned>(num_pairs));
    moe_down_kernel<kType><<<grid2, kWarpsPerBlock * kWarpSize, 0, stream>>>(
        static_cast<const uint8_t*>(experts.down), experts.down_bias, experts.slot_of_expert, hidden_dim, ffn_dim,
        down_row_bytes, expert_ids, act, y);
    return detail::launch_status();
  });
  if (err != cudaSuccess) return err;
  // The ids are valid model expert ids here (documented): no upper bound to check against.
  return detail::launch_moe_weighted_sum(experts.slot_of_expert, INT32_MAX, expert_ids, weights, y, num_tokens, top_k,
                                         hidden_dim, accumulate, out, stream);
}

}  // namespace hetmoe::gpu
