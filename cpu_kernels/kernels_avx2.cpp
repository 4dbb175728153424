// AVX2 + FMA + F16C variant (built with -mavx2 -mfma -mf16c; see cpu_kernels/CMakeLists.txt). Float parts use xsimd
// batches of 8; the int8 block dots use maddubs (u8 × s8 → saturating int16 pairs) and madd (→ int32), which xsimd
// does not offer.
//
// MXFP4: the nibbles index a table of the doubled E2M1 values plus 12 (0..24, unsigned) so that maddubs can take the
// weights as its unsigned operand; 12 · (x[2k] + x[2k+1]), computed once per activation block, is subtracted from each
// int16 pair. No saturation: |pair| ≤ 2 · 24 · 127 = 6096.
// Q8_0: the sign trick, maddubs(|w|, sign(x, w)) = w · x pairwise; |pair| ≤ 2 · 128 · 127 = 32512 < 32767 (x is never
// -128, see ActQ8Block).

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_SIMD_NS avx2_kernels

namespace hetmoe::cpu::HETMOE_SIMD_NS {

using DenseArch = xsimd::fma3<xsimd::avx2>;
inline constexpr int kDenseGemmRows = 2;    // 2 × 4 accumulators + 2 weight vectors + x: 11 of 16 ymm registers
inline constexpr int kDenseGemmTokens = 4;

inline float reduce_max(xsimd::batch<float, DenseArch> v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/// q[0..3] (8 int32 each, in [-127, 127]) → out[32] int8. packs work inside 128-bit lanes, leaving the dwords in the
/// order q0[0:4] q1[0:4] q2[0:4] q3[0:4] q0[4:8] q1[4:8] ...; the permute restores q0[0:8] q1[0:8] ...
inline void store_q8(const xsimd::batch<int32_t, DenseArch>* q, int8_t* out) {
  const __m256i a = _mm256_packs_epi32(q[0], q[1]);
  const __m256i b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i packed = _mm256_packs_epi16(a, b);
  const __m256i ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
}

struct F16Weights {
  using Arch = DenseArch;
  static constexpr int64_t kBytes = 2;
  static xsimd::batch<float, Arch> load(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float value(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
  }
};

struct BF16Weights {
  using Arch = DenseArch;
  static constexpr int64_t kBytes = 2;
  static xsimd::batch<float, Arch> load(const uint8_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float value(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof h);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
};

inline __m256i load_act_q(const ActQ8Block& xb) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.q)); }

struct Mxfp4Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kMXFP4BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 2;
  static constexpr int kGemmTokens = 4;

  struct Act {
    __m256i q;           // x_q[0..31]
    __m256i offset_sum;  // int16 k: 12 · (x_q[2k] + x_q[2k+1])
  };
  static Act prepare(const ActQ8Block& xb) {
    const __m256i q = load_act_q(xb);
    return {q, _mm256_maddubs_epi16(_mm256_set1_epi8(detail::kMxfp4Offset), q)};
  }

  using Weights = __m256i;  // bytes j = w_q[j] + 12, j in [0, 32)
  static Weights decode(const uint8_t* block) {
    const __m256i lut =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(detail::kMxfp4OffsetValues.v)));
    // [qs | qs] >> [0 | 4]: low lane keeps the low nibbles (elements 0..15), high lane the high ones (16..31).
    const __m256i qs = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 1)));
    const __m256i nibbles =
        _mm256_and_si256(_mm256_srlv_epi32(qs, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(lut, nibbles);
  }

  static xsimd::batch<float, Arch> dot(Weights w, const Act& a) {
    const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w, a.q), a.offset_sum);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

  static xsimd::batch<float, Arch> scale(const uint8_t* block) {
    return _mm256_broadcast_ss(&detail::kMxfp4Scale.v[block[0]]);  // a load, no shuffle
  }
};

struct Q8Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kQ8_0BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 2;
  static constexpr int kGemmTokens = 4;

  struct Act {
    __m256i q;
  };
  static Act prepare(const ActQ8Block& xb) { return {load_act_q(xb)}; }

  using Weights = __m256i;  // w_q[0..31]
  static Weights decode(const uint8_t* block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  }

  static xsimd::batch<float, Arch> dot(Weights w, const Act& a) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a.q, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }

  static xsimd::batch<float, Arch> scale(const uint8_t* block) {
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    return xsimd::batch<float, Arch>(_cvtsh_ss(d));
  }
};

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS

#include "cpu_kernels/kernels_simd.h"

namespace hetmoe::cpu::detail {

const KernelTable& kernel_table_avx2() {
  static constexpr KernelTable kTable = HETMOE_SIMD_NS::make_kernel_table(Isa::kAvx2);
  return kTable;
}

}  // namespace hetmoe::cpu::detail
