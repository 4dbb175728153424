// Elementwise y = a + b (+ c): the residual add of the attention output or of the two partial expert sums.
// Parallelization: one thread per element, grid-stride loop. The sum is taken as (a + b) + c in f32, the order the
// hybrid forward pass documents. y may alias any input (each element is read before it is written by one thread).

#include <algorithm>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void add_vectors_kernel(const float* a, const float* b, const float* c, int64_t n, float* y) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    float v = a[i] + b[i];
    if (c != nullptr) v += c[i];
    y[i] = v;
  }
}

}  // namespace

cudaError_t add_vectors(const float* a, const float* b, const float* c, int64_t n, float* y, cudaStream_t stream) {
  if (a == nullptr || b == nullptr || y == nullptr || n <= 0) return cudaErrorInvalidValue;
  const int64_t num_blocks = std::min<int64_t>(detail::ceil_div(n, kThreads), 65536);
  add_vectors_kernel<<<static_cast<unsigned>(num_blocks), kThreads, 0, stream>>>(a, b, c, n, y);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
