// Dense prefill projections through cuBLAS: weights are dequantized once to f16 (dequantize_to_f16), activations
// are converted to f16 per call, and cublasGemmEx multiplies them with f32 accumulation (tensor cores on sm_75+),
// as llama.cpp's cuBLAS path does; the bias is added by a small elementwise kernel.
// Parallelization: dequantize_to_f16 and the conversions use one thread per 4 (dequantize) or 1 element(s) in
// grid-stride loops; the GEMM is cuBLAS's.

#include <cublas_v2.h>

#include <algorithm>
#include <climits>

#include "gpu_kernels/cublas_library.h"
#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 256;

int64_t grid_stride_blocks(int64_t n) { return std::min<int64_t>(detail::ceil_div(n, kThreads), 65536); }

template <TensorType Type>
__global__ void dequantize_f16_kernel(const uint8_t* __restrict__ src, int64_t row_bytes, int64_t num_rows,
                                      int64_t num_cols, __half* __restrict__ dst) {
  const int64_t groups_per_row = num_cols / 4;
  const int64_t num_groups = num_rows * groups_per_row;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < num_groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = g / groups_per_row;
    const int64_t k = (g % groups_per_row) * 4;
    float v[4];
    detail::RowLoader<Type>::load4(src + row * row_bytes, k, v);
    __half* out = dst + row * num_cols + k;
    // two 4-byte stores: dst rows of a multiple of 4 halves keep 8-byte alignment, but two stores avoid relying on it
    reinterpret_cast<__half2*>(out)[0] = __floats2half2_rn(v[0], v[1]);
    reinterpret_cast<__half2*>(out)[1] = __floats2half2_rn(v[2], v[3]);
  }
}

__global__ void f32_to_f16_kernel(const float* __restrict__ src, int64_t n, __half* __restrict__ dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    dst[i] = __float2half_rn(src[i]);
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t num_tokens,
                                int64_t num_rows) {
  const int64_t n = num_tokens * num_rows;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    y[i] += bias[i % num_rows];
}

cudaError_t cublas_to_cuda(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return cudaSuccess;
    case CUBLAS_STATUS_ALLOC_FAILED:
      return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_INVALID_VALUE:
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return cudaErrorInitializationError;
    default:
      return cudaErrorUnknown;
  }
}

}  // namespace

cudaError_t dequantize_to_f16(TensorType type, const void* src, int64_t num_rows, int64_t num_cols, void* dst_f16,
                              cudaStream_t stream) {
  if (!detail::weights_shape_ok(type, src, num_cols) || num_rows <= 0 || dst_f16 == nullptr ||
      !detail::is_aligned(dst_f16, 4))
    return cudaErrorInvalidValue;
  const int64_t num_blocks = grid_stride_blocks(num_rows * (num_cols / 4));
  const auto row_bytes = static_cast<int64_t>(tensor_row_bytes(type, static_cast<uint64_t>(num_cols)));
  return detail::dispatch_type(type, [&](auto type_tag) {
    dequantize_f16_kernel<decltype(type_tag)::value><<<static_cast<unsigned>(num_blocks), kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(src), row_bytes, num_rows, num_cols, static_cast<__half*>(dst_f16));
    return detail::launch_status();
  });
}

cudaError_t gemm_f16(cublasHandle_t cublas, const void* w_f16, int64_t num_rows, int64_t num_cols, const float* x,
                     int64_t num_tokens, const float* bias, void* x_f16, float* y, cudaStream_t stream) {
  if (cublas == nullptr || w_f16 == nullptr || x == nullptr || x_f16 == nullptr || y == nullptr || num_rows <= 0 ||
      num_cols <= 0 || num_tokens <= 0 || num_rows > INT_MAX || num_cols > INT_MAX || num_tokens > INT_MAX ||
      !detail::is_aligned(w_f16, 2) || !detail::is_aligned(x_f16, 2))
    return cudaErrorInvalidValue;
  f32_to_f16_kernel<<<static_cast<unsigned>(grid_stride_blocks(num_tokens * num_cols)), kThreads, 0, stream>>>(
      x, num_tokens * num_cols, static_cast<__half*>(x_f16));
  if (const cudaError_t err = detail::launch_status(); err != cudaSuccess) return err;
  const CublasLibrary* lib = loaded_cublas();  // loaded already: the handle was created through it
  if (lib == nullptr) return cudaErrorInitializationError;
  if (const cudaError_t err = cublas_to_cuda(lib->set_stream(cublas, stream)); err != cudaSuccess) return err;
  // Column-major view: yᵀ (num_rows × num_tokens, ld num_rows) = W (stored num_cols × num_rows, transposed) ·
  // xᵀ (num_cols × num_tokens, ld num_cols).
  const float alpha = 1.0f, beta = 0.0f;
  const auto m = static_cast<int>(num_rows), n = static_cast<int>(num_tokens), k = static_cast<int>(num_cols);
  if (const cudaError_t err = cublas_to_cuda(lib->gemm_ex(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w_f16,
                                                          CUDA_R_16F, k, x_f16, CUDA_R_16F, k, &beta, y, CUDA_R_32F,
                                                          m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      err != cudaSuccess)
    return err;
  if (bias == nullptr) return cudaSuccess;
  add_bias_kernel<<<static_cast<unsigned>(grid_stride_blocks(num_tokens * num_rows)), kThreads, 0, stream>>>(
      y, bias, num_tokens, num_rows);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
