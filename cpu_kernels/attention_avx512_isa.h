// The AVX-512 pieces attention_simd.h asks of a variant (Arch, f16 loads and stores, q8_0 / q4_0 block
// dequantization), for the AVX-512 attention TUs (attention_avx512.cpp, attention_avx512bf16.cpp): each defines
// HETMOE_ATTN_NS (its own namespace) and includes this, then attention_simd.h. Blocks are widened int8 → int32 → f32
// sixteen at a time and scaled by d.

#pragma once

#if !defined(HETMOE_ATTN_NS)
#error "define HETMOE_ATTN_NS (an ISA-unique namespace) before including attention_avx512_isa.h"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

namespace hetmoe::cpu::HETMOE_ATTN_NS {

using Arch = xsimd::avx512bw;

inline float block_scale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, sizeof d);
  return _cvtsh_ss(d);
}

inline xsimd::batch<float, Arch> load_f16(const uint16_t* src) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
}

inline void store_f16(const xsimd::batch<float, Arch>& x, uint16_t* dst) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

inline void dequantize_q8_0_block(const uint8_t* block, float* out) {
  const __m512 d = _mm512_set1_ps(block_scale(block));
  for (int i = 0; i < 2; ++i) {
    const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 + 16 * i));
    _mm512_storeu_ps(out + 16 * i, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8))));
  }
}

inline void dequantize_q4_0_block(const uint8_t* block, float* out) {
  const __m512 d = _mm512_set1_ps(block_scale(block));
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, mask), eight);                     // values 0..15
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), eight);  // values 16..31
  _mm512_storeu_ps(out, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))));
  _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))));
}

}  // namespace hetmoe::cpu::HETMOE_ATTN_NS

