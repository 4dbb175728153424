// AVX2 + FMA + F16C variant (built with -mavx2 -mfma -mf16c; see cpu_kernels/CMakeLists.txt). Float parts use xsimd
// batches of 8; the int8 block dots use maddubs (u8 × s8 → saturating int16 pairs) and madd (→ int32), which xsimd
// does not offer.
//
// MXFP4: the nibbles index a table of the doubled E2M1 values plus 12 (0..24, unsigned) so that maddubs can take the
// weights as its unsigned operand; 12 · (x[2k] + x[2k+1]), computed once per activation block, is subtracted from each
// int16 pair. No saturation: |pair| ≤ 2 · 24 · 127 = 6096.
// Q8_0: the sign trick, maddubs(|w|, sign(x, w)) = w · x pairwise; |pair| ≤ 2 · 128 · 127 = 32512 < 32767 (x is never
// -128, see ActQ8Block).
// kernels_avx2vnni.cpp compiles this file again with HETMOE_AVX2_VNNI (and -mavxvnni): each maddubs + madd (+ int16
// adds) becomes one vpdpbusd (ymm), which sums the same 4 products per int32 lane exactly; the integer sums, so all
// results, are the same bits as without it.

#include <immintrin.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/repack.h"

#ifndef HETMOE_SIMD_NS
#define HETMOE_SIMD_NS avx2_kernels
#endif
#ifndef HETMOE_AVX2_VNNI
#define HETMOE_AVX2_VNNI 0
#endif

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

/// acc + the int8 dot of u (unsigned bytes) and s (signed bytes), 4 products per int32 lane. Exact for the callers'
/// ranges (no int16 pair above 32767: see the file comment).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if HETMOE_AVX2_VNNI
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

inline __m256i load_act_q(const ActQ8Block& xb) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.q)); }

// ---- token-lane prefill GEMM (gemm_quant_lanes in kernels_simd.h, num_tokens ≥ kLaneMinTokens) ---------------
// A ymm holds 4 activation bytes of each of 8 tokens; a weight dword broadcast to all lanes and one maddubs give each
// token two int16 pair sums of its 4 products, so the rows' weights are decoded once per row tile and every int32 lane
// ends with its token's whole block dot (see LaneGemm in kernels_avx512.cpp for the AVX-512 form).

/// Activations of one block of one 8-token tile: x_q as signed bytes, [k][token][j] = x_q[4k + j] (0 past the tile's
/// tokens), with d_x per token (0 past them).
struct alignas(32) LaneActBlock {
  int8_t x[8][8][4];
  int32_t neg_offset[8];  // −offset · Σ_j x_q[j] per token: MXFP4's code offset 12, Q8_0's 128 with VNNI, else 0
  float dx[8];
};

/// n ≤ 8 tokens of token-major x ([n][num_blocks]) → out[num_blocks], neg_offset for the weights' offset kOffset.
template <int kOffset>
inline void pack_lane_tile(const ActQ8Block* x, int64_t num_blocks, int64_t n, LaneActBlock* out) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    LaneActBlock& o = out[b];
    for (int64_t t = 0; t < 8; ++t) {
      if (t < n) {
        const ActQ8Block& xb = x[t * num_blocks + b];
        int32_t sum = 0;
        if constexpr (kOffset != 0)
          for (int j = 0; j < 32; ++j) sum += xb.q[j];
        for (int k = 0; k < 8; ++k) std::memcpy(o.x[k][t], xb.q + 4 * k, 4);
        o.neg_offset[t] = -kOffset * sum;
        o.dx[t] = xb.d;
      } else {
        for (int k = 0; k < 8; ++k) std::memset(o.x[k][t], 0, 4);
        o.neg_offset[t] = 0;
        o.dx[t] = 0.0f;
      }
    }
  }
}

inline __m256i broadcast_dword(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

/// MXFP4: the weight codes plus 12 (0..24) are maddubs' unsigned operand, the activations its signed one; the
/// accumulator starts at −12 · Σ x_q. |pair| ≤ 2 · 24 · 127 = 6096, so four maddubs results add in int16 (24384)
/// before one madd widens them: per block and row 8 broadcasts, 8 maddubs, 6 int16 adds, 2 madd, 2 adds, cvt, mul,
/// fma (35 instructions in GCC 12's loop) for 8 tokens × 32 columns. Callgrind, 256 rows × 2880, 512 tokens: 5.0
/// instructions per row, token and block in all, against 11.1 with the row tiles.
struct Mxfp4LaneGemm {
  static constexpr int kTokens = 8;
  static constexpr int kRows = 8;  // 8 float accumulators + 2 int16 sums + broadcast + ones + d_x: 13 of 16 ymm
  using ActBlock = LaneActBlock;
  struct WeightBlock {
    uint8_t q[32];  // w_q[j] + 12
    float d;        // d_w
  };
  static void pack(const ActQ8Block* x, int64_t num_blocks, int64_t n, ActBlock* out) {
    pack_lane_tile<detail::kMxfp4Offset>(x, num_blocks, n, out);
  }

  template <int R>
  static void tile(const WeightBlock* w, const ActBlock* x, int64_t num_blocks, float* out) {
    [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < num_blocks; ++b) {
      const ActBlock& xb = x[b];
      const WeightBlock* wb = w + b * R;
      const __m256 dx = _mm256_load_ps(xb.dx);
      const __m256i neg_offset = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.neg_offset));
      for (int i = 0; i < R; ++i) {
#if HETMOE_AVX2_VNNI
        // Two chains of 4 vpdpbusd (columns 0..15, 16..31). EVEX stand-in on Zen 4, 256 × 2880 in L2, best of 20 in
        // four alternating rounds: 64 / 256 tokens 429 / 1673 µs with one chain of 8, 374 / 1465 with two.
        __m256i dot = neg_offset, dot_hi = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
          dot = _mm256_dpbusd_avx_epi32(dot, broadcast_dword(wb[i].q + 4 * k),
                                        _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k])));
          dot_hi = _mm256_dpbusd_avx_epi32(dot_hi, broadcast_dword(wb[i].q + 4 * k + 16),
                                           _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k + 4])));
        }
        dot = _mm256_add_epi32(dot, dot_hi);
#else
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {
          __m256i p = _mm256_setzero_si256();
          for (int k = 4 * h; k < 4 * h + 4; ++k)
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(broadcast_dword(wb[i].q + 4 * k),
                                                         _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k]))));
          half[h] = _mm256_madd_epi16(p, ones);
        }
        const __m256i dot = _mm256_add_epi32(_mm256_add_epi32(half[0], half[1]), neg_offset);
#endif
        acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), dx), _mm256_set1_ps(wb[i].d), acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out + i * kTokens, acc[i]);
  }
};

/// Q8_0: the sign trick per token lane, maddubs(|w| broadcast, sign(x, w broadcast)); |pair| ≤ 2 · 128 · 127 =
/// 32512 leaves no room for an int16 add, so each maddubs is widened at once: ~6 instructions per 4 columns and row
/// for 8 tokens. Callgrind, 256 rows × 2880, 512 tokens: 7.9 instructions per row, token and block, against 9.8 with
/// the row tiles (the sign trick's cost per token is what remains; AVX2 has no u8 × s8 dot without saturation).
/// With VNNI there is one: the weights plus 128 are vpdpbusd's unsigned operand and each token's sums start at
/// −128 · Σ x_q (neg_offset), so per 4 columns and row a broadcast and one vpdpbusd, no sign.
struct Q8LaneGemm {
  static constexpr int kTokens = 8;
  static constexpr int kRows = 4;  // 4 int + 4 float accumulators + x + 3 temporaries + ones + d_x
  using ActBlock = LaneActBlock;
#if HETMOE_AVX2_VNNI
  static constexpr int kOffset = 128;
  struct WeightBlock {
    uint8_t u[32];  // w_q[j] + 128
    float d;
  };
#else
  static constexpr int kOffset = 0;
  struct WeightBlock {
    int8_t q[32];     // w_q[j]
    uint8_t abs[32];  // |w_q[j]| (128 for -128)
    float d;
  };
#endif
  static void pack(const ActQ8Block* x, int64_t num_blocks, int64_t n, ActBlock* out) {
    pack_lane_tile<kOffset>(x, num_blocks, n, out);
  }

  template <int R>
  static void tile(const WeightBlock* w, const ActBlock* x, int64_t num_blocks, float* out) {
    __m256 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < num_blocks; ++b) {
      const ActBlock& xb = x[b];
      const WeightBlock* wb = w + b * R;
      __m256i dot[R];
#if HETMOE_AVX2_VNNI
      // Two chains per row, as in Mxfp4LaneGemm: 64 / 256 tokens 382 / 1500 µs → 352 / 1354 (EVEX stand-in).
      const __m256i neg_offset = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.neg_offset));
      __m256i dot_hi[R];
      for (int i = 0; i < R; ++i) dot[i] = neg_offset, dot_hi[i] = _mm256_setzero_si256();
      for (int k = 0; k < 4; ++k) {
        const __m256i xk = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k]));
        const __m256i xk_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k + 4]));
        for (int i = 0; i < R; ++i) {
          dot[i] = _mm256_dpbusd_avx_epi32(dot[i], broadcast_dword(wb[i].u + 4 * k), xk);
          dot_hi[i] = _mm256_dpbusd_avx_epi32(dot_hi[i], broadcast_dword(wb[i].u + 4 * k + 16), xk_hi);
        }
      }
      for (int i = 0; i < R; ++i) dot[i] = _mm256_add_epi32(dot[i], dot_hi[i]);
#else
      for (int i = 0; i < R; ++i) dot[i] = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i xk = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb.x[k]));
        for (int i = 0; i < R; ++i) {
          const __m256i sx = _mm256_sign_epi8(xk, broadcast_dword(reinterpret_cast<const uint8_t*>(wb[i].q) + 4 * k));
          dot[i] = dot_u8s8(dot[i], broadcast_dword(wb[i].abs + 4 * k), sx);
        }
      }
#endif
      const __m256 dx = _mm256_load_ps(xb.dx);
      for (int i = 0; i < R; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot[i]), dx), _mm256_set1_ps(wb[i].d), acc[i]);
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out + i * kTokens, acc[i]);
  }
};

/// Block pairs (quant_tile_steps in kernels_simd.h): the multiply by d_x, the fma with d_w and the int32 → float
/// conversion serve two blocks at once (int32 lanes of a ymm split between the two); the per-(row, token)
/// accumulator is a ymm of 8 partial sums.
struct PairAccOps {
  using Acc = __m256;
  static Acc acc_zero() { return _mm256_setzero_ps(); }
  static float acc_reduce(Acc a) { return xsimd::hadd(xsimd::batch<float, xsimd::fma3<xsimd::avx2>>(a)); }
};

struct Mxfp4Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kMXFP4BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 2;
  static constexpr int kGemmTokens = 4;
  // 5 to 8 tokens: one row × up to 8 tokens (8 accumulators, 3 weight registers and temporaries of 16 ymm).
  static constexpr int kGemmWideRows = 1;
  static constexpr int kGemmWideTokens = 8;

  struct Act {
    __m256i q;           // x_q[0..31]
    __m256i offset_sum;  // int16 k: 12 · (x_q[2k] + x_q[2k+1]); with VNNI int32 m: −12 · (x_q[4m] + … + x_q[4m+3])
  };
  static Act prepare(const ActQ8Block& xb) {
    const __m256i q = load_act_q(xb);
    const __m256i offset_sum = _mm256_maddubs_epi16(_mm256_set1_epi8(detail::kMxfp4Offset), q);
#if HETMOE_AVX2_VNNI
    return {q, _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(offset_sum, _mm256_set1_epi16(1)))};
#else
    return {q, offset_sum};
#endif
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
#if HETMOE_AVX2_VNNI
    return _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(a.offset_sum, w, a.q));
#else
    const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w, a.q), a.offset_sum);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
  }

  static xsimd::batch<float, Arch> scale(const uint8_t* block) {
    return _mm256_broadcast_ss(&detail::kMxfp4Scale.v[block[0]]);  // a load, no shuffle
  }

  // Block pairs: the 16 code bytes of both blocks in one ymm [block 0 | block 1]; its low nibbles (values 0..15 of
  // each block) and its high nibbles (values 16..31) each take one vpshufb, against a broadcast, shift, AND and vpshufb
  // per block before. The activations are prepared in the same layout, so two maddubs, an add and one madd give int32
  // lanes 0–3 for block 0 and 4–7 for block 1. |int16| ≤ 2 · 6096 before the offset is taken off: no saturation.
  using Acc = PairAccOps::Acc;
  static Acc acc_zero() { return PairAccOps::acc_zero(); }
  static float acc_reduce(Acc a) { return PairAccOps::acc_reduce(a); }

  static constexpr int64_t kStepBlocks = 2;
  struct StepAct {
    __m256i lo;          // [x0[0..15] | x1[0..15]]
    __m256i hi;          // [x0[16..31] | x1[16..31]]
    __m256i offset_sum;  // int16 k: 12 · (lo[2k] + lo[2k+1] + hi[2k] + hi[2k+1]); with VNNI int32 m: −(its pair sum)
    __m256 dx;           // d_x of block 0 / 1 per int32 lane
  };
  static StepAct prepare_step(const ActQ8Block* x) {
    const __m256i a0 = load_act_q(x[0]), a1 = load_act_q(x[1]);
    const __m256i lo = _mm256_permute2x128_si256(a0, a1, 0x20), hi = _mm256_permute2x128_si256(a0, a1, 0x31);
    const __m256i offset = _mm256_set1_epi8(detail::kMxfp4Offset);
    const __m256i offset_sum = _mm256_add_epi16(_mm256_maddubs_epi16(offset, lo), _mm256_maddubs_epi16(offset, hi));
    const __m256 dx = _mm256_blend_ps(_mm256_set1_ps(x[0].d), _mm256_set1_ps(x[1].d), 0xF0);
#if HETMOE_AVX2_VNNI
    return {lo, hi, _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(offset_sum, _mm256_set1_epi16(1))), dx};
#else
    return {lo, hi, offset_sum, dx};
#endif
  }

  struct StepWeights {
    __m256i lo, hi;  // codes + 12, in the layout of StepAct::lo / hi
    __m256 dw;       // d_w of block 0 / 1 per int32 lane
  };
  static StepWeights decode_step(const uint8_t* block) {
    const __m256i lut =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(detail::kMxfp4OffsetValues.v)));
    const __m256i qs = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 1))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + kBlockBytes + 1)), 1);
    const __m256i mask = _mm256_set1_epi8(0x0F);
    return {_mm256_shuffle_epi8(lut, _mm256_and_si256(qs, mask)),
            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(qs, 4), mask)),
            _mm256_blend_ps(_mm256_broadcast_ss(&detail::kMxfp4Scale.v[block[0]]),
                            _mm256_broadcast_ss(&detail::kMxfp4Scale.v[block[kBlockBytes]]), 0xF0)};
  }

  static Acc fma_step(const StepWeights& w, const StepAct& a, Acc acc) {
#if HETMOE_AVX2_VNNI
    const __m256i dot = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(a.offset_sum, w.lo, a.lo), w.hi, a.hi);
#else
    const __m256i pairs = _mm256_sub_epi16(
        _mm256_add_epi16(_mm256_maddubs_epi16(w.lo, a.lo), _mm256_maddubs_epi16(w.hi, a.hi)), a.offset_sum);
    const __m256i dot = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), a.dx), w.dw, acc);
  }

  static Acc fma_last(const uint8_t* block, const ActQ8Block& x, Acc acc) {
    return _mm256_fmadd_ps(_mm256_mul_ps(dot(decode(block), prepare(x)), _mm256_set1_ps(x.d)), scale(block), acc);
  }

  using Lanes = Mxfp4LaneGemm;
  // Row tiles below 9 tokens (the bit-identity of kGemmMatchesGemvBelowTokens; 5–8 tokens the wide tile of 1 row ×
  // all the tokens), and for a last partial lane tile of up to 6 tokens. Callgrind (bench_kernel_call avx2 mxfp4 256
  // 2880 N, instructions of the call): the wide tile at 5 / 6 / 7 / 8 tokens 0.78 / 0.89 / 1.00 / 1.11 M, against
  // 0.94 / 1.05 / 1.17 M for tiles of 2 rows × 4 tokens and 1.24 M for an 8-token lane tile (which adds ~0.9 M per
  // further tile): so 9 tokens = 8 in the lanes + 1 in the row tiles cost 1.55 M (2.14 M as two lane tiles), 12 tokens
  // 1.89 M (2.14), and a tail of 7 is cheaper as a partial lane tile (~0.9 M against 1.0 M).
  static constexpr int64_t kLaneMinTokens = kGemmMatchesGemvBelowTokens;
  static constexpr int64_t kLaneMinTail = 7;
  static void decode_lane(const uint8_t* block, Mxfp4LaneGemm::WeightBlock* out) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->q), decode(block));
    out->d = detail::kMxfp4Scale.v[block[0]];
  }
};

struct Q8Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kQ8_0BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 2;
  static constexpr int kGemmTokens = 4;
  // 5 to 8 tokens: one row × up to 8 tokens (8 accumulators, 3 weight registers and temporaries of 16 ymm).
  static constexpr int kGemmWideRows = 1;
  static constexpr int kGemmWideTokens = 8;

  struct Act {
    __m256i q;
  };
  static Act prepare(const ActQ8Block& xb) { return {load_act_q(xb)}; }

  using Weights = __m256i;  // w_q[0..31]
  static Weights decode(const uint8_t* block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  }

  static xsimd::batch<float, Arch> dot(Weights w, const Act& a) {
    return _mm256_cvtepi32_ps(dot_u8s8(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(a.q, w)));
  }

  static xsimd::batch<float, Arch> scale(const uint8_t* block) {
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    return xsimd::batch<float, Arch>(_cvtsh_ss(d));
  }

  // Block pairs: each block's dot as before (sign trick, maddubs, madd: 8 int32 partial sums), then one vphaddd
  // merges the two into [b0 b0 b1 b1 | b0 b0 b1 b1], so the conversion, the d_x multiply and the d_w fma are paid
  // once per pair; both f16 scales are converted by one vcvtph2ps and spread by one vpermps.
  using Acc = PairAccOps::Acc;
  static Acc acc_zero() { return PairAccOps::acc_zero(); }
  static float acc_reduce(Acc a) { return PairAccOps::acc_reduce(a); }

  static constexpr int64_t kStepBlocks = 2;
  struct StepAct {
    __m256i q0, q1;  // x_q of block 0 and 1
    __m256 dx;       // d_x per int32 lane of the merged sums: [0 0 1 1 | 0 0 1 1]
  };
  static StepAct prepare_step(const ActQ8Block* x) {
    return {load_act_q(x[0]), load_act_q(x[1]), _mm256_blend_ps(_mm256_set1_ps(x[0].d), _mm256_set1_ps(x[1].d), 0xCC)};
  }

  struct StepWeights {
    __m256i w0, w1;
    __m256 dw;  // [0 0 1 1 | 0 0 1 1] as StepAct::dx
  };
  static StepWeights decode_step(const uint8_t* block) {
    uint16_t d0, d1;
    std::memcpy(&d0, block, sizeof d0);
    std::memcpy(&d1, block + kBlockBytes, sizeof d1);
    const __m256 d = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(d0 | (static_cast<uint32_t>(d1) << 16))));
    return {decode(block), decode(block + kBlockBytes),
            _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1))};
  }

  static __m256i block_sums(__m256i w, __m256i x) {
    return dot_u8s8(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  }
  static Acc fma_step(const StepWeights& w, const StepAct& a, Acc acc) {
    const __m256i dot = _mm256_hadd_epi32(block_sums(w.w0, a.q0), block_sums(w.w1, a.q1));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), a.dx), w.dw, acc);
  }

  static Acc fma_last(const uint8_t* block, const ActQ8Block& x, Acc acc) {
    return _mm256_fmadd_ps(_mm256_mul_ps(dot(decode(block), prepare(x)), _mm256_set1_ps(x.d)), scale(block), acc);
  }

  using Lanes = Q8LaneGemm;
  // Callgrind, 256 rows × 2880, AVX2: an 8-token lane tile costs 1.74 M instructions and each further one ~1.4 M, 20 %
  // less per token than the row tiles from 64 tokens on, but a partial tile costs a whole one; the wide row tile of 1
  // row × 5–8 tokens costs 0.96 / 1.11 / 1.25 / 1.41 M. So the lanes take whole tiles only, from 9 tokens on (below,
  // the row tiles give the GEMV's bits).
  static constexpr int64_t kLaneMinTokens = kGemmMatchesGemvBelowTokens;
  static constexpr int64_t kLaneMinTail = Q8LaneGemm::kTokens;  // whole tiles only
  static void decode_lane(const uint8_t* block, Q8LaneGemm::WeightBlock* out) {
    const __m256i w = decode(block);
#if HETMOE_AVX2_VNNI
    const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->u), _mm256_xor_si256(w, bias));
#else
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->q), w);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->abs), _mm256_abs_epi8(w));
#endif
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    out->d = _cvtsh_ss(d);
  }
};

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS

#include "cpu_kernels/kernels_simd.h"

namespace hetmoe::cpu::HETMOE_SIMD_NS {

// ---- kMXFP4_R16 (and kQ8_0_R16 with VNNI): 8 rows per ymm (cpu_kernels/repack.h) --------------------------------
//
// A group's block holds 64-byte chunks of code dwords: rows 0–7's in the first 32 bytes, rows 8–15's in the second.
// So a ymm load is 8 rows × 4 codes, and chunk j of a row half meets the token's activation dword at x_q + 4j
// broadcast (MXFP4: chunks 0–3 are the low nibbles, values 4j..4j+3, decoded by AND and vpshufb into the offset
// values code + 12 (unsigned); chunks 4–7 the high nibbles of the same 4 loads, values 16 + 4(j − 4)..; Q8_0: the 8
// stored chunks, q + 128, as loaded). One maddubs per chunk (two int16 pair sums per row; MXFP4 |pair| ≤ 2 · 24 · 127
// = 6096, so four add in int16 before one madd widens them; with AVX-VNNI one vpdpbusd each, which also makes Q8_0's
// q + 128 possible: maddubs would saturate there, so plain AVX2 keeps Q8_0 in the file's layout). The int32 lanes are
// the rows: the dot starts at −offset · Σ_j x_q[j] (12 or 128: the offset's correction) and ends with the row's exact
// Σ_j w_q[j] · x_q[j]; then acc += (float(dot) · d_x) · d_w in block order by an fma, and every token gets the bits it
// gets alone: for MXFP4 the scalar kernel's (d_w a power of two, so the fma rounds as its multiply and add), for Q8_0
// the AVX-512 R16 kernel's. MXFP4 per 8 rows and block: ~24 instructions decode the weights (shared by the tile's
// tokens), then per token 8 broadcasts, 8 maddubs, 6 int16 adds, 2 madd, 2 adds, convert, multiply, fma. AVX2's 16
// ymm registers hold one half-group's 8 weight vectors and a few temporaries.

/// Tokens per pass over a group (the weights are decoded again for each pass, from cache).
inline constexpr int kR16Tokens = 8;

/// Bytes ahead of the block being decoded that the loop prefetches into L2.
inline constexpr int64_t kR16PrefetchBytes = 8192;

/// −offset · Σ_j x_q[j] of one activation block (the correction of weights stored with an offset).
template <int kOffset>
inline int32_t r16_offset_seed(const ActQ8Block& xb) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i q = load_act_q(xb);
  // maddubs(1, q): int16 pairs of |sum| ≤ 254, then madd: int32 sums of 4; the offset multiplies the total.
  const __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), ones);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return -kOffset * _mm_cvtsi128_si32(s);
}

/// d_w = 2^(e − 128) of 8 rows from their 8 scale bytes, the bits of detail::kMxfp4Scale: (e − 1) << 23 for e ≥ 2,
/// the subnormals 0x00200000 << e for e in {0, 1}.
inline __m256 mxfp4_r16_scales(const uint8_t* e8) {
  const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(e8)));
  const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
  const __m256i subnormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
  return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, subnormal, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e)));
}

/// The two R16 layouts' row halves for the tiles below: decode(blk, h, w) gives rows 8h..8h+7's 8 unsigned weight
/// vectors (w[j] meets the activation dword at x_q + 4j) and their d_w. Q: the file layout's ops of the type (its
/// Lanes for the token lanes).
struct Mxfp4R16Half {
  using Q = Mxfp4Ops;
  static constexpr int64_t kBytes = kMxfp4R16BlockBytes;
  /// From this many tokens on the token lanes (rows decoded from the groups) instead of passes: BM_Gemm (one 2880 ×
  /// 2880 expert from DRAM, 1 thread, Zen 4, best of 3 interleaved): passes 9 / 12 / 16 / 64 tokens ~905 (estimated
  /// from 4 + 5) / ~1120 / 1400 / 5590 µs, lanes 1076 / 1305 / 1515 / 5293.
  static constexpr int64_t kLaneMinTokens = 17;
  static constexpr bool kActRecords = true;  // ActsRecords (see there)
  static int32_t seed(const ActQ8Block& xb) { return r16_offset_seed<detail::kMxfp4Offset>(xb); }
  __m256i lut =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(detail::kMxfp4OffsetValues.v)));
  __m256i mask = _mm256_set1_epi8(0x0F);
  __m256 decode(const uint8_t* blk, int64_t h, __m256i* w) const {
    for (int k = 0; k < 4; ++k) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 64 * k + 32 * h));
      w[k] = _mm256_shuffle_epi8(lut, _mm256_and_si256(c, mask));
      w[k + 4] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(c, 4), mask));
    }
    return mxfp4_r16_scales(blk + 8 * h);
  }
};

#if HETMOE_AVX2_VNNI
/// kQ8_0_R16's row half: the 8 code chunks as stored (q + 128, unsigned; vpdpbusd only: maddubs would saturate) and
/// the 8 f16 scales converted.
struct Q8R16Half {
  using Q = Q8Ops;
  static constexpr int64_t kBytes = kQ8R16BlockBytes;
  /// The passes win longer than for MXFP4: 2880 × 2880 from DRAM, 1 thread, the EVEX build on Zen 4 standing in for
  /// AVX-VNNI, passes against lanes at 17 / 24 / 32 / 48 / 64 tokens 1371 / 1861 / 2510 / 3735 / 4968 against 1889 /
  /// 2208 / 2708 / 3773 / 4739 µs. (Q8LaneGemm's 4-row tiles each decode a whole 8-row half-block here; a decoder of
  /// just the 4 rows in 128-bit vectors measured the same.)
  static constexpr int64_t kLaneMinTokens = 48;
  static constexpr bool kActRecords = false;
  static int32_t seed(const ActQ8Block& xb) { return r16_offset_seed<128>(xb); }
  __m256 decode(const uint8_t* blk, int64_t h, __m256i* w) const {
    for (int k = 0; k < 8; ++k) w[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 + 64 * k + 32 * h));
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
  }
};
#endif

/// The activations as the R16 tiles read them, per token t and block b: the dword x_q[4j..4j+3] in all 8 lanes
/// (act(t, b, j), j in [0, 8)), the block's seed −offset · Σ x_q and d_x likewise.
/// ActsBroadcast broadcasts them from the ActQ8Blocks x ([T][num_blocks], token stride `stride` blocks) where they are
/// used (seeds: [T][num_blocks] precomputed, or nullptr: computed there). ActsRecords reads them from R16ActBlock
/// records built once per call (r16_broadcast_acts): the MXFP4 tiles then feed maddubs whole vectors instead of
/// broadcasting 10 values per token and 8-row half-block (BM_Gemm MXFP4 AVX2, two alternating rounds: 1 / 2 / 4 / 8
/// tokens 153–166 / 235–236 / 368–374 / 670–677 µs against 175–187 / 260–272 / 424–432 / 711–747). Q8_0's tiles
/// stay with ActsBroadcast: their records (T · 320 bytes per 544-byte block) fall out of L1 (EVEX stand-in, 4 / 8
/// tokens 453 / 861 against 376 / 633 µs).
template <class Half>
struct ActsBroadcast {
  const ActQ8Block* x;
  const int32_t* seeds;
  int64_t stride;
  __m256i seed(int64_t t, int64_t b) const {
    return _mm256_set1_epi32(seeds != nullptr ? seeds[t * stride + b] : Half::seed(x[t * stride + b]));
  }
  __m256i act(int64_t t, int64_t b, int j) const {
    return broadcast_dword(reinterpret_cast<const uint8_t*>(x[t * stride + b].q) + 4 * j);
  }
  __m256 dx(int64_t t, int64_t b) const { return _mm256_set1_ps(x[t * stride + b].d); }
  ActsBroadcast advance(int64_t t0) const { return {x + t0 * stride, seeds ? seeds + t0 * stride : nullptr, stride}; }
};

struct alignas(32) R16ActBlock {
  __m256i a[8];
  __m256i seed;
  __m256 dx;
};

template <int32_t (*Seed)(const ActQ8Block&)>
inline void r16_broadcast_acts(const ActQ8Block* x, int64_t n, R16ActBlock* out) {
  for (int64_t i = 0; i < n; ++i) {
    const auto* q = reinterpret_cast<const uint8_t*>(x[i].q);
    for (int j = 0; j < 8; ++j) _mm256_store_si256(&out[i].a[j], broadcast_dword(q + 4 * j));
    _mm256_store_si256(&out[i].seed, _mm256_set1_epi32(Seed(x[i])));
    _mm256_store_ps(reinterpret_cast<float*>(&out[i].dx), _mm256_set1_ps(x[i].d));
  }
}

struct ActsRecords {
  const R16ActBlock* xa;
  int64_t stride;
  __m256i seed(int64_t t, int64_t b) const { return _mm256_load_si256(&xa[t * stride + b].seed); }
  __m256i act(int64_t t, int64_t b, int j) const { return _mm256_load_si256(&xa[t * stride + b].a[j]); }
  __m256 dx(int64_t t, int64_t b) const { return xa[t * stride + b].dx; }
  ActsRecords advance(int64_t t0) const { return {xa + t0 * stride, stride}; }
};

/// One group (16 rows) × T tokens of the layout Half: y[t · y_stride + i] for rows i in [0, 16); the activations
/// from `acts` (tokens 0..T−1).
template <class Half, int T, class Acts>
inline void r16_tile(const uint8_t* group, int64_t num_blocks, const Acts& acts, float* y, int64_t y_stride) {
  constexpr int kPrefetchLines = static_cast<int>((Half::kBytes + 63) / 64);
  const Half half;
  // Up to 2 accumulators live in registers; more in L1 (a load and a store per token and half-block): in registers
  // they would leave too few for the 8 weight vectors, and GCC 12's unrolled token loops spilled the weights instead
  // (BM_Gemm MXFP4: 2 tokens 264 µs in registers against 284 in L1; 4 tokens 425 in L1 against 464).
  constexpr bool kRegisterAcc = T <= 2;
  alignas(32) float acc[2][T][8] = {};
  __m256 racc[2][T];
  if constexpr (kRegisterAcc)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < T; ++t) racc[h][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* blk = group + b * Half::kBytes;
    for (int q = 0; q < kPrefetchLines; ++q) __builtin_prefetch(blk + kR16PrefetchBytes + 64 * q, 0, 1);
    for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7
      __m256i w[8];
      const __m256 dw = half.decode(blk, h, w);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) {
        __m256i dot = acts.seed(t, b);
#if HETMOE_AVX2_VNNI
        // Two chains of 4 (as the AVX-512 tiles, kernels_r16_avx512.h). The EVEX stand-in on Zen 4, one 256 × 2880
        // matrix in L2, best of 40: MXFP4 1 / 4 / 8 tokens 12.7 / 27.2 / 50.5 µs → 11.1 / 25.4 / 47.3, Q8_0 4 / 8
        // tokens 28.8 / 53.0 → 25.8 / 45.8.
        __m256i dot_hi = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
          dot = _mm256_dpbusd_avx_epi32(dot, w[j], acts.act(t, b, j));
          dot_hi = _mm256_dpbusd_avx_epi32(dot_hi, w[j + 4], acts.act(t, b, j + 4));
        }
        dot = _mm256_add_epi32(dot, dot_hi);
#else
        const __m256i ones = _mm256_set1_epi16(1);
        for (int j = 0; j < 8; j += 4) {  // ≤ 4 · 6096 in each int16 lane (MXFP4 only)
          const __m256i p = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[j], acts.act(t, b, j)),
                                                              _mm256_maddubs_epi16(w[j + 1], acts.act(t, b, j + 1))),
                                             _mm256_add_epi16(_mm256_maddubs_epi16(w[j + 2], acts.act(t, b, j + 2)),
                                                              _mm256_maddubs_epi16(w[j + 3], acts.act(t, b, j + 3))));
          dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, ones));
        }
#endif
        const __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), acts.dx(t, b));
        if constexpr (kRegisterAcc) {
          racc[h][t] = _mm256_fmadd_ps(scaled, dw, racc[h][t]);
        } else {
          float* a = acc[h][t];
          _mm256_store_ps(a, _mm256_fmadd_ps(scaled, dw, _mm256_load_ps(a)));
        }
      }
    }
  }
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < T; ++t) {
      if constexpr (kRegisterAcc) _mm256_storeu_ps(y + t * y_stride + 8 * h, racc[h][t]);
      else std::memcpy(y + t * y_stride + 8 * h, acc[h][t], sizeof acc[h][t]);
    }
}

/// r16_tile for the T in [T, kR16Tokens] that equals num_tokens (none when outside).
template <class Half, class Acts, int T = 1>
inline void r16_tile_of(int64_t num_tokens, const uint8_t* group, int64_t num_blocks, const Acts& acts, float* y,
                        int64_t y_stride) {
  if constexpr (T <= kR16Tokens) {
    if (num_tokens == T) return r16_tile<Half, T>(group, num_blocks, acts, y, y_stride);
    r16_tile_of<Half, Acts, T + 1>(num_tokens, group, num_blocks, acts, y, y_stride);
  }
}

/// Every group of rows [row_begin, row_end) in passes of up to kR16Tokens tokens, the passes as even as the count
/// allows (12 tokens: 6 + 6).
template <class Half, class Acts>
inline void r16_passes(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, int64_t num_tokens,
                       int64_t num_blocks, const Acts& acts, float* y, int64_t y_stride) {
  const int64_t group_bytes = kR16Rows * static_cast<int64_t>(row_bytes);
  const int64_t num_passes = (num_tokens + kR16Tokens - 1) / kR16Tokens;
  for (int64_t g = row_begin / kR16Rows; g < row_end / kR16Rows; ++g) {
    const uint8_t* group = w + g * group_bytes;
    float* yg = y + (g * kR16Rows - row_begin);
    for (int64_t p = 0, t0 = 0; p < num_passes; ++p) {
      const int64_t n = (num_tokens - t0) / (num_passes - p);
      r16_tile_of<Half>(n, group, num_blocks, acts.advance(t0), yg + t0 * y_stride, y_stride);
      t0 += n;
    }
  }
}

/// Rows [r, r + kR) of an R16 matrix, kR = Half::Q::Lanes::kRows (8 for MXFP4, 4 for Q8_0; r a multiple of kR: in
/// half h = (r / 8) % 2 of group r / 16) decoded for the token lanes: wd[b · kR + i] = row r + i's block b as
/// Half::Q::Lanes::WeightBlock (unsigned codes in value order, d_w). The half-block's 8 weight vectors (lane i: row
/// i's 4 codes of chunk j) are transposed with unpacks into rows: ~60 instructions per 8 rows and block against ~6
/// per row for the file layout's decode_lane (4 rows: the whole half-block is decoded for either four).
template <class Half>
inline void r16_decode_lane_rows(const uint8_t* w, uint64_t row_bytes, int64_t r, int64_t num_blocks,
                                 typename Half::Q::Lanes::WeightBlock* wd) {
  constexpr int64_t kR = Half::Q::Lanes::kRows;
  static_assert(kR == 4 || kR == 8);
  const Half half;
  const int64_t h = (r / 8) % 2;
  const int upper = kR == 4 ? static_cast<int>((r / 4) % 2) : 0;  // 4 rows: rows 4..7 of the half
  const uint8_t* group = w + (r / kR16Rows) * kR16Rows * static_cast<int64_t>(row_bytes);
  // rows[i]: row i's 16 bytes of chunks v[0..3] in the low 128-bit lane, row i + 4's in the high one (i in [0, 4)).
  const auto transpose = [](const __m256i* v, __m256i* rows) {
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    rows[0] = _mm256_unpacklo_epi64(t0, t2);
    rows[1] = _mm256_unpackhi_epi64(t0, t2);
    rows[2] = _mm256_unpacklo_epi64(t1, t3);
    rows[3] = _mm256_unpackhi_epi64(t1, t3);
  };
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* blk = group + b * Half::kBytes;
    for (int q = 0; q < static_cast<int>((Half::kBytes + 63) / 64); ++q)
      __builtin_prefetch(blk + kR16PrefetchBytes + 64 * q, 0, 1);
    __m256i v[8];
    alignas(32) float d[8];
    _mm256_store_ps(d, half.decode(blk, h, v));
    __m256i lo[4], hi[4];  // values 0..15 and 16..31
    transpose(v, lo);
    transpose(v + 4, hi);
    auto* out = wd + b * kR;
    if constexpr (kR == 8) {
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(&out[i]), _mm256_permute2x128_si256(lo[i], hi[i], 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(&out[i + 4]), _mm256_permute2x128_si256(lo[i], hi[i], 0x31));
      }
    } else {
      for (int i = 0; i < 4; ++i)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(&out[i]), upper != 0
                                                                      ? _mm256_permute2x128_si256(lo[i], hi[i], 0x31)
                                                                      : _mm256_permute2x128_si256(lo[i], hi[i], 0x20));
    }
    for (int i = 0; i < kR; ++i) out[i].d = d[i + 4 * upper];
  }
}

/// KernelTable::gemm_mxfp4_r16 / gemm_q8_0_r16 for the layout Half: r16_passes, from Half::kLaneMinTokens on the
/// token lanes (a last partial tile of fewer than kLaneMinTail tokens in passes). One token reads one stream: two groups side by side, as the AVX-512 kernel
/// decodes, were not faster here (BM_Gemv MXFP4 expert_4x3, Zen 4, three alternating pairs: 1 thread 17–23 against
/// 19–24 GB/s, 2 threads 27–31 against 29–37).
template <class Half>
void gemm_r16(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
              int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  using Q = typename Half::Q;
  using WeightBlock = typename Q::Lanes::WeightBlock;
  static_assert(offsetof(WeightBlock, d) == 32 && sizeof(WeightBlock) == 36, "32 code bytes, then d_w");
  const int64_t num_blocks = num_cols / kBlock;
  assert(row_begin % kR16Rows == 0 && row_end % kR16Rows == 0);  // whole groups (KernelTable::gemm_mxfp4_r16)
  if (row_end <= row_begin || num_tokens <= 0) return;
  if (num_tokens >= Half::kLaneMinTokens) {
    constexpr int64_t kT = Q::Lanes::kTokens;
    const int64_t tail = num_tokens % kT;
    const int64_t lane_tokens = tail >= Q::kLaneMinTail ? num_tokens : num_tokens - tail;
    const auto decode_rows = [&](int64_t r, WeightBlock* wd) {
      r16_decode_lane_rows<Half>(w, row_bytes, r, num_blocks, wd);
    };
    if (gemm_lanes<Q>(row_begin, row_end, x, lane_tokens, num_blocks, y, y_stride, decode_rows)) {
      if (lane_tokens == num_tokens) return;
      x += lane_tokens * num_blocks;
      y += lane_tokens * y_stride;
      num_tokens -= lane_tokens;
    }
  }
  if constexpr (Half::kActRecords) {
    auto* xa = static_cast<R16ActBlock*>(
        detail::thread_scratch(static_cast<uint64_t>(num_tokens * num_blocks) * sizeof(R16ActBlock)));
    if (xa != nullptr) {
      r16_broadcast_acts<Half::seed>(x, num_tokens * num_blocks, xa);  // [num_tokens][num_blocks]
      return r16_passes<Half>(w, row_bytes, row_begin, row_end, num_tokens, num_blocks, ActsRecords{xa, num_blocks},
                              y, y_stride);
    }
  }
  const int32_t* seeds = r16_seeds<Half::seed>(x, num_tokens * num_blocks);  // [num_tokens][num_blocks] or nullptr
  r16_passes<Half>(w, row_bytes, row_begin, row_end, num_tokens, num_blocks, ActsBroadcast<Half>{x, seeds, num_blocks},
                   y, y_stride);
}

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS

namespace hetmoe::cpu::detail {

#if HETMOE_AVX2_VNNI
#ifndef HETMOE_AVX2_VNNI_TABLE
#define HETMOE_AVX2_VNNI_TABLE kernel_table_avx2_vnni  // tests/avx2_vnni_evex_kernels.cpp builds another
#endif
const KernelTable& HETMOE_AVX2_VNNI_TABLE() {
  static constexpr KernelTable kTable = [] {
    KernelTable t = HETMOE_SIMD_NS::make_kernel_table(Isa::kAvx2Vnni);
    t.gemm_mxfp4_r16 = HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Mxfp4R16Half>;
    t.gemm_q8_0_r16 = HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Q8R16Half>;
    return t;
  }();
#else
const KernelTable& kernel_table_avx2() {
  static constexpr KernelTable kTable = [] {
    KernelTable t = HETMOE_SIMD_NS::make_kernel_table(Isa::kAvx2);
    t.gemm_mxfp4_r16 = HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Mxfp4R16Half>;
    return t;
  }();
#endif
  return kTable;
}

}  // namespace hetmoe::cpu::detail
