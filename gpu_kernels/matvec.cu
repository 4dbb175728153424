// GEMV y = W·x + bias for decode and small batches (attention projections, router, unembedding), weights of any
// supported type read in their GGUF layout.
// Parallelization: one warp per weight row (4 warps = 4 rows per 128-thread block, grid.x = ⌈rows / 4⌉); the lanes
// stride over the row 4 elements at a time (128 consecutive elements per warp step, vector loads for float types,
// byte loads for the unaligned MXFP4 blocks) and reduce with shuffles. Q8_0 (the attention and unembedding matrices
// of gpt-oss) has its own kernel: each lane takes whole 34-byte blocks (lanes l, l + 32, …), loads the scale once
// and the 32 quants with nine aligned 32-bit loads (detail::load_q8_0_block), and multiplies the block's sum of
// q·x by the scale once. Each weight element is loaded once per chunk of up to kTokensPerChunk tokens (grid.y =
// token chunks), so a decode batch reads W once.

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kWarpsPerBlock = 4;
constexpr int kTokensPerChunk = 8;

template <TensorType Type>
__global__ void matvec_kernel(const uint8_t* __restrict__ w, int64_t row_bytes, int64_t num_rows, int64_t num_cols,
                              const float* __restrict__ x, int64_t num_tokens, const float* __restrict__ bias,
                              float* __restrict__ y) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= num_rows) return;  // warp-uniform: no block-level synchronization below
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokensPerChunk;
  const int n = static_cast<int>(num_tokens - t0 < kTokensPerChunk ? num_tokens - t0 : kTokensPerChunk);
  const uint8_t* w_row = w + row * row_bytes;
  float acc[kTokensPerChunk] = {};
  for (int64_t k = 4 * lane; k < num_cols; k += 4 * kWarpSize) {
    float wv[4];
    detail::RowLoader<Type>::load4(w_row, k, wv);
#pragma unroll
    for (int t = 0; t < kTokensPerChunk; ++t) {
      if (t < n) {
        const float4 xv = __ldg(reinterpret_cast<const float4*>(x + (t0 + t) * num_cols + k));
        acc[t] += wv[0] * xv.x + wv[1] * xv.y + wv[2] * xv.z + wv[3] * xv.w;
      }
    }
  }
  const float b = bias != nullptr ? bias[row] : 0.0f;
#pragma unroll
  for (int t = 0; t < kTokensPerChunk; ++t) {
    const float sum = detail::warp_sum(acc[t]);  // every lane takes part: the loop bound is not per-lane
    if (t < n && lane == 0) y[(t0 + t) * num_rows + row] = sum + b;
  }
}

__global__ void matvec_q8_0_kernel(const uint8_t* __restrict__ w, int64_t row_bytes, int64_t num_rows,
                                   int64_t num_cols, const float* __restrict__ x, int64_t num_tokens,
                                   const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= num_rows) return;  // warp-uniform
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokensPerChunk;
  const int n = static_cast<int>(num_tokens - t0 < kTokensPerChunk ? num_tokens - t0 : kTokensPerChunk);
  const uint8_t* w_row = w + row * row_bytes;
  const int64_t num_blocks = num_cols / 32;
  float acc[kTokensPerChunk] = {};
  for (int64_t b = lane; b < num_blocks; b += kWarpSize) {
    float d;
    uint32_t q[8];
    detail::load_q8_0_block(w_row + b * kQ8_0BlockBytes, d, q);
    float qf[32];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) qf[4 * i + j] = detail::q8_0_quant(q[i], j);
#pragma unroll
    for (int t = 0; t < kTokensPerChunk; ++t) {
      if (t < n) {
        const auto* xv = reinterpret_cast<const float4*>(x + (t0 + t) * num_cols + b * 32);
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4 v = __ldg(xv + i);
          sum += qf[4 * i] * v.x + qf[4 * i + 1] * v.y + qf[4 * i + 2] * v.z + qf[4 * i + 3] * v.w;
        }
        acc[t] += d * sum;
      }
    }
  }
  const float bv = bias != nullptr ? bias[row] : 0.0f;
#pragma unroll
  for (int t = 0; t < kTokensPerChunk; ++t) {
    const float sum = detail::warp_sum(acc[t]);
    if (t < n && lane == 0) y[(t0 + t) * num_rows + row] = sum + bv;
  }
}

}  // namespace

cudaError_t matvec(TensorType w_type, const void* w, int64_t num_rows, int64_t num_cols, const float* x,
                   int64_t num_tokens, const float* bias, float* y, cudaStream_t stream) {
  if (!detail::weights_shape_ok(w_type, w, num_cols) || num_rows <= 0 || num_tokens <= 0 || x == nullptr ||
      y == nullptr || !detail::is_aligned(x, 16))
    return cudaErrorInvalidValue;
  const int64_t num_chunks = detail::ceil_div(num_tokens, kTokensPerChunk);
  const int64_t num_blocks = detail::ceil_div(num_rows, kWarpsPerBlock);
  if (num_chunks > detail::kMaxGridY || num_blocks > detail::kMaxGridX) return cudaErrorInvalidValue;
  const auto row_bytes = static_cast<int64_t>(tensor_row_bytes(w_type, static_cast<uint64_t>(num_cols)));
  const dim3 grid(static_cast<unsigned>(num_blocks), static_cast<unsigned>(num_chunks));
  if (w_type == TensorType::kQ8_0) {
    matvec_q8_0_kernel<<<grid, kWarpsPerBlock * kWarpSize, 0, stream>>>(static_cast<const uint8_t*>(w), row_bytes,
                                                                        num_rows, num_cols, x, num_tokens, bias, y);
    return detail::launch_status();
  }
  return detail::dispatch_type(w_type, [&](auto type_tag) {
    matvec_kernel<decltype(type_tag)::value><<<grid, kWarpsPerBlock * kWarpSize, 0, stream>>>(
        static_cast<const uint8_t*>(w), row_bytes, num_rows, num_cols, x, num_tokens, bias, y);
    return detail::launch_status();
  });
}

}  // namespace hetmoe::gpu
