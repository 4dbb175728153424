#pragma once
// Block quantization of KV-cache rows in ggml's q8_0 and q4_0 layouts (ggml-common.h block_q8_0 / block_q4_0;
// quantize_row_q8_0_ref / quantize_row_q4_0_ref in ggml-quants.c give the rounding): 32 values per block, an f16
// scale d first.
//   q8_0 (34 bytes): d = amax / 127, q[j] = round(x[j] / d) in [-127, 127]; value = d · q[j].
//   q4_0 (18 bytes): d = x_max / −8 where x_max is the value of largest magnitude (signed), nibble[j] =
//     min(15, trunc(x[j] / d + 8.5)); byte j (j < 16) holds value j in its low nibble and value j + 16 in its high
//     nibble; value = d · (nibble − 8).
// Scalar code (no ISA flags): the KV cache quantizes K and V on store (a few hundred values per token and layer), and
// these are the reference the attention kernels are tested against.

#include <cstdint>

namespace hetmoe::cpu {

inline constexpr int64_t kKvQ8_0BlockBytes = 34;
inline constexpr int64_t kKvQ4_0BlockBytes = 18;
inline constexpr int64_t kKvBlockElems = 32;

/// x[n] (f32, n a multiple of 32) → out[n / 32 · 34 bytes] (q8_0) or out[n / 32 · 18 bytes] (q4_0).
void quantize_kv_q8_0(const float* x, uint8_t* out, int64_t n);
void quantize_kv_q4_0(const float* x, uint8_t* out, int64_t n);

/// The inverse: src[n / 32 blocks] → dst[n] f32, each value d · q rounded once.
void dequantize_kv_q8_0(const uint8_t* src, float* dst, int64_t n);
void dequantize_kv_q4_0(const uint8_t* src, float* dst, int64_t n);

}  // namespace hetmoe::cpu
