// AVX2 + FMA + F16C attention kernels over q8_0 / q4_0 KV rows (built with -mavx2 -mfma -mf16c; see
// cpu_kernels/CMakeLists.txt). Blocks are widened int8 → int32 → f32 eight at a time and scaled by d.

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_ATTN_NS avx2_attention

namespace hetmoe::cpu::HETMOE_ATTN_NS {

using Arch = xsimd::fma3<xsimd::avx2>;

inline float block_scale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, sizeof d);
  return _cvtsh_ss(d);
}

inline xsimd::batch<float, Arch> load_f16(const uint16_t* src) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
}

inline void store_f16(const xsimd::batch<float, Arch>& x, uint16_t* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

inline void dequantize_q8_0_block(const uint8_t* block, float* out) {
  const __m256 d = _mm256_set1_ps(block_scale(block));
  for (int i = 0; i < 4; ++i) {
    const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i));
    _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8))));
  }
}

inline void dequantize_q4_0_block(const uint8_t* block, float* out) {
  const __m256 d = _mm256_set1_ps(block_scale(block));
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, mask), eight);                       // values 0..15
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), eight);    // values 16..31
  const __m128i halves[2] = {lo, hi};
  for (int h = 0; h < 2; ++h) {
    const __m256i a = _mm256_cvtepi8_epi32(halves[h]);
    const __m256i b = _mm256_cvtepi8_epi32(_mm_srli_si128(halves[h], 8));
    _mm256_storeu_ps(out + 16 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(a)));
    _mm256_storeu_ps(out + 16 * h + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(b)));
  }
}

}  // namespace hetmoe::cpu::HETMOE_ATTN_NS

#include "cpu_kernels/attention_simd.h"

namespace hetmoe::cpu::detail {

void add_attention_kernels_avx2(KernelTable& t) { HETMOE_ATTN_NS::add_attention_kernels(t); }

}  // namespace hetmoe::cpu::detail
