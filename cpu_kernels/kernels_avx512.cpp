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
// -Wmaybe-uninitialized (and, for some such as _mm512_shuffle_f32x4, -Wuninitialized) reports at every inlined use
// (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cassert>
#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/repack.h"

#define HETMOE_SIMD_NS avx512_kernels

#include "cpu_kernels/kernels_r16_avx512.h"

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

/// Prefill GEMM with the tokens across the lanes ("token lanes"; used by gemm_quant_lanes in kernels_simd.h for
/// num_tokens ≥ kLaneMinTokens). A zmm holds 4 activation bytes of each of 16 tokens; one vpdpbusd with a weight
/// dword broadcast from memory ({1to16}) adds 4 products to each token's sum, so a 32-value block of one row costs 8
/// vpdpbusd for 16 tokens and every int32 lane ends with the block's whole dot for its token. The activations are
/// the unsigned operand, stored as x_q + 128 (1..255); the weights, decoded once per row tile to signed bytes, are
/// the signed one; the accumulator starts at −128 · Σ w_q (per row and block, computed at decode) to undo the offset
/// (|Σ| ≤ 32 · 255 · 128, no overflow). Per block and row: 8 vpdpbusd, a broadcast seed, cvt, mul, fma: GCC 12's
/// loop has 117 instructions per block of 8 rows × 16 tokens (0.91 per row, token and block), against 136 per
/// block of 4 rows × 4 tokens (8.5) in gemm_quant_tile; decoding a row's block (24 instructions, Σ w_q included)
/// is paid once per row tile and token chunk.
struct LaneGemm {
  static constexpr int kTokens = 16;  // tokens per tile (zmm int32 lanes)
  static constexpr int kRows = 8;     // rows per register tile: 8 int + 8 float accumulators + x + d_x
  struct alignas(64) ActBlock {
    uint8_t xu[8][16][4];  // [k][token][j]: x_q[4k + j] + 128 of the tile's token; 128 (x = 0) past its tokens
    float dx[16];          // d_x per token; 0 past the tile's tokens
  };
  struct WeightBlock {
    int8_t q[32];      // w_q[j], j in [0, 32)
    float d;           // d_w
    int32_t neg_bias;  // −128 · Σ_j w_q[j]
  };

  /// n ≤ kTokens tokens of token-major x ([n][num_blocks]) → out[num_blocks].
  static void pack(const ActQ8Block* x, int64_t num_blocks, int64_t n, ActBlock* out) {
    for (int64_t b = 0; b < num_blocks; ++b) {
      ActBlock& o = out[b];
      for (int64_t t = 0; t < kTokens; ++t) {
        if (t < n) {
          const ActQ8Block& xb = x[t * num_blocks + b];
          for (int k = 0; k < 8; ++k) {
            uint32_t v;
            std::memcpy(&v, xb.q + 4 * k, 4);
            v ^= 0x80808080u;
            std::memcpy(o.xu[k][t], &v, 4);
          }
          o.dx[t] = xb.d;
        } else {
          for (int k = 0; k < 8; ++k) std::memset(o.xu[k][t], 0x80, 4);
          o.dx[t] = 0.0f;
        }
      }
    }
  }

  /// Stores d, q and neg_bias for weight codes w (32 signed bytes in a ymm).
  static void set_weights(__m256i w, float d, WeightBlock* out) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->q), w);
    // Σ (w + 128) by vpsadbw against zero (four 8-byte partial sums), then − 32 · 128.
    const __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))),
                                        _mm256_setzero_si256());
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
    s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
    out->d = d;
    out->neg_bias = -128 * (_mm_cvtsi128_si32(s) - 32 * 128);
  }

  /// out[i][t] = Σ_b (float(Σ_j w_q[i,b,j] · x_q[t,b,j]) · d_x[t,b]) · d_w[i,b] for R rows × kTokens tokens.
  /// w: [num_blocks][R] decoded rows; x: [num_blocks] packed blocks of one tile; out: [R][kTokens].
  template <int R>
  static void tile(const WeightBlock* w, const ActBlock* x, int64_t num_blocks, float* out) {
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < num_blocks; ++b) {
      const ActBlock& xb = x[b];
      const WeightBlock* wb = w + b * R;
      __m512i dot[R];
      for (int i = 0; i < R; ++i) dot[i] = _mm512_set1_epi32(wb[i].neg_bias);
      for (int k = 0; k < 8; ++k) {
        const __m512i xk = _mm512_load_si512(xb.xu[k]);
        for (int i = 0; i < R; ++i) dot[i] = dpbusd_broadcast(dot[i], xk, wb[i].q + 4 * k);
      }
      const __m512 dx = _mm512_load_ps(xb.dx);
      for (int i = 0; i < R; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot[i]), dx), _mm512_set1_ps(wb[i].d), acc[i]);
    }
    for (int i = 0; i < R; ++i) _mm512_storeu_ps(out + i * kTokens, acc[i]);
  }
};

/// Block pairs (quant_tile_steps in kernels_simd.h): one zmm holds two 32-value blocks, so one vpdpbusd, convert,
/// multiply by d_x and fma with d_w serve both; the per-(row, token) accumulator is a zmm of 16 partial sums.
struct PairAccOps {
  using Acc = __m512;
  static Acc acc_zero() { return _mm512_setzero_ps(); }
  static float acc_reduce(Acc a) { return _mm512_reduce_add_ps(a); }
};

/// Activations of four blocks for steps of 4 blocks (Mxfp4Ops, Q8Ops): `lo` holds values 0..15 of blocks 0–3 (one
/// 128-bit lane each), `hi` values 16..31, so that the two vpdpbusd of a step add block i's products into int32 lane
/// group i (lanes 4i..4i+3) and one convert, d_x multiply and d_w fma serve the four blocks.
struct Step4Act {
  __m512i lo, hi;      // [x0[0..15] | x1[0..15] | x2[0..15] | x3[0..15]], and values 16..31
  __m512i neg_offset;  // −offset · the 4-value sums of lo and hi, per int32 lane (the weights' unsigned offset)
  __m512 dx;           // d_x of block i in lane group i
};

/// x[0..3] in the Step4Act layout, for weights stored as w_q + offset.
inline Step4Act prepare_step4(const ActQ8Block* x, int8_t offset) {
  __m256i a[4];
  for (int i = 0; i < 4; ++i) a[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].q));
  const __m512i z01 = _mm512_inserti64x4(_mm512_castsi256_si512(a[0]), a[1], 1);  // [a0 lo | a0 hi | a1 lo | a1 hi]
  const __m512i z23 = _mm512_inserti64x4(_mm512_castsi256_si512(a[2]), a[3], 1);
  const __m512i lo = _mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(2, 0, 2, 0));
  const __m512i hi = _mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(3, 1, 3, 1));
  const __m512i zero = _mm512_setzero_si512();
  const __m512i off = _mm512_set1_epi8(offset);
  const __m512i sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, off, lo), off, hi);
  const __m512 d = _mm512_castps128_ps512(_mm_setr_ps(x[0].d, x[1].d, x[2].d, x[3].d));
  const __m512 dx = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), d);
  return {lo, hi, _mm512_sub_epi32(zero, sum), dx};
}

/// acc + the step's (float(dot) · d_x) · d_w per lane, for weights lo / hi / dw in the Step4Act layout.
inline __m512 fma_step4(__m512i w_lo, __m512i w_hi, __m512 dw, const Step4Act& a, __m512 acc) {
  const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(a.neg_offset, w_lo, a.lo), w_hi, a.hi);
  return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), a.dx), dw, acc);
}

struct Mxfp4Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kMXFP4BlockBytes;
  // 8 rows share each activation block's preparation (load, vpdpbusd, negate); 8 accumulators fit easily in the 32
  // registers. 0.74 ns per row-block in L2 against 0.80 with 4 rows.
  static constexpr int kGemvRows = 8;
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 4;
  // 5 to 8 tokens: 2 rows × up to 8 tokens = 16 accumulators + 2 × 3 weight registers + the activation operands.
  static constexpr int kGemmWideRows = 2;
  static constexpr int kGemmWideTokens = 8;

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

  // Steps of 4 blocks in two zmm: `lo` holds values 0..15 of blocks 0–3 (one 128-bit lane each), `hi` values 16..31 —
  // the low and the high nibbles of the four blocks' 16 code bytes, so a step decodes with one shift, two ANDs and two
  // vpshufb (10 instructions with the loads for 128 values; 4 per block with the single-block decode). Both vpdpbusd
  // add into the same int32 lanes (lane group i = block i, mask bits 4i..4i+3), so one convert, d_x multiply and d_w
  // fma serve the four blocks. GCC 12's GEMV loop (8 rows): 5.9 instructions per row and block with the activation
  // steps packed per call and the scales from one load (below), prefetch included; 7.1 with the activation steps
  // prepared in the loop, 8.6 with pairs of blocks and 11.75 one block at a time (docs/performance.md).
  using Acc = PairAccOps::Acc;
  static Acc acc_zero() { return PairAccOps::acc_zero(); }
  static float acc_reduce(Acc a) { return PairAccOps::acc_reduce(a); }

  static constexpr int64_t kStepBlocks = 4;
  using StepAct = Step4Act;
  static StepAct prepare_step(const ActQ8Block* x) { return prepare_step4(x, detail::kMxfp4Offset); }

  struct StepWeights {
    __m512i lo, hi;  // codes + 12 in the layout of StepAct::lo / hi
    __m512 dw;       // d_w of block i in lane group i
  };
  static StepWeights decode_step(const uint8_t* block) {
    const __m512i lut =
        _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(detail::kMxfp4OffsetValues.v)));
    auto codes2 = [](const uint8_t* b) {  // code bytes of blocks b and b + 1
      return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 1))),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kBlockBytes + 1)), 1);
    };
    const __m512i codes =
        _mm512_inserti64x4(_mm512_castsi256_si512(codes2(block)), codes2(block + 2 * kBlockBytes), 1);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(codes, mask));
    const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(codes, 4), mask));
    // The scales: byte 17i of the step (block i's exponent e_i) lies at position i of 128-bit lane i, so one load of
    // the step's first 64 bytes and one vpshufb put e_i into every int32 of lane group i; d_w = 2^(e − 128) exactly
    // (vscalefps, subnormals for e < 2 included) — 5 instructions against 4 byte loads and 4 broadcasts.
    constexpr int kLane0 = static_cast<int>(0x80808000u);  // bytes [0, 0x80, 0x80, 0x80]: byte 0, three zeros
    const __m512i ctrl = _mm512_set_epi32(kLane0 + 3, kLane0 + 3, kLane0 + 3, kLane0 + 3, kLane0 + 2, kLane0 + 2,
                                          kLane0 + 2, kLane0 + 2, kLane0 + 1, kLane0 + 1, kLane0 + 1, kLane0 + 1,
                                          kLane0, kLane0, kLane0, kLane0);
    const __m512i e = _mm512_shuffle_epi8(_mm512_loadu_si512(block), ctrl);
    const __m512 dw =
        _mm512_scalef_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(_mm512_sub_epi32(e, _mm512_set1_epi32(128))));
    return {lo, hi, dw};
  }

  static Acc fma_step(const StepWeights& w, const StepAct& a, Acc acc) { return fma_step4(w.lo, w.hi, w.dw, a, acc); }

  static Acc fma_last(const uint8_t* block, const ActQ8Block& x, Acc acc) {
    const __m256 part = _mm256_mul_ps(_mm256_mul_ps(dot(decode(block), prepare(x)), _mm256_set1_ps(x.d)), scale(block));
    return _mm512_add_ps(acc, _mm512_zextps256_ps512(part));
  }

  using Lanes = LaneGemm;
  // Row tiles below 9 tokens: with 4-block steps and steps prepared once per call they cost 2.9 instructions per row,
  // token and block (11.6 per 4-token tile), against ~39 per row and block for a 16-token lane tile with its decode
  // (2.4 at 16 tokens, 4.8 at 8): at 5–8 tokens the row tiles take 60–75 % of the lanes' instructions (GCC 12's
  // loops). From 9 tokens the margin is thin, so the lanes take over there (and below 9 the row tiles give the GEMV's
  // bits, kGemmMatchesGemvBelowTokens).
  static constexpr int64_t kLaneMinTokens = 9;
  static constexpr int64_t kLaneMinTail = 1;  // partial tiles too
  /// The block as signed codes (the doubled E2M1 values, −12..12) for LaneGemm.
  static void decode_lane(const uint8_t* block, LaneGemm::WeightBlock* out) {
    const __m256i lut =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ref::kMxfp4Values)));
    const __m256i qs = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 1)));
    const __m256i nibbles =
        _mm256_and_si256(_mm256_srlv_epi32(qs, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F));
    LaneGemm::set_weights(_mm256_shuffle_epi8(lut, nibbles), detail::kMxfp4Scale.v[block[0]], out);
  }
};

struct Q8Ops {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static constexpr int64_t kBlockBytes = kQ8_0BlockBytes;
  static constexpr int kGemvRows = 4;
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmTokens = 4;
  static constexpr int kGemmWideRows = 2;  // 16 accumulators + 2 × 3 weight registers
  static constexpr int kGemmWideTokens = 8;

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

  // Steps of 4 blocks in the layout of Step4Act (as Mxfp4Ops): the blocks' values 0..15 in one zmm and 16..31 in
  // another (two 256-bit loads of block pairs, two 128-bit lane shuffles), so a step is two vpdpbusd into lane groups
  // of one block each and one convert, d_x multiply and d_w fma for the four blocks; the four f16 scales are
  // broadcast into one ymm of halves (vpbroadcastw, three under masks) and converted together. Per (row, token)
  // and 4 blocks: the seed copy, 2 vpdpbusd, convert, multiply, fma — against twice the convert, multiply and fma
  // with pairs of blocks (the batched-decode tiles pay that per token).
  using Acc = PairAccOps::Acc;
  static Acc acc_zero() { return PairAccOps::acc_zero(); }
  static float acc_reduce(Acc a) { return PairAccOps::acc_reduce(a); }

  static constexpr int64_t kStepBlocks = 4;
  using StepAct = Step4Act;
  static StepAct prepare_step(const ActQ8Block* x) { return prepare_step4(x, static_cast<int8_t>(0x80)); }

  struct StepWeights {
    __m512i lo, hi;  // w_q + 128 in the layout of StepAct::lo / hi
    __m512 dw;       // d_w of block i in lane group i
  };
  static StepWeights decode_step(const uint8_t* block) {
    auto pair = [](const uint8_t* b) {  // [block b | block b + 1] codes
      return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kBlockBytes + 2)), 1);
    };
    const __m512i z01 = pair(block), z23 = pair(block + 2 * kBlockBytes);
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i lo = _mm512_xor_si512(_mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(2, 0, 2, 0)), flip);
    const __m512i hi = _mm512_xor_si512(_mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(3, 1, 3, 1)), flip);
    uint16_t d[4];
    for (int i = 0; i < 4; ++i) std::memcpy(&d[i], block + i * kBlockBytes, sizeof d[i]);
    __m256i halves = _mm256_set1_epi16(static_cast<short>(d[0]));
    halves = _mm256_mask_set1_epi16(halves, 0x00F0, static_cast<short>(d[1]));
    halves = _mm256_mask_set1_epi16(halves, 0x0F00, static_cast<short>(d[2]));
    halves = _mm256_mask_set1_epi16(halves, 0xF000, static_cast<short>(d[3]));
    return {lo, hi, _mm512_cvtph_ps(halves)};
  }

  static Acc fma_step(const StepWeights& w, const StepAct& a, Acc acc) { return fma_step4(w.lo, w.hi, w.dw, a, acc); }

  static Acc fma_last(const uint8_t* block, const ActQ8Block& x, Acc acc) {
    const __m256 part = _mm256_mul_ps(_mm256_mul_ps(dot(decode(block), prepare(x)), _mm256_set1_ps(x.d)), scale(block));
    return _mm512_add_ps(acc, _mm512_zextps256_ps512(part));
  }

  using Lanes = LaneGemm;
  // Below 9 tokens the row tiles (the GEMV's bits); 5 to 8 tokens one tile of 2 rows × all tokens: WIDE512_Q8.
  static constexpr int64_t kLaneMinTokens = kGemmMatchesGemvBelowTokens;
  static constexpr int64_t kLaneMinTail = 1;  // partial tiles too
  static void decode_lane(const uint8_t* block, LaneGemm::WeightBlock* out) {
    uint16_t d;
    std::memcpy(&d, block, sizeof d);
    LaneGemm::set_weights(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)), _cvtsh_ss(d), out);
  }
};

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS

#include "cpu_kernels/kernels_simd.h"

namespace hetmoe::cpu::detail {

const KernelTable& kernel_table_avx512() {
  static constexpr KernelTable kTable = [] {
    KernelTable t = HETMOE_SIMD_NS::make_kernel_table(Isa::kAvx512);
    t.gemm_mxfp4_r16 = HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Mxfp4R16Block>;
    t.gemm_q8_0_r16 = HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Q8R16Block>;
    return t;
  }();
  return kTable;
}

}  // namespace hetmoe::cpu::detail
