// AVX-512 variant (F/BW/VL/DQ + VNNI; built with the flags in cpu_kernels/CMakeLists.txt; dispatch.cpp requires all
// of them, VNNI included, so there is no non-VNNI path here). Float kernels use xsimd batches of 16; the quantized
// kernels work on one 32-value block per 256-bit register and use VNNI's vpdpbusd (u8 × s8, four products summed
// into each int32 lane, no saturation), which xsimd does not offer.
//
// The unsigned operand is the weight, offset to be non-negative: MXFP4 codes index the doubled E2M1 table plus 12
// (0..24); Q8_0 codes are flipped to w + 128 (0..255). Each activation block precomputes −offset · Σ x_q per lane
// group (one vpdpbusd of the constant offset with x_q), which seeds the accumulator, so one vpdpbusd per weight
// block yields the exact Σ w_q · x_q (|lane| ≤ 4 · 255 · 127 + 4 · 128 · 127 fits int32).

// GCC 12's AVX-512 intrinsics initialize their "undefined" operands from themselves (`__m512i __Y = __Y;`), which
// -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_SIMD_NS avx512_kernels

namespace hetmoe::cpu::HETMOE_SIMD_NS {

using DenseArch = xsimd::avx512bw;
inline constexpr int kDenseGemmRows = 4;    // 4 × 4 accumulators + 4 weight vectors + x: 21 of 32 zmm registers
inline constexpr int kDenseGemmTokens = 4;

inline float reduce_max(xsimd::batch<float, DenseArch> v) { return _mm512_reduce_max_ps(v); }

/// q[0..1] (16 int32 each, in [-127, 127]) → out[32] int8 (vpmovsdb; the values are in range, so it does not clip).
inline void store_q8(const xsimd::batch<int32_t, DenseArch>* q, int8_t* out) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(q[0]));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm512_cvtsepi32_epi8(q[1]));
}

struct F16Weights {
  using Arch = DenseArch;
  static constexpr int64_t kBytes = 2;
  static xsimd::batch<float, Arch> load(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
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
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
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

struct QuantAct {
  __m256i q;           // x_q[0..31]
  __m256i neg_offset;  // int32 lane l: −offset · Σ_{j=4l}^{4l+3} x_q[j]
};

/// The activation block with its offset correction for weights stored as w_q + offset.
inline QuantAct prepare_act(const ActQ8Block& xb, int8_t offset) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.q));
  const __m256i zero = _mm256_setzero_si256();
  const __m256i sum = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(offset), q);
  return {q, _mm256_sub_epi32(zero, sum)};
}

struct Mxfp4Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kMXFP4BlockBytes;
  // 8 rows share each activation block's preparation (load, vpdpbusd, negate); 8 accumulators fit easily in the 32
  // registers. 0.74 ns per row-block in L2 against 0.80 with 4 rows.
  static constexpr int kGemvRows = 8;
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 4;

  using Act = QuantAct;
  static Act prepare(const ActQ8Block& xb) { return prepare_act(xb, detail::kMxfp4Offset); }

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
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(a.neg_offset, w, a.q));
  }

  static xsimd::batch<float, Arch> scale(const uint8_t* block) {
    return _mm256_broadcast_ss(&detail::kMxfp4Scale.v[block[0]]);  // a load, no shuffle
  }
};

struct Q8Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kQ8_0BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 4;

  using Act = QuantAct;
  static Act prepare(const ActQ8Block& xb) { return prepare_act(xb, static_cast<int8_t>(0x80)); }

  using Weights = __m256i;  // bytes j = w_q[j] + 128 (sign bit flipped), j in [0, 32)
  static Weights decode(const uint8_t* block) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
    return _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)));
  }

  static xsimd::batch<float, Arch> dot(Weights w, const Act& a) {
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(a.neg_offset, w, a.q));
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

const KernelTable& kernel_table_avx512() {
  static constexpr KernelTable kTable = HETMOE_SIMD_NS::make_kernel_table(Isa::kAvx512);
  return kTable;
}

}  // namespace hetmoe::cpu::detail
