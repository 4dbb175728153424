// MoE experts for prefill batches as a grouped GEMM over (token, k) pairs sorted by expert: the same result as
// moe_experts_decode (moe_decode.cu), with each weight tile read once per 32 pairs instead of once per pair.
// Parallelization:
//   1. sort: one 1024-thread block counts the pairs of each resident expert (shared-memory atomics), scans the
//      counts into row offsets and row-tile offsets, and scatters pair indices into expert-sorted order. The order
//      inside an expert is arbitrary; every output element is computed by one thread in a fixed order, so results
//      do not depend on it.
//   2. gate/up GEMM: grid (row tile of pairs, ⌈ffn_dim / 64⌉); block (tile of kTileM = 32 sorted pairs of one expert)
//      × (64 ffn rows), 256 threads, K in steps of 32: the pairs' x rows and the dequantized gate and up rows are
//      staged in shared memory (weight rows padded to 33 floats: conflict-free column reads); thread (n, ty) owns
//      row n for pairs ty, ty + 4, …; the epilogue adds the biases and writes swiglu_oai to act[sorted row].
//      F32/F16/BF16 widths need only be multiples of 4: the last K step is partial, and its columns past the row
//      are staged as zeros (every load is guarded; a 4-element load is wholly inside or wholly past the row).
//      Blocks past the last tile exit (the grid is sized for the worst case, ⌈pairs / 32⌉ + experts tiles).
//   3. down GEMM: the same tiling over act (sorted rows), writing y[pair] (+ bias) in pair order.
//   4. the weighted sum over k (moe_decode.cu), atomics-free.

#include <algorithm>
#include <climits>

#include "gpu_kernels/moe_common.cuh"

namespace hetmoe::gpu {
namespace {

constexpr int kSortThreads = 1024;
constexpr int kTileM = 32;   // pairs per tile
constexpr int kTileN = 64;   // output rows per tile
constexpr int kTileK = 32;   // one quantization block
constexpr int kThreads = 256;
constexpr int kRowsPerThread = kTileM / (kThreads / kTileN);  // 8

struct SortedPairs {
  int32_t* sorted;   // (num_pairs) pair index of each sorted row
  int32_t* offsets;  // (num_experts + 1) first sorted row of each expert
  int32_t* tiles;    // (num_experts + 1) first row tile of each expert
};

__global__ void __launch_bounds__(kSortThreads)
    moe_sort_kernel(const int32_t* __restrict__ expert_ids, const int32_t* __restrict__ slot_of_expert,
                    int64_t num_pairs, int num_experts, SortedPairs s) {
  __shared__ int counts[detail::kMaxExperts];
  __shared__ int cursor[detail::kMaxExperts];
  for (int e = threadIdx.x; e < num_experts; e += kSortThreads) counts[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < num_pairs; p += kSortThreads) {
    const int e = expert_ids[p];
    if (e >= 0 && e < num_experts && slot_of_expert[e] >= 0) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int row = 0, tile = 0;
    for (int e = 0; e < num_experts; ++e) {
      s.offsets[e] = row;
      s.tiles[e] = tile;
      cursor[e] = row;
      row += counts[e];
      tile += (counts[e] + kTileM - 1) / kTileM;
    }
    s.offsets[num_experts] = row;
    s.tiles[num_experts] = tile;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < num_pairs; p += kSortThreads) {
    const int e = expert_ids[p];
    if (e >= 0 && e < num_experts && slot_of_expert[e] >= 0)
      s.sorted[atomicAdd(&cursor[e], 1)] = static_cast<int32_t>(p);
  }
}

// kGateUp: A = x rows of the sorted pairs' tokens, W = gate and up of the expert, writes act[sorted row].
// !kGateUp: A = act[sorted row], W = down, writes y[pair].
template <TensorType Type, bool kGateUp>
__global__ void __launch_bounds__(kThreads)
    moe_grouped_gemm_kernel(const uint8_t* __restrict__ w0, const uint8_t* __restrict__ w1,
                            const float* __restrict__ bias0, const float* __restrict__ bias1,
                            const int32_t* __restrict__ slot_of_expert, int num_experts, int64_t num_rows,
                            int64_t num_cols, int64_t row_bytes, const float* __restrict__ a, int64_t top_k,
                            SortedPairs s, float* __restrict__ dst) {
  constexpr int kNumW = kGateUp ? 2 : 1;
  __shared__ float a_tile[kTileM][kTileK];
  __shared__ float w_tile[kNumW][kTileN][kTileK + 1];
  __shared__ int32_t tile_pair[kTileM];  // pair index of each row of the tile, −1 past the expert's rows

  const int tile_idx = blockIdx.x;
  if (tile_idx >= s.tiles[num_experts]) return;  // block-uniform, before any barrier
  // The expert owning this tile: the last e with tiles[e] ≤ tile_idx (experts without pairs have no tiles).
  int lo = 0, hi = num_experts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (s.tiles[mid] <= tile_idx) lo = mid; else hi = mid - 1;
  }
  const int expert = lo;
  const int32_t slot = slot_of_expert[expert];
  const int64_t row_begin = s.offsets[expert] + static_cast<int64_t>(tile_idx - s.tiles[expert]) * kTileM;
  const int64_t row_end = s.offsets[expert + 1];
  if (threadIdx.x < kTileM) {
    const int64_t r = row_begin + threadIdx.x;
    tile_pair[threadIdx.x] = r < row_end ? s.sorted[r] : -1;
  }

  const int tx = static_cast<int>(threadIdx.x) % kTileN;  // output row within the tile
  const int ty = static_cast<int>(threadIdx.x) / kTileN;  // pair rows ty, ty + 4, …
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  float acc[kNumW][kRowsPerThread] = {};

  for (int64_t k0 = 0; k0 < num_cols; k0 += kTileK) {
    __syncthreads();  // tile_pair is written; the previous tiles are no longer read
    {  // A tile: kTileM × kTileK floats, 4 per thread
      const int m = static_cast<int>(threadIdx.x) / (kTileK / 4);
      const int k = 4 * (static_cast<int>(threadIdx.x) % (kTileK / 4));
      const int32_t pair = tile_pair[m];
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (pair >= 0 && k0 + k < num_cols) {
        const float* src = kGateUp ? a + (pair / top_k) * num_cols : a + (row_begin + m) * num_cols;
        v = *reinterpret_cast<const float4*>(src + k0 + k);
      }
      a_tile[m][k] = v.x;
      a_tile[m][k + 1] = v.y;
      a_tile[m][k + 2] = v.z;
      a_tile[m][k + 3] = v.w;
    }
    {  // W tiles: kTileN × kTileK dequantized values each, 8 per thread
      const int n = static_cast<int>(threadIdx.x) / (kTileK / 8);
      const int k = 8 * (static_cast<int>(threadIdx.x) % (kTileK / 8));
      const int64_t row = n0 + n;
#pragma unroll
      for (int wi = 0; wi < kNumW; ++wi) {
        float v[8] = {};
        if (row < num_rows) {
          const uint8_t* w_row = (wi == 0 ? w0 : w1) + (static_cast<int64_t>(slot) * num_rows + row) * row_bytes;
          if (k0 + k < num_cols) detail::RowLoader<Type>::load4(w_row, k0 + k, v);
          if (k0 + k + 4 < num_cols) detail::RowLoader<Type>::load4(w_row, k0 + k + 4, v + 4);
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) w_tile[wi][n][k + i] = v[i];
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kTileK; ++k) {
#pragma unroll
      for (int wi = 0; wi < kNumW; ++wi) {
        const float w = w_tile[wi][tx][k];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) acc[wi][i] += a_tile[ty + 4 * i][k] * w;
      }
    }
  }

  const int64_t row = n0 + tx;
  if (row >= num_rows) return;
  const int64_t bias_idx = static_cast<int64_t>(slot) * num_rows + row;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int m = ty + 4 * i;
    const int32_t pair = tile_pair[m];
    if (pair < 0) continue;
    if constexpr (kGateUp) {
      const float g = acc[0][i] + (bias0 != nullptr ? bias0[bias_idx] : 0.0f);
      const float u = acc[1][i] + (bias1 != nullptr ? bias1[bias_idx] : 0.0f);
      dst[(row_begin + m) * num_rows + row] = detail::swiglu_oai(g, u);
    } else {
      dst[static_cast<int64_t>(pair) * num_rows + row] = acc[0][i] + (bias0 != nullptr ? bias0[bias_idx] : 0.0f);
    }
  }
}

}  // namespace

cudaError_t moe_experts_grouped(const ExpertWeights& experts, const float* x, const int32_t* expert_ids,
                                const float* weights, int64_t num_tokens, int64_t top_k, int64_t num_experts,
                                bool accumulate, float* scratch, float* out, cudaStream_t stream) {
  if (!detail::moe_args_ok(experts, x, expert_ids, weights, num_tokens, top_k, scratch, out) || num_experts <= 0 ||
      num_experts > detail::kMaxExperts || num_tokens * top_k > INT32_MAX ||
      detail::ceil_div(experts.ffn_dim, kTileN) > detail::kMaxGridY ||
      detail::ceil_div(experts.hidden_dim, kTileN) > detail::kMaxGridY)
    return cudaErrorInvalidValue;
  const int64_t num_pairs = num_tokens * top_k;
  const int64_t hidden_dim = experts.hidden_dim;
  const int64_t ffn_dim = experts.ffn_dim;
  float* act = scratch;                                              // (num_pairs, ffn_dim) sorted rows
  float* y = act + num_pairs * ffn_dim;                              // (num_pairs, hidden_dim) pair order
  auto* ints = reinterpret_cast<int32_t*>(y + num_pairs * hidden_dim);
  const SortedPairs sorted{ints, ints + num_pairs, ints + num_pairs + detail::kMaxExperts + 1};

  moe_sort_kernel<<<1, kSortThreads, 0, stream>>>(expert_ids, experts.slot_of_expert, num_pairs,
                                                  static_cast<int>(num_experts), sorted);
  if (const cudaError_t e = detail::launch_status(); e != cudaSuccess) return e;

  const int64_t max_tiles = detail::ceil_div(num_pairs, kTileM) + std::min(num_experts, num_pairs);
  const auto gate_row_bytes = static_cast<int64_t>(tensor_row_bytes(experts.type, static_cast<uint64_t>(hidden_dim)));
  const auto down_row_bytes = static_cast<int64_t>(tensor_row_bytes(experts.type, static_cast<uint64_t>(ffn_dim)));
  const cudaError_t err = detail::dispatch_type(experts.type, [&](auto type_tag) {
    constexpr TensorType kType = decltype(type_tag)::value;
    const dim3 grid1(static_cast<unsigned>(max_tiles), static_cast<unsigned>(detail::ceil_div(ffn_dim, kTileN)));
    moe_grouped_gemm_kernel<kType, true><<<grid1, kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(experts.gate), static_cast<const uint8_t*>(experts.up), experts.gate_bias,
        experts.up_bias, experts.slot_of_expert, static_cast<int>(num_experts), ffn_dim, hidden_dim, gate_row_bytes,
        x, top_k, sorted, act);
    if (const cudaError_t e = detail::launch_status(); e != cudaSuccess) return e;
    const dim3 grid2(static_cast<unsigned>(max_tiles), static_cast<unsigned>(detail::ceil_div(hidden_dim, kTileN)));
    moe_grouped_gemm_kernel<kType, false><<<grid2, kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(experts.down), nullptr, experts.down_bias, nullptr, experts.slot_of_expert,
        static_cast<int>(num_experts), hidden_dim, ffn_dim, down_row_bytes, act, top_k, sorted, y);
    return detail::launch_status();
  });
  if (err != cudaSuccess) return err;
  return detail::launch_moe_weighted_sum(experts.slot_of_expert, num_experts, expert_ids, weights, y, num_tokens,
                                         top_k, hidden_dim, accumulate, out, stream);
}

}  // namespace hetmoe::gpu
