// Embedding gather out[t] = dequant(table)[token_ids[t]], exactly ref::dequantize_row of that row.
// Parallelization: one 256-thread block per token (grid.x = tokens), each thread dequantizes a strided set of
// single elements (element loads: the hidden size only has to be a multiple of the type's block size).

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 256;

template <TensorType Type>
__global__ void embedding_gather_kernel(const uint8_t* __restrict__ table, int64_t row_bytes, int64_t hidden_dim,
                                        const int32_t* __restrict__ token_ids, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const uint8_t* row = table + static_cast<int64_t>(token_ids[t]) * row_bytes;
  for (int64_t k = threadIdx.x; k < hidden_dim; k += kThreads)
    out[t * hidden_dim + k] = detail::RowLoader<Type>::load1(row, k);
}

}  // namespace

cudaError_t embedding_gather(TensorType type, const void* table, int64_t hidden_dim, const int32_t* token_ids,
                             int64_t num_tokens, float* out, cudaStream_t stream) {
  if (!detail::is_supported_type(type) || table == nullptr || token_ids == nullptr || out == nullptr ||
      hidden_dim <= 0 || num_tokens <= 0 || num_tokens > detail::kMaxGridX ||
      hidden_dim % tensor_type_traits(type).block_elems != 0)
    return cudaErrorInvalidValue;
  if ((type == TensorType::kF32 && !detail::is_aligned(table, 4)) ||
      (type != TensorType::kMXFP4 && !detail::is_aligned(table, 2)))
    return cudaErrorInvalidValue;
  const auto row_bytes = static_cast<int64_t>(tensor_row_bytes(type, static_cast<uint64_t>(hidden_dim)));
  return detail::dispatch_type(type, [&](auto type_tag) {
    embedding_gather_kernel<decltype(type_tag)::value><<<static_cast<unsigned>(num_tokens), kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(table), row_bytes, hidden_dim, token_ids, out);
    return detail::launch_status();
  });
}

}  // namespace hetmoe::gpu
