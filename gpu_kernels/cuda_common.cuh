#pragma once
// Private helpers of the CUDA kernels (gpu_kernels/*.cu only; not part of the ops.h contract): launch constants,
// warp reductions, host-side shape checks and per-type weight loaders that dequantize exactly as
// ref::dequantize_row does (cpu_kernels/reference.cpp).
//
// Alignment: Q8_0 blocks are 34 bytes and MXFP4 blocks 17 bytes, so a block inside a row is only 2-byte (Q8_0) or
// 1-byte (MXFP4) aligned; their loaders use 16-bit or byte loads. F32/F16/BF16 loaders read 4 consecutive elements
// with one 16- or 8-byte load and need the row start 16-byte (F32) or 8-byte (F16/BF16) aligned: true for a
// cudaMalloc'ed matrix whose row length is a multiple of 4 elements (checked by weights_aligned()).

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "runtime/base/ggml_types.h"

namespace hetmoe::gpu::detail {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xFFFFFFFFu;
inline constexpr int64_t kMaxGridY = 65535;  // gridDim.y and gridDim.z limit
inline constexpr int64_t kMaxGridX = 2147483647;

// ---- host-side checks -------------------------------------------------------------------------------------------

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool is_aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

/// True for the weight types the kernels read (F32, F16, BF16, Q8_0, MXFP4).
inline bool is_supported_type(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kMXFP4:
      return true;
    case TensorType::kMXFP4_R16:  // the CPU kernels' layout (cpu_kernels/repack.h)
      return false;
  }
  return false;
}

/// True when rows of num_cols elements of `type` can be read by the 4-element loaders below: num_cols a positive
/// multiple of the block size (32 for Q8_0/MXFP4) and of 4, and the matrix start aligned for the vector loads.
inline bool weights_shape_ok(TensorType type, const void* w, int64_t num_cols) {
  if (!is_supported_type(type) || w == nullptr || num_cols <= 0 || num_cols % 4 != 0) return false;
  const auto& traits = tensor_type_traits(type);
  if (num_cols % traits.block_elems != 0) return false;
  switch (type) {
    case TensorType::kF32:
      return is_aligned(w, 16);
    case TensorType::kF16:
    case TensorType::kBF16:
      return is_aligned(w, 8);
    case TensorType::kQ8_0:
      return is_aligned(w, 2);
    case TensorType::kMXFP4:
      return true;
    case TensorType::kMXFP4_R16:
      return false;
  }
  return false;
}

/// Launch status: the error of the last launch on this thread, cleared (cudaGetLastError).
inline cudaError_t launch_status() { return cudaGetLastError(); }

// ---- device helpers -----------------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}

/// 2^(e-128) as ref::mxfp4_scale: e = 0 and 1 give the subnormals 2^-128 and 2^-127.
__device__ __forceinline__ float mxfp4_scale(uint8_t e) {
  return e >= 2 ? __uint_as_float(static_cast<uint32_t>(e - 1) << 23) : __uint_as_float(0x00200000u << e);
}

/// Twice the E2M1 values (ref::kMxfp4Values), indexed by a 4-bit code: magnitudes {0,1,2,3,4,6,8,12} of codes 0–7
/// packed one per byte (no local-memory table), bit 3 the sign. Code 8 is +0 as in the table (0 − 0, not −0), so a
/// dequantized zero has the reference's bits.
__device__ __forceinline__ float mxfp4_value(uint32_t code) {
  constexpr unsigned long long kMagnitudes = 0x0C08060403020100ull;
  const auto magnitude = static_cast<float>((kMagnitudes >> (8u * (code & 7u))) & 0xFFu);
  return (code & 8u) != 0 ? 0.0f - magnitude : magnitude;
}

/// Loads 4 consecutive dequantized elements k .. k+3 (k a multiple of 4) of one row of `Type`.
template <TensorType Type>
struct RowLoader;

template <>
struct RowLoader<TensorType::kF32> {
  __device__ __forceinline__ static void load4(const uint8_t* row, int64_t k, float w[4]) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(row) + k / 4);
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
  }
  __device__ __forceinline__ static float load1(const uint8_t* row, int64_t k) {
    return __ldg(reinterpret_cast<const float*>(row) + k);
  }
};

template <>
struct RowLoader<TensorType::kF16> {
  __device__ __forceinline__ static void load4(const uint8_t* row, int64_t k, float w[4]) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(row) + k / 4);
    w[0] = f16_bits_to_f32(static_cast<uint16_t>(v.x & 0xFFFFu));
    w[1] = f16_bits_to_f32(static_cast<uint16_t>(v.x >> 16));
    w[2] = f16_bits_to_f32(static_cast<uint16_t>(v.y & 0xFFFFu));
    w[3] = f16_bits_to_f32(static_cast<uint16_t>(v.y >> 16));
  }
  __device__ __forceinline__ static float load1(const uint8_t* row, int64_t k) {
    return f16_bits_to_f32(__ldg(reinterpret_cast<const unsigned short*>(row) + k));
  }
};

template <>
struct RowLoader<TensorType::kBF16> {
  __device__ __forceinline__ static void load4(const uint8_t* row, int64_t k, float w[4]) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(row) + k / 4);
    w[0] = bf16_bits_to_f32(static_cast<uint16_t>(v.x & 0xFFFFu));
    w[1] = bf16_bits_to_f32(static_cast<uint16_t>(v.x >> 16));
    w[2] = bf16_bits_to_f32(static_cast<uint16_t>(v.y & 0xFFFFu));
    w[3] = bf16_bits_to_f32(static_cast<uint16_t>(v.y >> 16));
  }
  __device__ __forceinline__ static float load1(const uint8_t* row, int64_t k) {
    return bf16_bits_to_f32(__ldg(reinterpret_cast<const unsigned short*>(row) + k));
  }
};

// Q8_0 block {f16 d; int8 q[32]} (34 bytes, 2-byte aligned): value j = d · q[j].
template <>
struct RowLoader<TensorType::kQ8_0> {
  __device__ __forceinline__ static void load4(const uint8_t* row, int64_t k, float w[4]) {
    const uint8_t* block = row + (k / 32) * kQ8_0BlockBytes;
    const auto* half_words = reinterpret_cast<const unsigned short*>(block);
    const float d = f16_bits_to_f32(__ldg(half_words));
    const int j = static_cast<int>(k % 32);  // a multiple of 4: q[j .. j+3] are two aligned 16-bit words
    const unsigned short lo = __ldg(half_words + 1 + j / 2);
    const unsigned short hi = __ldg(half_words + 2 + j / 2);
    w[0] = d * static_cast<float>(static_cast<int8_t>(lo & 0xFFu));
    w[1] = d * static_cast<float>(static_cast<int8_t>(lo >> 8));
    w[2] = d * static_cast<float>(static_cast<int8_t>(hi & 0xFFu));
    w[3] = d * static_cast<float>(static_cast<int8_t>(hi >> 8));
  }
  __device__ __forceinline__ static float load1(const uint8_t* row, int64_t k) {
    const uint8_t* block = row + (k / 32) * kQ8_0BlockBytes;
    const float d = f16_bits_to_f32(__ldg(reinterpret_cast<const unsigned short*>(block)));
    return d * static_cast<float>(static_cast<int8_t>(__ldg(block + 2 + k % 32)));
  }
};

/// One whole Q8_0 block {f16 d; int8 q[32]} (34 bytes, 2-byte aligned) with aligned 32-bit loads: the block starts 0
/// or 2 bytes into a word, and nine words from there cover it (the ninth a 16-bit load when it starts on a word
/// boundary, so nothing past the block is read). Out: the scale d, and q[i] = quants 4i .. 4i+3 (byte j of q[i] is
/// quant 4i + j).
__device__ __forceinline__ void load_q8_0_block(const uint8_t* block, float& d, uint32_t q[8]) {
  const auto addr = reinterpret_cast<uintptr_t>(block);
  const bool odd_half = (addr & 2u) != 0;  // the block starts at byte 2 of a word
  const auto* words = reinterpret_cast<const uint32_t*>(addr & ~static_cast<uintptr_t>(3));
  uint32_t w[9];
#pragma unroll
  for (int i = 0; i < 8; ++i) w[i] = __ldg(words + i);
  w[8] = odd_half ? __ldg(words + 8) : static_cast<uint32_t>(__ldg(reinterpret_cast<const unsigned short*>(words + 8)));
  d = f16_bits_to_f32(static_cast<uint16_t>(odd_half ? w[0] >> 16 : w[0] & 0xFFFFu));
  // The quants start 2 bytes after the block: at w[1] (odd_half), or 2 bytes into w[0].
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] = odd_half ? w[i + 1] : __funnelshift_r(w[i], w[i + 1], 16);
}

/// Quant j (0..3) of a packed word of load_q8_0_block, as float.
__device__ __forceinline__ float q8_0_quant(uint32_t packed, int j) {
  return static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(packed >> (8 * j))));
}

// MXFP4 block {u8 e; u8 qs[16]} (17 bytes, unaligned): element j < 16 is the low nibble of qs[j], element j + 16
// the high nibble of qs[j]; value = kMxfp4Values[code] · 2^(e-128).
template <>
struct RowLoader<TensorType::kMXFP4> {
  __device__ __forceinline__ static void load4(const uint8_t* row, int64_t k, float w[4]) {
    const uint8_t* block = row + (k / 32) * kMXFP4BlockBytes;
    const float d = mxfp4_scale(__ldg(block));
    const int j = static_cast<int>(k % 32);
    const uint8_t* qs = block + 1 + (j % 16);
    const int shift = j < 16 ? 0 : 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = d * mxfp4_value(static_cast<uint32_t>(__ldg(qs + i)) >> shift);
  }
  __device__ __forceinline__ static float load1(const uint8_t* row, int64_t k) {
    const uint8_t* block = row + (k / 32) * kMXFP4BlockBytes;
    const int j = static_cast<int>(k % 32);
    const uint32_t byte = __ldg(block + 1 + (j % 16));
    return mxfp4_scale(__ldg(block)) * mxfp4_value(j < 16 ? byte : byte >> 4);
  }
};

/// Calls f(std::integral_constant<TensorType, T>{}) for the runtime type; cudaErrorInvalidValue for another type.
template <typename F>
cudaError_t dispatch_type(TensorType type, F&& f) {
  switch (type) {
    case TensorType::kF32:
      return f(std::integral_constant<TensorType, TensorType::kF32>{});
    case TensorType::kF16:
      return f(std::integral_constant<TensorType, TensorType::kF16>{});
    case TensorType::kBF16:
      return f(std::integral_constant<TensorType, TensorType::kBF16>{});
    case TensorType::kQ8_0:
      return f(std::integral_constant<TensorType, TensorType::kQ8_0>{});
    case TensorType::kMXFP4:
      return f(std::integral_constant<TensorType, TensorType::kMXFP4>{});
    case TensorType::kMXFP4_R16:
      break;
  }
  return cudaErrorInvalidValue;
}

/// One warp's dot product of a weight row (num_cols elements of Type; num_cols a multiple of 4) with x[num_cols]
/// (16-byte aligned f32), f32 accumulation per lane, then a butterfly sum: every lane returns the full dot product.
/// Lane l reads elements 4·(l + 32·i) .. +3, so a warp step covers 128 consecutive elements.
template <TensorType Type>
__device__ __forceinline__ float warp_dot_row(const uint8_t* row, const float* x, int64_t num_cols, int lane) {
  float acc = 0.0f;
  for (int64_t k = 4 * lane; k < num_cols; k += 4 * kWarpSize) {
    float w[4];
    RowLoader<Type>::load4(row, k, w);
    const float4 xv = __ldg(reinterpret_cast<const float4*>(x + k));
    acc += w[0] * xv.x + w[1] * xv.y + w[2] * xv.z + w[3] * xv.w;
  }
  return warp_sum(acc);
}

}  // namespace hetmoe::gpu::detail
