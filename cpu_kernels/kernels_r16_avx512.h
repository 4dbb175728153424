#pragma once
// The AVX-512 kernels of the R16 layouts (KernelTable::gemm_mxfp4_r16, gemm_q8_0_r16; cpu_kernels/repack.h), shared
// by the TUs that build them: kernels_avx512.cpp (F/BW/VL/DQ + VNNI) and kernels_avx512vbmi.cpp (the same + VBMI,
// whose MXFP4 nibble lookups take one vpermb instead of an AND and a vpshufb; dispatch.cpp uses it where cpuid
// reports AVX512_VBMI). The including TU defines HETMOE_SIMD_NS (an ISA-unique namespace, kernels_simd.h) first.

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593 (kernels_avx512.cpp)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>

#include "cpu_kernels/kernels_r16_seeds.h"
#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/repack.h"

namespace hetmoe::cpu::HETMOE_SIMD_NS {

/// acc + Σ_{j<4} u8(x)[4l + j] · s8(w4[j]) per int32 lane l: vpdpbusd with the dword at w4 broadcast from memory.
/// GCC 12 does not fold _mm512_set1_epi32(load) into the instruction's {1to16} operand and issues a separate
/// vpbroadcastd for each (72 of 182 instructions per block of 8 rows); the asm form is one instruction.
inline __m512i dpbusd_broadcast(__m512i acc, __m512i x, const int8_t* w4) {
#if defined(__GNUC__)
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*reinterpret_cast<const int32_t*>(w4)));
  return acc;
#else
  int32_t wk;
  std::memcpy(&wk, w4, 4);
  return _mm512_dpbusd_epi32(acc, x, _mm512_set1_epi32(wk));
#endif
}

/// Values per quantized block (MXFP4, Q8_0 and the activations' ActQ8Block).
inline constexpr int64_t kR16BlockValues = 32;

// ---- kMXFP4_R16 and kQ8_0_R16: 16 rows across the lanes (cpu_kernels/repack.h) -----------------------------------
//
// A zmm's 16 int32 lanes are the group's 16 rows. Per block: one 64-byte load per k in [0, 4) holds the code bytes
// qs[4k..4k+3] of every row; AND / shift+AND and two vpshufb (with VBMI: two vpermb, whose 64-byte table repeats the
// 16 values, so the bits above the nibble need no mask) give the offset values (code + 12, unsigned) of values
// 4k..4k+3 and 16+4k..16+4k+3; each meets the token's activation dword at x_q + 4k (x_q + 16 + 4k) broadcast from
// memory in one vpdpbusd. The accumulator starts at −12 · Σ_j x_q[j] (the offset's correction, per token and block,
// computed once per call), so after 8 vpdpbusd (two chains of 4, added) every lane holds its row's exact
// Σ_j w_q[j] · x_q[j]; then acc += (float(dot) · d_x) · d_w with d_w of the 16 rows from their 16 scale bytes
// (vpmovzxbd, vscalefps). Per block and 16 rows: ~24 instructions of weight decoding (~16 with VBMI) shared by the
// tile's tokens, and per token 8 vpdpbusd, a broadcast seed, an add, convert, multiply, fma; no horizontal sums (the
// lanes are the outputs). Against the file layout's GEMV (5.9 instructions per row and block), one token costs ~2.3.
// kQ8_0_R16 runs the same tiles (gemm_r16<Q8R16Block>): its 8 code dwords per row and block are loaded as they are
// stored (q + 128, unsigned) and its 16 f16 scales converted by one vcvtph2ps; the seed is −128 · Σ_j x_q[j].

/// Tokens per pass over a group's decoded weights: T accumulators + 8 weight registers + constants fit in 32 zmm.
/// BM_Gemm (one expert, 1 thread): 16 tokens 677–699 µs in one pass against 804 in two of 8; at 64 tokens 2271–2959
/// against the file layout's token lanes 2338–2914.
inline constexpr int kR16Tokens = 16;

/// Up to this many tokens (decode, 2-token batches) a group is read as one plain stream without software prefetch
/// (the hardware prefetchers follow it); more tokens prefetch kR16PrefetchBytes ahead into L2 (below).
/// Session 15 (Zen 4 VM), decode step against adjacent step in one process (median ratio of 767 pairs, ~35 GB/s
/// windows): 0.931 and 0.933 of the step time of session 9's choice on Zen 5 (two streams side by side, each 4 KB
/// ahead into L1). Along the way, two streams: prefetch distance 4096 → 2048 −4.5 %, 1536 −1 %, 1024 −1.8 %, 768
/// −2.6 %, 256 −4.2 %, none −5 % (−16 % in ~60 GB/s windows); no prefetch, one stream against two: −6.4 % at
/// ~60 GB/s, −1 % at ~35; one stream 8 KB ahead into L2: +22 %. BM_Gemm (one 2880 × 2880 expert from DRAM,
/// 1 thread): 1 token MXFP4_R16 138–142 µs against 154–164, Q8_0_R16 271–279 against 448–466; 2 tokens 183–196
/// against 179–208 (MXFP4), 339–358 against 425–438 (Q8_0).
inline constexpr int64_t kR16StreamTokens = 2;
/// Bytes ahead that the tiles of 3 and more tokens prefetch into L2. They need it: without, pp512 took 4 % and pp64
/// 24 % longer (session 15, prompt against adjacent prompt) and BM_Gemm 4 tokens 367–403 µs against 219–234.
/// Session 9 (Zen 5): 4 KB into L1 was not better for prefill (pp512 105.9 against 110.2 tok/s, pp64 86.6 against
/// 88.0).
inline constexpr int64_t kR16PrefetchBytes = 8192;

/// −kOffset · Σ_j x_q[j] of one activation block: the correction of weights stored with an offset (unsigned): 12
/// for MXFP4_R16's codes, 128 for Q8_0_R16's.
template <int kOffset>
inline int32_t offset_seed(const ActQ8Block& xb) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.q));
  const __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(static_cast<char>(kOffset)), q);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return -_mm_cvtsi128_si32(s);
}

/// The two R16 layouts' blocks for the tiles below: decode(blk, lo, hi) gives the unsigned weight dwords that meet
/// the activation dwords at x_q + 4k (lo[k]) and x_q + 16 + 4k (hi[k]) for the 16 rows, and the rows' d_w.
struct Mxfp4R16Block {
  static constexpr int64_t kBytes = kMxfp4R16BlockBytes;
  static int32_t seed(const ActQ8Block& xb) { return offset_seed<detail::kMxfp4Offset>(xb); }
  __m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(detail::kMxfp4OffsetValues.v)));
  __m512i mask = _mm512_set1_epi8(0x0F);
  __m512i bias = _mm512_set1_epi32(128);
  __m512 one = _mm512_set1_ps(1.0f);
  __m512 decode(const uint8_t* blk, __m512i* lo, __m512i* hi) const {
    for (int k = 0; k < 4; ++k) {
      const __m512i c = _mm512_loadu_si512(blk + 16 + 64 * k);
#if defined(__AVX512VBMI__)
      // vpermb reads index bits 0..5; lut repeats its 16 bytes four times, so bits 4 and 5 select the same value.
      lo[k] = _mm512_permutexvar_epi8(c, lut);
      hi[k] = _mm512_permutexvar_epi8(_mm512_srli_epi16(c, 4), lut);
#else
      lo[k] = _mm512_shuffle_epi8(lut, _mm512_and_si512(c, mask));
      hi[k] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(c, 4), mask));
#endif
    }
    const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    return _mm512_scalef_ps(one, _mm512_cvtepi32_ps(_mm512_sub_epi32(e, bias)));  // 2^(e − 128), exact
  }
};

/// kQ8_0_R16: the codes are stored unsigned (q + 128), so decoding is 8 loads and one f16 conversion of the scales.
struct Q8R16Block {
  static constexpr int64_t kBytes = kQ8R16BlockBytes;
  static int32_t seed(const ActQ8Block& xb) { return offset_seed<128>(xb); }
  __m512 decode(const uint8_t* blk, __m512i* lo, __m512i* hi) const {
    for (int k = 0; k < 4; ++k) {
      lo[k] = _mm512_loadu_si512(blk + 32 + 64 * k);
      hi[k] = _mm512_loadu_si512(blk + 32 + 64 * (k + 4));
    }
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
  }
};

/// One group (16 rows at `group`) × T tokens of the R16 layout Block: y[t · y_stride + i] for rows i in [0, 16).
/// seeds: [T][num_blocks] for these tokens (token stride seed_stride), or nullptr: computed here (the same values).
/// x: [T][num_blocks]. kPrefetch: each block prefetches the one kR16PrefetchBytes further on into L2.
template <class Block, int T, bool kPrefetch>
inline void r16_tile(const uint8_t* group, int64_t num_blocks, const ActQ8Block* x, const int32_t* seeds,
                     int64_t seed_stride, float* y, int64_t y_stride) {
  constexpr int kPrefetchLines = static_cast<int>((Block::kBytes + 63) / 64);
  const Block block;
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* blk = group + b * Block::kBytes;
    if constexpr (kPrefetch)
      for (int q = 0; q < kPrefetchLines; ++q) __builtin_prefetch(blk + kR16PrefetchBytes + 64 * q, 0, 1);
    __m512i lo[4], hi[4];
    const __m512 dw = block.decode(blk, lo, hi);
    for (int t = 0; t < T; ++t) {
      const ActQ8Block& xb = x[t * num_blocks + b];
      // Two chains of 4 vpdpbusd (values 0..15 and 16..31), added: one chain of 8 made each token wait on 8
      // latencies. BM_Gemm MXFP4_R16 in L2 (Zen 4, session 16): 4 tokens 218–223 µs with one chain, 209–216 with
      // two, 196–202 with two and vpermb; 8 tokens 401–407, 385–392, 378–401; Q8_0_R16 4 tokens 199–202 → 190–197.
      __m512i dot = _mm512_set1_epi32(seeds != nullptr ? seeds[t * seed_stride + b] : Block::seed(xb));
      __m512i dot_hi = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k) {
        dot = dpbusd_broadcast(dot, lo[k], xb.q + 4 * k);
        dot_hi = dpbusd_broadcast(dot_hi, hi[k], xb.q + 16 + 4 * k);
      }
      dot = _mm512_add_epi32(dot, dot_hi);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xb.d)), dw, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(y + t * y_stride, acc[t]);
}

template <class Block, int T = 1>
inline void r16_tile_of(int64_t num_tokens, const uint8_t* group, int64_t num_blocks, const ActQ8Block* x,
                        const int32_t* seeds, int64_t seed_stride, float* y, int64_t y_stride) {
  if constexpr (T <= kR16Tokens) {
    if (num_tokens == T)
      return r16_tile<Block, T, (T > kR16StreamTokens)>(group, num_blocks, x, seeds, seed_stride, y, y_stride);
    r16_tile_of<Block, T + 1>(num_tokens, group, num_blocks, x, seeds, seed_stride, y, y_stride);
  }
}

/// KernelTable::gemm_mxfp4_r16 / gemm_q8_0_r16 for the layout Block.
template <class Block>
void gemm_r16(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
              int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  const int64_t num_blocks = num_cols / kR16BlockValues;
  assert(row_begin % kR16Rows == 0 && row_end % kR16Rows == 0);  // whole groups (KernelTable::gemm_mxfp4_r16)
  if (row_end <= row_begin || num_tokens <= 0) return;
  const int32_t* seeds = r16_seeds<Block::seed>(x, num_tokens * num_blocks);  // [num_tokens][num_blocks]
  const int64_t group_bytes = kR16Rows * static_cast<int64_t>(row_bytes);
  const int64_t g_begin = row_begin / kR16Rows, g_end = row_end / kR16Rows;
  for (int64_t g = g_begin; g < g_end; ++g) {
    const uint8_t* group = w + g * group_bytes;
    float* yg = y + (g - g_begin) * kR16Rows;
    for (int64_t t0 = 0; t0 < num_tokens; t0 += kR16Tokens) {
      const int64_t n = std::min<int64_t>(kR16Tokens, num_tokens - t0);
      r16_tile_of<Block>(n, group, num_blocks, x + t0 * num_blocks, seeds ? seeds + t0 * num_blocks : nullptr,
                         num_blocks, yg + t0 * y_stride, y_stride);
    }
  }
}

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS
