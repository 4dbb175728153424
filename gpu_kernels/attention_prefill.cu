// Prefill attention with sinks over the KV cache (f16, q8_0 or q4_0 K and V): the math of attention_decode (causal
// mask, sliding window via kv.window, GQA, sink logit), for a batch of queries whose K/V are already in the cache.
// Parallelization: grid (query tile, head); a 256-thread block holds kQueries = 8 queries of one head, one warp per
// query. The block walks the union of its queries' key ranges in tiles of kKeys keys: all threads convert a K and
// V tile to f32 in shared memory, two consecutive values per thread and step (a q8_0 / q4_0 pair lies in one block
// and is dequantized as cpu::dequantize_kv_* does; K rows padded by one float so lane j reading key j is
// bank-conflict free), then each warp scores its query against the tile (lane = key), masks keys outside
// [pos − window + 1, pos], and updates its online softmax (max, sum, output in registers: lane l holds dims l,
// l + 32, …). A tile with no visible key for a warp is skipped by that warp (warp-uniform; the __syncthreads are
// outside that branch).
// Supported head_dim: 32, 64 and 128 (cudaErrorInvalidValue otherwise).

#include <cmath>

#include "gpu_kernels/attention_common.cuh"

namespace hetmoe::gpu {
namespace {

using detail::kWarpSize;

constexpr int kQueries = 8;  // warps per block

template <int HeadDim>
struct PrefillTile {
  static constexpr int kKeys = HeadDim <= 64 ? 64 : 32;  // keeps shared memory ≤ 38 KiB (< 48 KiB static)
  static constexpr int kDimsPerLane = HeadDim / kWarpSize;
  static constexpr int kKeysPerLane = kKeys / kWarpSize;
};

template <int HeadDim>
__global__ void __launch_bounds__(kQueries * kWarpSize)
    attention_prefill_kernel(const float* __restrict__ q, const uint8_t* __restrict__ k_cache,
                             const uint8_t* __restrict__ v_cache, KvType k_type, KvType v_type, int64_t k_row_bytes,
                             int64_t v_row_bytes, int32_t capacity, int32_t window,
                             const float* __restrict__ sinks, int64_t num_tokens, int num_heads, int group,
                             const int32_t* __restrict__ positions, float scale, float* __restrict__ out) {
  using Tile = PrefillTile<HeadDim>;
  constexpr int kKeys = Tile::kKeys;
  __shared__ float k_tile[kKeys][HeadDim + 1];   // (key, dim), padded
  __shared__ float v_tile[kKeys][HeadDim];       // (key, dim)
  __shared__ float q_rows[kQueries][HeadDim];    // (query, dim)
  __shared__ float probs[kQueries][kKeys];       // (query, key) of the current tile
  __shared__ int64_t query_first[kQueries];
  __shared__ int64_t query_pos[kQueries];

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int h = blockIdx.y;
  const int g = h / group;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kQueries + warp;
  const bool active = t < num_tokens;

  int64_t first = 0, pos = -1;
  if (active) {
    pos = positions[t];
    const int64_t num_keys = pos + 1 < window ? pos + 1 : window;
    first = pos + 1 - num_keys;
    const float* qh = q + (t * num_heads + h) * HeadDim;
    for (int d = lane; d < HeadDim; d += kWarpSize) q_rows[warp][d] = qh[d];
  }
  if (lane == 0) {
    query_first[warp] = active ? first : INT64_MAX;
    query_pos[warp] = active ? pos : -1;
  }
  __syncthreads();
  int64_t key_lo = INT64_MAX, key_hi = -1;  // union of the block's key ranges
  for (int w = 0; w < kQueries; ++w) {
    key_lo = query_first[w] < key_lo ? query_first[w] : key_lo;
    key_hi = query_pos[w] > key_hi ? query_pos[w] : key_hi;
  }

  float m = -INFINITY;
  float l = 0.0f;
  float acc[Tile::kDimsPerLane] = {};

  for (int64_t tile_start = key_lo; tile_start <= key_hi; tile_start += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < kKeys * HeadDim / 2; e += kQueries * kWarpSize) {
      const int j = e / (HeadDim / 2);
      const int d = 2 * (e % (HeadDim / 2));
      const int64_t p = tile_start + j;
      float kf[2] = {0.0f, 0.0f}, vf[2] = {0.0f, 0.0f};
      if (p <= key_hi) {
        const int64_t slot = p % capacity;
        detail::load_kv_values<2>(k_type, k_cache + detail::kv_row_offset(g, slot, capacity, k_row_bytes), d,
                                  kf);
        detail::load_kv_values<2>(v_type, v_cache + detail::kv_row_offset(g, slot, capacity, v_row_bytes), d,
                                  vf);
      }
      k_tile[j][d] = kf[0];
      k_tile[j][d + 1] = kf[1];
      v_tile[j][d] = vf[0];
      v_tile[j][d + 1] = vf[1];
    }
    __syncthreads();
    if (!active) continue;

    float s[Tile::kKeysPerLane];
    float tile_max = -INFINITY;
#pragma unroll
    for (int r = 0; r < Tile::kKeysPerLane; ++r) {
      const int j = lane + kWarpSize * r;
      const int64_t p = tile_start + j;
      s[r] = -INFINITY;
      if (p >= first && p <= pos) {
        float dot = 0.0f;
#pragma unroll 16
        for (int d = 0; d < HeadDim; ++d) dot += q_rows[warp][d] * k_tile[j][d];
        s[r] = dot * scale;
      }
      tile_max = fmaxf(tile_max, s[r]);
    }
    tile_max = detail::warp_max(tile_max);
    if (tile_max == -INFINITY) continue;  // no visible key in this tile for this query (warp-uniform)
    const float m_new = fmaxf(m, tile_max);
    const float corr = expf(m - m_new);
    float p_sum = 0.0f;
#pragma unroll
    for (int r = 0; r < Tile::kKeysPerLane; ++r) {
      const float p = expf(s[r] - m_new);  // masked keys: exp(−inf) = 0
      probs[warp][lane + kWarpSize * r] = p;
      p_sum += p;
    }
    l = l * corr + detail::warp_sum(p_sum);
    __syncwarp();
#pragma unroll
    for (int i = 0; i < Tile::kDimsPerLane; ++i) {
      const int d = lane + kWarpSize * i;
      float o = acc[i] * corr;
      for (int j = 0; j < kKeys; ++j) o += probs[warp][j] * v_tile[j][d];
      acc[i] = o;
    }
    __syncwarp();
    m = m_new;
  }

  if (!active) return;
  const float sink = sinks != nullptr ? sinks[h] : -INFINITY;  // a raw logit, not scaled
  const float big_m = fmaxf(m, sink);
  float z = 0.0f, w = 0.0f;
  if (big_m != -INFINITY) {
    w = m != -INFINITY ? expf(m - big_m) : 0.0f;
    z = l * w + (sink != -INFINITY ? expf(sink - big_m) : 0.0f);
  }
  float* oh = out + (t * num_heads + h) * HeadDim;
#pragma unroll
  for (int i = 0; i < Tile::kDimsPerLane; ++i) oh[lane + kWarpSize * i] = z > 0.0f ? acc[i] * w / z : 0.0f;
}

template <int HeadDim>
cudaError_t launch_prefill(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                           int64_t num_heads, int64_t num_kv_heads, const int32_t* positions, float* out,
                           cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(HeadDim));
  const dim3 grid(static_cast<unsigned>(detail::ceil_div(num_tokens, kQueries)), static_cast<unsigned>(num_heads));
  attention_prefill_kernel<HeadDim><<<grid, kQueries * kWarpSize, 0, stream>>>(
      q, static_cast<const uint8_t*>(kv.k), static_cast<const uint8_t*>(kv.v), kv.k_type, kv.v_type,
      kv_type_row_bytes(kv.k_type, HeadDim), kv_type_row_bytes(kv.v_type, HeadDim), kv.capacity, kv.window, sinks,
      num_tokens, static_cast<int>(num_heads), static_cast<int>(num_heads / num_kv_heads), positions, scale, out);
  return detail::launch_status();
}

}  // namespace

cudaError_t attention_prefill(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                              int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, const int32_t* positions,
                              float* out, cudaStream_t stream) {
  if (!detail::attention_args_ok(q, kv, num_tokens, num_heads, num_kv_heads, positions, out) ||
      detail::ceil_div(num_tokens, kQueries) > detail::kMaxGridX)
    return cudaErrorInvalidValue;
  switch (head_dim) {
    case 32:
      return launch_prefill<32>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, out, stream);
    case 64:
      return launch_prefill<64>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, out, stream);
    case 128:
      return launch_prefill<128>(q, kv, sinks, num_tokens, num_heads, num_kv_heads, positions, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace hetmoe::gpu
