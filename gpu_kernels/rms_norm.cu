// RMSNorm y = x / sqrt(mean(x²) + eps) · weight, as ref::rms_norm: the sum of squares in double, the scale in f32.
// Parallelization: one 256-thread block per row; each thread sums the squares of a strided slice in double, a warp
// shuffle and a shared-memory step reduce them, then every thread scales its slice. The row is read completely
// before any element is written, so y may alias x.

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kThreads = 256;

__global__ void rms_norm_kernel(const float* x, const float* __restrict__ weight, int64_t dim, float eps, float* y) {
  __shared__ double warp_sums[kThreads / kWarpSize];
  __shared__ float row_scale;
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
  sum = detail::warp_sum(sum);
  if (threadIdx.x % kWarpSize == 0) warp_sums[threadIdx.x / kWarpSize] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / kWarpSize; ++w) total += warp_sums[w];
    const float mean = static_cast<float>(total / static_cast<double>(dim));
    row_scale = 1.0f / sqrtf(mean + eps);
  }
  __syncthreads();
  const float scale = row_scale;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) yr[i] = xr[i] * scale * weight[i];
}

}  // namespace

cudaError_t rms_norm(const float* x, const float* weight, int64_t num_rows, int64_t dim, float eps, float* y,
                     cudaStream_t stream) {
  if (x == nullptr || weight == nullptr || y == nullptr || num_rows <= 0 || dim <= 0 ||
      num_rows > detail::kMaxGridX || !(eps >= 0.0f))
    return cudaErrorInvalidValue;
  rms_norm_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(x, weight, dim, eps, y);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
