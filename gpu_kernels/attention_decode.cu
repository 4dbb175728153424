// Decode attention with sinks over the KV cache (f16, q8_0 or q4_0 K and V; gpt-oss-spec.md §3 step 4,
// runtime/exec/forward_reference.cpp):
// flash-decoding. Token t at position pos sees the n = min(pos + 1, window) keys at positions pos − n + 1 .. pos
// (slot = position % capacity: ring wrap on sliding layers); query head h reads KV head h / (num_heads /
// num_kv_heads); s_j = (q·k_j) / sqrt(head_dim); out = Σ_j exp(s_j − M) v_j / (Σ_j exp(s_j − M) + exp(sink − M)).
// Parallelization, pass 1: grid (split, head, token), one 128-thread block per split of kKeysPerSplit keys; each of
// the 4 warps walks every 4th key of the split with an online softmax (lane l holds the head_dim/32 consecutive
// dims from l·head_dim/32: one coalesced warp read per K or V row; in a q8_0 / q4_0 row those dims lie in one
// 32-value block, dequantized by the lane as cpu::dequantize_kv_* does), then the block merges its warps into a
// partial (max, sum, unnormalized output) in scratch. The last split also takes every key past the planned splits,
// so a position above max_position only costs time, not correctness.
// Pass 2: grid (head, token), one head_dim-thread block merges the splits and the sink logit.
// Supported head_dim: 32, 64 and 128 (cudaErrorInvalidValue otherwise).

#include <algorithm>
#include <cmath>

#include "gpu_kernels/attention_common.cuh"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kKeysPerSplit = 128;
constexpr int kWarps = 4;

int64_t num_splits_for(int64_t max_keys) { return max_keys <= 0 ? 1 : detail::ceil_div(max_keys, kKeysPerSplit); }

// Scratch: partial outputs (token, head, split, head_dim), then (max, sum) pairs (token, head, split, 2).
template <int HeadDim>
__global__ void attention_decode_split_kernel(const float* __restrict__ q, const uint8_t* __restrict__ k_cache,
                                              const uint8_t* __restrict__ v_cache, KvType k_type, KvType v_type,
                                              int64_t k_row_bytes, int64_t v_row_bytes, int32_t capacity,
                                              int32_t window,
                                              int num_heads, int group, const int32_t* __restrict__ positions,
                                              float scale, int num_splits, float* __restrict__ partial_out,
                                              float* __restrict__ partial_ml) {
  constexpr int kDims = HeadDim / kWarpSize;  // consecutive head dims per lane
  __shared__ float warp_m[kWarps];
  __shared__ float warp_l[kWarps];
  __shared__ float warp_acc[kWarps][HeadDim];

  const int split = blockIdx.x;
  const int h = blockIdx.y;
  const int64_t t = blockIdx.z;
  const int g = h / group;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;

  const int64_t pos = positions[t];
  const int64_t num_keys = pos + 1 < window ? pos + 1 : window;
  const int64_t first = pos + 1 - num_keys;
  const int64_t key_begin = static_cast<int64_t>(split) * kKeysPerSplit;
  int64_t key_end = key_begin + kKeysPerSplit;
  if (split == num_splits - 1 || key_end > num_keys) key_end = num_keys;

  const float* qh = q + (t * num_heads + h) * HeadDim + lane * kDims;
  float qv[kDims];
#pragma unroll
  for (int i = 0; i < kDims; ++i) qv[i] = qh[i];

  float m = -INFINITY;
  float l = 0.0f;
  float acc[kDims] = {};

  for (int64_t j = key_begin + warp; j < key_end; j += kWarps) {
    const int64_t slot = (first + j) % capacity;
    float kf[kDims], vf[kDims];
    detail::load_kv_values<kDims>(k_type, k_cache + detail::kv_row_offset(g, slot, capacity, k_row_bytes),
                                  lane * kDims, kf);
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) dot += qv[i] * kf[i];
    const float s = detail::warp_sum(dot) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // m = −inf on the first key: corr = 0 and l, acc are 0
    const float p = expf(s - m_new);
    l = l * corr + p;
    detail::load_kv_values<kDims>(v_type, v_cache + detail::kv_row_offset(g, slot, capacity, v_row_bytes),
                                  lane * kDims, vf);
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[i] = acc[i] * corr + p * vf[i];
    m = m_new;
  }

  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kDims; ++i) warp_acc[warp][lane * kDims + i] = acc[i];
  __syncthreads();

  float block_m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_m = fmaxf(block_m, warp_m[w]);
  const int64_t slot_idx = (t * num_heads + h) * num_splits + split;
  for (int d = threadIdx.x; d < HeadDim; d += blockDim.x) {
    float o = 0.0f;
    if (block_m != -INFINITY)
      for (int w = 0; w < kWarps; ++w)
        if (warp_m[w] != -INFINITY) o += warp_acc[w][d] * expf(warp_m[w] - block_m);
    partial_out[slot_idx * HeadDim + d] = o;
  }
  if (threadIdx.x == 0) {
    float block_l = 0.0f;
    if (block_m != -INFINITY)
      for (int w = 0; w < kWarps; ++w)
        if (warp_m[w] != -INFINITY) block_l += warp_l[w] * expf(warp_m[w] - block_m);
    partial_ml[2 * slot_idx] = block_m;
    partial_ml[2 * slot_idx + 1] = block_l;
  }
}

template <int HeadDim>
__global__ void attention_decode_merge_kernel(const float* __restrict__ partial_out,
                                              const float* __restrict__ partial_ml, const float* __restrict__ sinks,
                                              int num_heads, int num_splits, float* __restrict__ out) {
  const int h = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int d = threadIdx.x;
  const int64_t base = (t * num_heads + h) * num_splits;
  const float sink = sinks != nullptr ? sinks[h] : -INFINITY;  // a raw logit, not scaled
  float big_m = sink;
  for (int s = 0; s < num_splits; ++s) big_m = fmaxf(big_m, partial_ml[2 * (base + s)]);
  float z = big_m != -INFINITY && sink != -INFINITY ? expf(sink - big_m) : 0.0f;
  float o = 0.0f;
  for (int s = 0; s < num_splits; ++s) {
    const float ms = partial_ml[2 * (base + s)];
    if (ms == -INFINITY) continue;  // an empty split
    const float w = expf(ms - big_m);
    z += partial_ml[2 * (base + s) + 1] * w;
    o += partial_out[(base + s) * HeadDim + d] * w;
  }
  out[(t * num_heads + h) * HeadDim + d] = z > 0.0f ? o / z : 0.0f;
}

template <int HeadDim>
cudaError_t launch_decode(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                          int64_t num_heads, int64_t num_kv_heads, const int32_t* positions, int64_t num_splits,
                          float* scratch, float* out, cudaStream_t stream) {
  float* partial_out = scratch;
  float* partial_ml = scratch + num_tokens * num_heads * num_splits * HeadDim;
  const float scale = 1.0f / sqrtf(static_cast<float>(HeadDim));
  const dim3 grid1(static_cast<unsigned>(num_splits), static_cast<unsigned>(num_heads),
                   static_cast<unsigned>(num_tokens));
  attention_decode_split_kernel<HeadDim><<<grid1, kWarps * kWarpSize, 0, stream>>>(
      q, static_cast<const uint8_t*>(kv.k), static_cast<const uint8_t*>(kv.v), kv.k_type, kv.v_type,
      kv_type_row_bytes(kv.k_type, HeadDim), kv_type_row_bytes(kv.v_type, HeadDim), kv.capacity, kv.window,
      static_cast<int>(num_heads), static_cast<int>(num_heads / num_kv_heads), positions, scale,
      static_cast<int>(num_splits), partial_out, partial_ml);
  if (const cudaError_t err = detail::launch_status(); err != cudaSuccess) return err;
  const dim3 grid2(static_cast<unsigned>(num_heads), static_cast<unsigned>(num_tokens));
  attention_decode_merge_kernel<HeadDim><<<grid2, HeadDim, 0, stream>>>(
      partial_out, partial_ml, sinks, static_cast<int>(num_heads), static_cast<int>(num_splits), out);
  return detail::launch_status();
}

}  // namespace

int64_t attention_scratch_floats(int64_t num_tokens, int64_t num_heads, int64_t head_dim, int64_t max_keys) {
  return num_tokens * num_heads * num_splits_for(max_keys) * (head_dim + 2);
}

cudaError_t attention_decode(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                             int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, const int32_t* positions,
                             int32_t max_position, float* scratch, float* out, cudaStream_t stream) {
  if (!detail::attention_args_ok(q, kv, num_tokens, num_heads, num_kv_heads, positions, out) || scratch == nullptr ||
      max_position < 0 || num_tokens > detail::kMaxGridY)
    return cudaErrorInvalidValue;
  const int64_t max_keys = std::min<int64_t>(static_cast<int64_t>(max_position) + 1, kv.window);
  const int64_t num_splits = num_splits_for(max_keys);
  switch (head_dim) {
    case 32:
      return launch_decode<32>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, num_splits, scratch,
                               out, stream);
    case 64:
      return launch_decode<64>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, num_splits, scratch,
                               out, stream);
    case 128:
      return launch_decode<128>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, num_splits, scratch,
                                out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace hetmoe::gpu
