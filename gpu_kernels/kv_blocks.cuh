#pragma once
// The device KV cache's q8_0 / q4_0 blocks (ops.h KvType; the CPU cache's layout, cpu_kernels/kv_blocks.h): the
// reader of the attention kernels, the quantizers of kv_store, and the index arithmetic of both. Every function here
// is __host__ __device__ so that tests/test_kv_blocks_device_code.cu runs this very source on the host against the
// CPU's scalar functions (bit for bit), on a machine without a GPU.
//
// Alignment: a q8_0 row is 34 · head_dim / 32 bytes and a q4_0 row 18 · head_dim / 32, so rows and blocks start only
// 2-byte aligned (q4_0 rows of head_dim 32: 18 bytes); the quantized readers and writers use byte accesses only (the
// f16 scale is assembled from its two bytes, little-endian as the CPU cache stores it). f16 rows are 2 · head_dim
// bytes (≥ 64): the f16 reader's __half2 loads need only 4-byte alignment of the cache.
//
// Rounding: the quantizers do the f32 operations of cpu::quantize_kv_q8_0 / quantize_kv_q4_0 in the same order. On
// the device, __fdiv_rn / __fmul_rn / __fadd_rn keep nvcc from contracting a multiply-add into an FMA (its default
// --fmad=true) or approximating a division; they round to nearest even as the host's IEEE operations do (the CPU
// file is built without FMA flags), so host and device results are the same bits.

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "gpu_kernels/ops.h"

namespace hetmoe::gpu::detail {

// ---- f32 operations rounded to nearest even, never fused ----------------------------------------------------------

__host__ __device__ __forceinline__ float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

__host__ __device__ __forceinline__ float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

__host__ __device__ __forceinline__ float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// ---- reading ------------------------------------------------------------------------------------------------------

/// The f16 scale d at the start of a q8_0 / q4_0 block (any alignment): bytes 0 and 1, little-endian.
__host__ __device__ __forceinline__ float kv_block_scale(const uint8_t* block) {
  const auto bits = static_cast<unsigned short>(block[0] | (static_cast<unsigned>(block[1]) << 8));
  return __half2float(__ushort_as_half(bits));
}

/// Values d0 .. d0 + N − 1 (N = 1, 2 or 4; d0 a multiple of N, so all N lie in one 32-value block) of one KV row of
/// `type` starting at `row`, as float: f16 widened; q8_0 d · q; q4_0 d · (nibble − 8) — the same float products as
/// cpu::dequantize_kv_q8_0 / dequantize_kv_q4_0, so both sides read identical values. f16: row 4-byte aligned.
/// `type` is the same for a whole kernel launch (a uniform branch).
template <int N>
__host__ __device__ __forceinline__ void load_kv_values(KvType type, const uint8_t* row, int d0, float out[N]) {
  static_assert(N == 1 || N == 2 || N == 4, "1, 2 or 4 values");
  if (type == KvType::kF16) {
    const __half* p = reinterpret_cast<const __half*>(row) + d0;
    if constexpr (N == 1) {
      out[0] = __half2float(*p);
    } else {
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {  // p is 2·N-byte aligned: d0 is a multiple of N
        const float2 f = __half22float2(reinterpret_cast<const __half2*>(p)[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
      }
    }
  } else if (type == KvType::kQ8_0) {
    const uint8_t* block = row + (d0 / kKvBlockElems) * kKvQ8_0BlockBytes;
    const float d = kv_block_scale(block);
    const int j = d0 % kKvBlockElems;
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = d * static_cast<float>(static_cast<int8_t>(block[2 + j + i]));
  } else {  // q4_0
    const uint8_t* block = row + (d0 / kKvBlockElems) * kKvQ4_0BlockBytes;
    const float d = kv_block_scale(block);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int j = d0 % kKvBlockElems + i;  // value j of the block: byte j % 16, low nibble below 16
      const unsigned byte = block[2 + j % 16];
      const int nibble = static_cast<int>(j < 16 ? byte & 0x0Fu : byte >> 4);
      out[i] = d * static_cast<float>(nibble - 8);
    }
  }
}

// ---- writing ------------------------------------------------------------------------------------------------------

/// The f16 bits of d rounded to nearest even (as ref::f32_to_f16), written little-endian at dst[0..1].
__host__ __device__ __forceinline__ void store_block_scale(float d, uint8_t* dst) {
  const unsigned short bits = __half_as_ushort(__float2half_rn(d));
  dst[0] = static_cast<uint8_t>(bits & 0xFFu);
  dst[1] = static_cast<uint8_t>(bits >> 8);
}

/// cpu::quantize_kv_q8_0 of one block x[32] → dst[34]: d = amax / 127, q[j] = round(x[j] / d) (half away from zero,
/// as std::round), via id = 1 / d (0 when d = 0).
__host__ __device__ inline void quantize_kv_block_q8_0(const float* x, uint8_t* dst) {
  float amax = 0.0f;
  for (int j = 0; j < kKvBlockElems; ++j) amax = fmaxf(amax, fabsf(x[j]));
  const float d = div_rn(amax, 127.0f);
  const float id = d != 0.0f ? div_rn(1.0f, d) : 0.0f;
  store_block_scale(d, dst);
  for (int j = 0; j < kKvBlockElems; ++j)
    dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(roundf(mul_rn(x[j], id)))));
}

/// cpu::quantize_kv_q4_0 of one block x[32] → dst[18]: d = x_max / −8 with x_max the first value of largest
/// magnitude (signed), nibble = min(15, trunc(x · (1/d) + 8.5)); byte j holds values j (low nibble) and j + 16 (high).
__host__ __device__ inline void quantize_kv_block_q4_0(const float* x, uint8_t* dst) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kKvBlockElems; ++j)
    if (fabsf(x[j]) > amax) {  // strictly greater: the first of equal magnitudes wins, as on the CPU
      amax = fabsf(x[j]);
      max = x[j];
    }
  const float d = div_rn(max, -8.0f);
  const float id = d != 0.0f ? div_rn(1.0f, d) : 0.0f;
  store_block_scale(d, dst);
  for (int j = 0; j < kKvBlockElems / 2; ++j) {
    // v · id + 8.5 lies in [0.5, 16.5]: truncation is the floor; the top (v = −x_max) is clamped to 15.
    const int lo = static_cast<int>(add_rn(mul_rn(x[j], id), 8.5f));
    const int hi = static_cast<int>(add_rn(mul_rn(x[j + kKvBlockElems / 2], id), 8.5f));
    dst[2 + j] = static_cast<uint8_t>((lo < 15 ? lo : 15) | ((hi < 15 ? hi : 15) << 4));
  }
}

// ---- index arithmetic ---------------------------------------------------------------------------------------------

/// Where kv_store's quantizing thread e (one 32-value block of the batch) reads and writes, for src (num_tokens,
/// num_kv_heads, head_dim) f32 and a cache (kv_head, slot, row of row_bytes) of blocks of block_bytes:
/// e = (t · num_kv_heads + g) · blocks_per_row + b reads src[e · 32 ..] (a row's blocks are consecutive in src) and
/// writes at byte (g · capacity + positions[t] % capacity) · row_bytes + b · block_bytes.
struct KvBlockTarget {
  int64_t token = 0;      // t
  int64_t src_offset = 0; // floats from src
  int64_t dst_offset = 0; // bytes from the cache
};
__host__ __device__ __forceinline__ KvBlockTarget kv_block_target(int64_t e, int64_t num_kv_heads, int64_t head_dim,
                                                                  int64_t block_bytes, int32_t capacity,
                                                                  const int32_t* positions) {
  const int64_t blocks_per_row = head_dim / kKvBlockElems;
  const int64_t b = e % blocks_per_row;
  const int64_t g = (e / blocks_per_row) % num_kv_heads;
  const int64_t t = e / (blocks_per_row * num_kv_heads);
  const int64_t slot = positions[t] % capacity;
  return {t, e * kKvBlockElems, (g * capacity + slot) * blocks_per_row * block_bytes + b * block_bytes};
}

/// Byte offset of the row of KV head g at ring slot `slot` in a cache of rows of row_bytes (kv_head, slot, row):
/// what both attention kernels read.
__host__ __device__ __forceinline__ int64_t kv_row_offset(int64_t g, int64_t slot, int32_t capacity,
                                                         int64_t row_bytes) {
  return (g * capacity + slot) * row_bytes;
}

}  // namespace hetmoe::gpu::detail
