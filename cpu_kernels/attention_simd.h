// Generic SIMD attention kernels over block-quantized KV rows (q8_0, q4_0) and the split-softmax chunk, compiled
// once per ISA like kernels_simd.h: a per-ISA TU (attention_avx2.cpp, attention_avx512.cpp) built with its own -m
// flags defines HETMOE_ATTN_NS (an ISA-unique namespace: no inline helper is shared between TUs built with different
// flags) and provides, in hetmoe::cpu::HETMOE_ATTN_NS, before including this file:
//   using Arch;                                          xsimd arch of the f32 math
//   void dequantize_q8_0_block(const uint8_t* block, float* out)   34-byte block → out[32], value d · q
//   void dequantize_q4_0_block(const uint8_t* block, float* out)   18-byte block → out[32], value d · (nibble − 8)
//   xsimd::batch<float, Arch> load_f16(const uint16_t* src)        one batch of f16 values widened to f32
//   void store_f16(const xsimd::batch<float, Arch>& x, uint16_t* dst)  x rounded to f16 (nearest even) at dst
// Both round each value once (d · q exactly as dequantize_kv_* in kv_blocks.h), so a dequantized row equals the
// scalar variant's bit for bit; only the order of the dot product's additions differs.
// No SIMD value at namespace scope, no standard-library templates (see kernels_simd.h for why).

#pragma once

#if !defined(HETMOE_ATTN_NS)
#error "define HETMOE_ATTN_NS (an ISA-unique namespace) before including attention_simd.h"
#endif

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"

namespace hetmoe::cpu::HETMOE_ATTN_NS {

/// Σ_i a[i] · b[i] over f32, head_dim a multiple of 32 (so of the lane count): two accumulators.
inline float dot_row(const float* a, const float* b, int64_t n) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = fb::size;
  fb acc0(0.0f), acc1(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = xsimd::fma(fb::load_unaligned(a + i), fb::load_aligned(b + i), acc0);
    acc1 = xsimd::fma(fb::load_unaligned(a + i + kLanes), fb::load_aligned(b + i + kLanes), acc1);
  }
  for (; i < n; i += kLanes) acc0 = xsimd::fma(fb::load_unaligned(a + i), fb::load_aligned(b + i), acc0);
  return xsimd::hadd(acc0 + acc1);
}

/// out[i] += a · v[i] over f32, n a multiple of the lane count.
inline void axpy_row(float a, const float* v, float* out, int64_t n) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = fb::size;
  const fb av(a);
  for (int64_t i = 0; i < n; i += kLanes)
    xsimd::fma(av, fb::load_aligned(v + i), fb::load_unaligned(out + i)).store_unaligned(out + i);
}

template <int64_t kBlockBytes, void (*Dequantize)(const uint8_t*, float*)>
inline void dequantize_row(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / kKvBlockElems; ++b) Dequantize(src + b * kBlockBytes, dst + b * kKvBlockElems);
}

template <int64_t kBlockBytes, void (*Dequantize)(const uint8_t*, float*)>
void attn_scores(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                 int64_t head_dim, float scale, float* scores, int64_t scores_stride) {
  alignas(64) float row[kMaxAttnHeadDim];  // (head_dim) K_j in f32
  for (int64_t j = 0; j < num_keys; ++j) {
    dequantize_row<kBlockBytes, Dequantize>(k + j * stride_bytes, head_dim, row);
    for (int64_t h = 0; h < group; ++h) scores[h * scores_stride + j] = scale * dot_row(q + h * head_dim, row, head_dim);
  }
}

template <int64_t kBlockBytes, void (*Dequantize)(const uint8_t*, float*)>
void attn_values(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                 int64_t num_keys, int64_t head_dim, float* out) {
  alignas(64) float row[kMaxAttnHeadDim];  // (head_dim) V_j in f32
  for (int64_t j = 0; j < num_keys; ++j) {
    dequantize_row<kBlockBytes, Dequantize>(v + j * stride_bytes, head_dim, row);
    for (int64_t h = 0; h < group; ++h) axpy_row(p[h * p_stride + j], row, out + h * head_dim, head_dim);
  }
}

inline float softmax_partial(float* s, int64_t n, float* max_out) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = fb::size;
  float m = s[0];
  int64_t i = 0;
  if (n >= kLanes) {
    fb vmax = fb::load_unaligned(s);
    for (i = kLanes; i + kLanes <= n; i += kLanes) vmax = xsimd::max(vmax, fb::load_unaligned(s + i));
    alignas(64) float lanes[kLanes];  // reduced through memory (see softmax_with_sink in kernels_simd.h)
    vmax.store_aligned(lanes);
    for (int64_t l = 0; l < kLanes; ++l) m = lanes[l] > m ? lanes[l] : m;
  }
  for (int64_t j = i; j < n; ++j) m = s[j] > m ? s[j] : m;
  const fb vm(m);
  fb vsum(0.0f);
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const fb e = xsimd::exp(fb::load_unaligned(s + i) - vm);
    e.store_unaligned(s + i);
    vsum += e;
  }
  float sum = xsimd::hadd(vsum);
  for (int64_t j = i; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  *max_out = m;
  return sum;
}

// ---- tiled (flash) attention ------------------------------------------------------------------------------------
//
// Layouts (kernels.h: attn_tile_update). With L lanes, KP = L / 8 (1 for AVX2, 2 for AVX-512): every vector holds
// 8 query rows × KP, so rows are across the lanes and the group of 8 query heads of a KV head fills a vector.
//   qt: [row group of 8][pitch / KP][L], lane r·KP + p = q[8·group + r][KP·i + p]: one vector per KP head dims.
//   s:  [key / KP][row group][L], lane r·KP + p = score of key KP·(key / KP) + p for row 8·group + r.
// Scores: for each head-dim pair (AVX-512) the K row's two values are broadcast as one 64-bit pair and multiplied
// into every row at once (one FMA per key and KP dims for 8 rows, no horizontal sums); the two dims' partial sums
// of a row are added at the end (fold_key_pair), which also interleaves two keys into the scores layout.
// Values: out rows across the lanes of head_dim, each probability broadcast from s.

inline constexpr int64_t kTileKeysPerLane = xsimd::batch<float, Arch>::size / 8;

struct SwapLanePairs {
  static constexpr uint32_t get(unsigned i, unsigned) { return i ^ 1u; }
};
struct EvenLanes {
  static constexpr bool get(unsigned i, unsigned) { return i % 2 == 0; }
};

/// Lanes 2i and 2i + 1 swapped.
inline xsimd::batch<float, Arch> swap_lane_pairs(const xsimd::batch<float, Arch>& x) {
  return xsimd::swizzle(x, xsimd::make_batch_constant<xsimd::batch<uint32_t, Arch>, SwapLanePairs>());
}

/// Two keys' accumulators (lane r·2 + p: row r, head dims of parity p) → lane r·2 + 0: key a's score of row r,
/// lane r·2 + 1: key b's.
inline xsimd::batch<float, Arch> fold_key_pair(const xsimd::batch<float, Arch>& a, const xsimd::batch<float, Arch>& b) {
  return xsimd::select(xsimd::make_batch_bool_constant<xsimd::batch<float, Arch>, EvenLanes>(), a + swap_lane_pairs(a),
                       b + swap_lane_pairs(b));
}

/// KP consecutive floats broadcast to every lane group of KP.
inline xsimd::batch<float, Arch> broadcast_dims(const float* p) {
  if constexpr (kTileKeysPerLane == 2) {
    uint64_t pair;  // an integer broadcast (vpbroadcastq): ~10 % more FMAs per cycle than vbroadcastsd on Zen 4
    std::memcpy(&pair, p, sizeof pair);
    return xsimd::bitwise_cast<xsimd::batch<float, Arch>>(xsimd::batch<uint64_t, Arch>(pair));
  } else {
    return xsimd::batch<float, Arch>(*p);
  }
}

/// Prefetches (into L1) byte ranges (attn_tile_update's prefetch ranges), the lines spread evenly over the tile's
/// inner steps, so that the next block's K/V rows arrive while this block computes (decode at depth: they come from
/// DRAM, and the hardware prefetcher stops at every 4 KiB page). Prefetching them while converting the block (before)
/// issued them in one burst that filled the core's miss buffers and stalled the conversion (perf: ~60 % of its
/// samples on the first use of a converted row).
struct PrefetchSpread {
  const PrefetchRange* range;
  const PrefetchRange* ranges_end;
  const uint8_t* line = nullptr;      // next line of *range
  const uint8_t* line_end = nullptr;  // end of *range
  int64_t num_lines = 0;              // lines of all ranges
  int64_t num_steps;                  // inner steps of the tile (an estimate: extra steps prefetch nothing)
  int64_t credit = 0;                 // Bresenham: num_lines per step, one line per num_steps

  PrefetchSpread(const PrefetchRange* ranges, int64_t num_ranges, int64_t steps)
      : range(ranges), ranges_end(ranges + num_ranges), num_steps(steps > 0 ? steps : 1) {
    for (int64_t i = 0; i < num_ranges; ++i) num_lines += (ranges[i].num_bytes + 63) / 64;
    if (range != ranges_end) start_range();
  }
  /// line: the start of *range's first cache line.
  void start_range() {
    line = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(range->begin) & ~uintptr_t{63});
    line_end = range->begin + range->num_bytes;
  }
  /// One line; false when none is left.
  bool prefetch_line() {
    while (line >= line_end) {
      if (range == ranges_end || ++range == ranges_end) return false;
      start_range();
    }
    __builtin_prefetch(line, 0, 3);
    line += 64;
    return true;
  }
  void step() {
    for (credit += num_lines; credit >= num_steps; credit -= num_steps) prefetch_line();
  }
  /// The lines the steps did not reach.
  void finish() {
    while (prefetch_line()) {
    }
  }
};

/// Scores of keys [key_begin, key_begin + NK) (NK a multiple of KP) for NG consecutive row groups: qt_group = the
/// first group's qt vectors, k = the tile's K rows; written to s at the groups' lanes. Each K broadcast feeds NG FMAs
/// (NG = 2: 10 loads per 16 FMAs instead of 17). kPitch: the pitch when known at compile time (K row addresses become
/// constant offsets of one pointer instead of NK pointers, which spilled), 0 for runtime_pitch.
template <int NG, int NK, int64_t kPitch>
inline void tile_scores_keys(const float* qt_group, int64_t num_dim_vecs, const float* k, int64_t runtime_pitch,
                             int64_t key_begin, float scale, float* s_group, int64_t s_key_stride,
                             PrefetchSpread& prefetch) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t KP = kTileKeysPerLane, L = fb::size;
  const int64_t pitch = kPitch > 0 ? kPitch : runtime_pitch;
  const int64_t group_floats = pitch * 8;  // qt floats of one row group
  fb acc[NG][NK];
  for (int gg = 0; gg < NG; ++gg)
    for (int kk = 0; kk < NK; ++kk) acc[gg][kk] = fb(0.0f);
  const float* kb = k + key_begin * pitch;
  for (int64_t i = 0; i < num_dim_vecs; ++i) {
    prefetch.step();
    fb qv[NG];
    for (int gg = 0; gg < NG; ++gg) qv[gg] = fb::load_unaligned(qt_group + gg * group_floats + i * L);
    for (int kk = 0; kk < NK; ++kk) {
      const fb kv = broadcast_dims(kb + kk * pitch + i * KP);
      for (int gg = 0; gg < NG; ++gg) acc[gg][kk] = xsimd::fma(qv[gg], kv, acc[gg][kk]);
    }
  }
  const fb vs(scale);
  for (int gg = 0; gg < NG; ++gg) {
    float* out = s_group + gg * L + key_begin / KP * s_key_stride;
    if constexpr (KP == 2) {
      for (int kk = 0; kk < NK; kk += 2)
        (fold_key_pair(acc[gg][kk], acc[gg][kk + 1]) * vs).store_unaligned(out + kk / 2 * s_key_stride);
    } else {
      for (int kk = 0; kk < NK; ++kk) (acc[gg][kk] * vs).store_unaligned(out + kk * s_key_stride);
    }
  }
}

/// One vector of V row values: f32 as stored, f16 widened as loaded.
inline xsimd::batch<float, Arch> load_v(const float* p) { return xsimd::batch<float, Arch>::load_unaligned(p); }
inline xsimd::batch<float, Arch> load_v(const uint16_t* p) { return load_f16(p); }

/// out rows [row_begin, row_begin + RV) (of one row group: row_begin % 8 + RV ≤ 8) ← alpha · out + Σ_j p_j · V_j over
/// head dims [d, d + C · L): RV · C accumulators; per key C loads of V and RV probability broadcasts (f32 rows: RV =
/// C = 4 on AVX-512, 8 loads per 16 FMAs instead of 10; f16 rows: RV = 8, each value widened once per row group).
/// v: the block's V rows of T, v_stride elements apart (f32: kv_rows_f32_*'s rows at the pitch; f16: the cache's rows
/// in place); the same FMA sequence per (row, dim) for either T, so the same bits. out rows are `pitch` apart.
template <int RV, int C, int64_t kPitch, class T>
inline void tile_values_rows(const float* s_group, int64_t s_key_stride, const float* lane_alpha, int64_t row_in_group,
                             const T* v, int64_t v_stride, int64_t num_keys, int64_t runtime_pitch, int64_t d,
                             float* out_row, PrefetchSpread& prefetch) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t KP = kTileKeysPerLane, L = fb::size;
  const int64_t pitch = kPitch > 0 ? kPitch : runtime_pitch;
  fb acc[RV][C];
  for (int r = 0; r < RV; ++r) {
    const fb alpha(lane_alpha[(row_in_group + r) * KP]);
    for (int c = 0; c < C; ++c) acc[r][c] = fb::load_unaligned(out_row + r * pitch + d + c * L) * alpha;
  }
  // Keys in steps of KP (one vector of s); with KP = 2 a key past num_keys (odd num_keys) has p = 0 and no V row:
  // skipped.
  const T* vd = v + d;
  const float* sk = s_group + row_in_group * KP;
  for (int64_t jj = 0; jj < num_keys; jj += KP, vd += KP * v_stride, sk += s_key_stride) {
    prefetch.step();
    for (int64_t p = 0; p < KP && jj + p < num_keys; ++p) {
      fb vv[C];
      for (int c = 0; c < C; ++c) vv[c] = load_v(vd + p * v_stride + c * L);
      for (int r = 0; r < RV; ++r) {
        const fb pr(sk[r * KP + p]);
        for (int c = 0; c < C; ++c) acc[r][c] = xsimd::fma(pr, vv[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < RV; ++r)
    for (int c = 0; c < C; ++c) acc[r][c].store_unaligned(out_row + r * pitch + d + c * L);
}

inline void attn_tile_pack_q(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin, float* qt) {
  constexpr int64_t KP = kTileKeysPerLane, L = 8 * KP;
  const int64_t group_floats = attn_tile_pitch(head_dim) * 8;
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t row = row_begin + r;
    float* dst = qt + row / 8 * group_floats + row % 8 * KP;
    const float* src = q + r * head_dim;
    int64_t d = 0;
    for (; d + KP <= head_dim; d += KP, dst += L) std::memcpy(dst, src + d, KP * sizeof(float));  // KP dims per vector
    if (d < head_dim) *dst = src[d];  // an odd head_dim's last dim (KP = 2); its pair stays 0
  }
}

/// The online softmax of row group g of a tile (attn_tile_update's step 2) over its scores s_group (the layout of
/// attn_tile_update_pitch, key vectors s_key_stride floats apart, num_keys keys): masks each row's keys outside
/// [key_begin, key_end), replaces each score by exp(s − M) with M the row's new running max, updates max_io and
/// sum_io, and writes the rows' rescale factors exp(old max − M) to lane_alpha (lane r·KP + p: row r).
/// score_exp(x): e^x for the scores (x ≤ 0 or −∞, which must give 0); xsimd::exp for the f32 tile.
template <class ScoreExp>
inline void tile_softmax_group(float* s_group, int64_t s_key_stride, int64_t g, int64_t num_rows, int64_t num_keys,
                               const int32_t* key_begin, const int32_t* key_end, float* max_io, float* sum_io,
                               float* lane_alpha, ScoreExp score_exp) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t KP = kTileKeysPerLane, L = fb::size;
  const int64_t num_key_vecs = (num_keys + KP - 1) / KP;
  const float inf = std::numeric_limits<float>::infinity();
  alignas(64) float lane_begin[L], lane_end[L], lane_key[L], lane_max[L], lane_sum[L];
  for (int64_t l = 0; l < L; ++l) {
    const int64_t row = g * 8 + l / KP;
    const bool real = row < num_rows;
    lane_begin[l] = real ? static_cast<float>(key_begin[row]) : 0.0f;
    lane_end[l] = real ? static_cast<float>(key_end[row]) : 0.0f;
    lane_key[l] = static_cast<float>(l % KP);
    lane_max[l] = max_io[row];
    lane_sum[l] = sum_io[row];
  }
  const fb vbegin = fb::load_aligned(lane_begin), vend = fb::load_aligned(lane_end);
  const fb vneg_inf(-inf);
  fb key = fb::load_aligned(lane_key);
  fb block_max = vneg_inf;
  // Every lane sees every key of its vectors (decode, a prefill tile's keys before its first token): nothing to mask.
  const bool unmasked = xsimd::all((vbegin == fb(0.0f)) && (vend >= fb(static_cast<float>(num_key_vecs * KP))));
  if (unmasked) {
    for (int64_t kv = 0; kv < num_key_vecs; ++kv)
      block_max = xsimd::max(block_max, fb::load_unaligned(s_group + kv * s_key_stride));
  } else {
    for (int64_t kv = 0; kv < num_key_vecs; ++kv, key += fb(static_cast<float>(KP))) {
      float* p = s_group + kv * s_key_stride;
      const fb x = xsimd::select((key >= vbegin) && (key < vend), fb::load_unaligned(p), vneg_inf);
      x.store_unaligned(p);
      block_max = xsimd::max(block_max, x);
    }
  }
  if constexpr (KP == 2) block_max = xsimd::max(block_max, swap_lane_pairs(block_max));
  const fb old_max = fb::load_aligned(lane_max);
  const fb new_max = xsimd::max(old_max, block_max);
  // A row without a key so far keeps −∞: subtract 0 instead so that exp(−∞ − 0) = 0 (not NaN).
  const fb sub = xsimd::select(new_max == vneg_inf, fb(0.0f), new_max);
  const fb alpha = xsimd::exp(old_max - sub);
  fb sum(0.0f);
  for (int64_t kv = 0; kv < num_key_vecs; ++kv) {
    float* p = s_group + kv * s_key_stride;
    const fb e = score_exp(fb::load_unaligned(p) - sub);
    e.store_unaligned(p);
    sum += e;
  }
  if constexpr (KP == 2) sum += swap_lane_pairs(sum);
  (alpha * fb::load_aligned(lane_sum) + sum).store_aligned(lane_sum);
  new_max.store_aligned(lane_max);
  alpha.store_aligned(lane_alpha);
  for (int64_t r = 0; r < 8 && g * 8 + r < num_rows; ++r) {
    max_io[g * 8 + r] = lane_max[r * KP];
    sum_io[g * 8 + r] = lane_sum[r * KP];
  }
}

/// attn_tile_update for a pitch known at compile time (kPitch > 0: 64 for gpt-oss) or any (kPitch = 0); with v16
/// (not nullptr) V is read as f16 rows in place (attn_tile_update_v_f16; v unused, head_dim = pitch).
template <int64_t kPitch>
void attn_tile_update_pitch(const float* qt, int64_t num_rows, const float* k, const float* v, const uint16_t* v16,
                            int64_t v16_stride, int64_t num_keys, int64_t head_dim, float scale,
                            const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io, float* sum_io,
                            float* out, const PrefetchRange* prefetch, int64_t num_prefetch) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t KP = kTileKeysPerLane, L = fb::size;
  // Score accumulators: one group × kScoreKeys or two groups × kScoreKeys / 2 (16 of 32 registers on AVX-512; AVX2:
  // 8 or 2 × 6 of 16).
  constexpr int kScoreKeys = L == 16 ? 16 : 8, kPairScoreKeys = L == 16 ? 8 : 6;
  // Values: kValueRows rows × kValueVecs vectors of head dims (AVX-512 4 × 4 or 4 × 2, AVX2 2 × 4).
  constexpr int kValueRows = L == 16 ? 4 : 2;
  constexpr int kValueVecs = L == 16 ? ((kPitch / L) % 4 == 0 && kPitch > 0 ? 4 : 2) : 4;
  const int64_t pitch = kPitch > 0 ? kPitch : attn_tile_pitch(head_dim);
  const int64_t num_groups = attn_tile_rows(num_rows) / 8;
  const int64_t num_dim_vecs = pitch / KP;
  const int64_t num_key_vecs = (num_keys + KP - 1) / KP;
  const int64_t s_key_stride = num_groups * L;  // floats from one key vector of s to the next
  // Inner steps of the tile: the score loops' head-dim vectors and the value loops' key vectors.
  const int64_t num_score_steps =
      (num_groups / 2) * ((num_keys + kPairScoreKeys - 1) / kPairScoreKeys) * num_dim_vecs +
      (num_groups % 2) * ((num_keys + kScoreKeys - 1) / kScoreKeys) * num_dim_vecs;
  // Values from f16 rows: a whole row group × kValueVecsF16 vectors of head dims (AVX-512 8 × 2, AVX2 8 × 1).
  constexpr int kValueVecsF16 = L == 16 ? 2 : 1;
  const int64_t num_value_steps =
      v16 != nullptr ? num_groups * (pitch / (kValueVecsF16 * L)) * num_key_vecs
                     : num_groups * (8 / kValueRows) * ((pitch + kValueVecs * L - 1) / (kValueVecs * L)) * num_key_vecs;
  PrefetchSpread spread(prefetch, num_prefetch, num_score_steps + num_value_steps);

  // 1. Scores of every key of the block for every group (keys past num_keys up to a multiple of KP: masked below),
  // two groups at a time.
  for (int64_t g = 0; g < num_groups;) {
    const float* qt_group = qt + g * pitch * 8;
    float* s_group = s + g * L;
    int64_t j = 0;
    if (g + 1 < num_groups) {
      for (; j + kPairScoreKeys <= num_keys; j += kPairScoreKeys)
        tile_scores_keys<2, kPairScoreKeys, kPitch>(qt_group, num_dim_vecs, k, pitch, j, scale, s_group,
                                                    s_key_stride, spread);
      for (; j < num_keys; j += KP)
        tile_scores_keys<2, static_cast<int>(KP), kPitch>(qt_group, num_dim_vecs, k, pitch, j, scale, s_group,
                                                          s_key_stride, spread);
      g += 2;
    } else {
      for (; j + kScoreKeys <= num_keys; j += kScoreKeys)
        tile_scores_keys<1, kScoreKeys, kPitch>(qt_group, num_dim_vecs, k, pitch, j, scale, s_group, s_key_stride,
                                                 spread);
      for (; j < num_keys; j += KP)
        tile_scores_keys<1, static_cast<int>(KP), kPitch>(qt_group, num_dim_vecs, k, pitch, j, scale, s_group,
                                                          s_key_stride, spread);
      g += 1;
    }
  }

  for (int64_t g = 0; g < num_groups; ++g) {
    float* s_group = s + g * L;
    // 2. Online softmax per row.
    alignas(64) float lane_alpha[L];
    tile_softmax_group(s_group, s_key_stride, g, num_rows, num_keys, key_begin, key_end, max_io, sum_io, lane_alpha,
                       [](const fb& x) { return xsimd::exp(x); });

    // 3. out[r] ← alpha_r · out[r] + Σ_j p_rj · V_j, kValueRows rows × kValueVecs vectors of head dims at a time.
    if (v16 != nullptr) {
      for (int64_t d = 0; d < pitch; d += kValueVecsF16 * L)
        tile_values_rows<8, kValueVecsF16, kPitch>(s_group, s_key_stride, lane_alpha, 0, v16, v16_stride, num_keys,
                                                   pitch, d, out + g * 8 * pitch, spread);
      continue;
    }
    for (int64_t r = 0; r < 8; r += kValueRows)
      for (int64_t d = 0; d < pitch; d += kValueVecs * L)
        tile_values_rows<kValueRows, kValueVecs, kPitch>(s_group, s_key_stride, lane_alpha, r, v, pitch, num_keys,
                                                          pitch, d, out + (g * 8 + r) * pitch, spread);
  }
  spread.finish();
}

/// A tile pitch as a type: P > 0 known at compile time, 0 for any.
template <int64_t P>
struct PitchTag {
  static constexpr int64_t value = P;
};

/// f(PitchTag<P>{}) with P the pitch of head_dim where a tile kernel has a compile-time instance (64: gpt-oss, 128),
/// else P = 0 (the pitch at run time).
template <class F>
inline void with_tile_pitch(int64_t head_dim, F&& f) {
  switch (attn_tile_pitch(head_dim)) {
    case 64:
      return f(PitchTag<64>{});
    case 128:
      return f(PitchTag<128>{});
    default:
      return f(PitchTag<0>{});
  }
}

/// attn_tile_update_pitch for the pitch of head_dim.
inline void attn_tile_update_any(const float* qt, int64_t num_rows, const float* k, const float* v,
                                 const uint16_t* v16, int64_t v16_stride, int64_t num_keys, int64_t head_dim,
                                 float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                                 float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch,
                                 int64_t num_prefetch) {
  with_tile_pitch(head_dim, [&](auto pitch) {
    attn_tile_update_pitch<decltype(pitch)::value>(qt, num_rows, k, v, v16, v16_stride, num_keys, head_dim, scale,
                                                   key_begin, key_end, s, max_io, sum_io, out, prefetch, num_prefetch);
  });
}

inline void attn_tile_update(const float* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys,
                             int64_t head_dim, float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                             float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch,
                             int64_t num_prefetch) {
  attn_tile_update_any(qt, num_rows, k, v, nullptr, 0, num_keys, head_dim, scale, key_begin, key_end, s, max_io,
                       sum_io, out, prefetch, num_prefetch);
}

inline void attn_tile_update_v_f16(const float* qt, int64_t num_rows, const float* k, const uint8_t* v,
                                   int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim, float scale,
                                   const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io,
                                   float* sum_io, float* out, const PrefetchRange* prefetch, int64_t num_prefetch) {
  attn_tile_update_any(qt, num_rows, k, nullptr, reinterpret_cast<const uint16_t*>(v),
                       v_stride_bytes / static_cast<int64_t>(sizeof(uint16_t)), num_keys, head_dim, scale, key_begin,
                       key_end, s, max_io, sum_io, out, prefetch, num_prefetch);
}

/// K/V rows of the tile: f32, zero padded to the pitch.
inline void pad_row(float* dst, int64_t head_dim) {
  for (int64_t d = head_dim; d < attn_tile_pitch(head_dim); ++d) dst[d] = 0.0f;
}

/// kv_rows_f32_f16 for head_dim = kHeadDim, a multiple of 32 (= the pitch): each row's vectors unrolled, no tail.
template <int64_t kHeadDim>
inline void kv_rows_f32_f16_dims(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, float* dst) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = fb::size;
  for (int64_t j = 0; j < num_keys; ++j, src += stride_bytes, dst += kHeadDim) {
    const auto* row = reinterpret_cast<const uint16_t*>(src);
    for (int64_t d = 0; d < kHeadDim; d += kLanes) load_f16(row + d).store_unaligned(dst + d);
  }
}

inline void kv_rows_f32_f16(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  using fb = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = fb::size;
  if (head_dim == 64) return kv_rows_f32_f16_dims<64>(src, stride_bytes, num_keys, dst);
  if (head_dim == 128) return kv_rows_f32_f16_dims<128>(src, stride_bytes, num_keys, dst);
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t j = 0; j < num_keys; ++j) {
    const auto* row = reinterpret_cast<const uint16_t*>(src + j * stride_bytes);
    float* out = dst + j * pitch;
    int64_t d = 0;
    for (; d + kLanes <= head_dim; d += kLanes) load_f16(row + d).store_unaligned(out + d);
    for (; d < head_dim; ++d) out[d] = ref::f16_to_f32(row[d]);
    pad_row(out, head_dim);
  }
}

inline void kv_rows_f32_f32(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t j = 0; j < num_keys; ++j) {
    std::memcpy(dst + j * pitch, src + j * stride_bytes, static_cast<size_t>(head_dim) * sizeof(float));
    pad_row(dst + j * pitch, head_dim);
  }
}

template <int64_t kBlockBytes, void (*Dequantize)(const uint8_t*, float*)>
void kv_rows_f32_blocks(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  const int64_t pitch = attn_tile_pitch(head_dim);  // = head_dim: a multiple of 32
  for (int64_t j = 0; j < num_keys; ++j) {
    dequantize_row<kBlockBytes, Dequantize>(src + j * stride_bytes, head_dim, dst + j * pitch);
  }
}

/// f32 → f16 bits, rounded to nearest even (F16C): the same bits as ref::f32_to_f16 (IEEE conversion).
inline void kv_row_f16_from_f32(const float* src, uint16_t* dst, int64_t n) {
  using fb = xsimd::batch<float, Arch>;
  int64_t i = 0;
  for (; i + static_cast<int64_t>(fb::size) <= n; i += fb::size) store_f16(fb::load_unaligned(src + i), dst + i);
  for (; i < n; ++i) dst[i] = ref::f32_to_f16(src[i]);
}

inline void add_attention_kernels(KernelTable& t) {
  t.kv_row_f16_from_f32 = kv_row_f16_from_f32;
  t.kv_rows_f32_f16 = kv_rows_f32_f16;
  t.kv_rows_f32_f32 = kv_rows_f32_f32;
  t.kv_rows_f32_q8_0 = kv_rows_f32_blocks<kKvQ8_0BlockBytes, dequantize_q8_0_block>;
  t.kv_rows_f32_q4_0 = kv_rows_f32_blocks<kKvQ4_0BlockBytes, dequantize_q4_0_block>;
  t.attn_tile_pack_q = attn_tile_pack_q;
  t.attn_tile_update = attn_tile_update;
  t.attn_tile_update_v_f16 = attn_tile_update_v_f16;
  t.attn_v_f16_max_rows = kTileKeysPerLane == 2 ? 8 : std::numeric_limits<int64_t>::max();
  t.attn_scores_q8_0 = attn_scores<kKvQ8_0BlockBytes, dequantize_q8_0_block>;
  t.attn_values_q8_0 = attn_values<kKvQ8_0BlockBytes, dequantize_q8_0_block>;
  t.attn_scores_q4_0 = attn_scores<kKvQ4_0BlockBytes, dequantize_q4_0_block>;
  t.attn_values_q4_0 = attn_values<kKvQ4_0BlockBytes, dequantize_q4_0_block>;
  t.softmax_partial = softmax_partial;
}

}  // namespace hetmoe::cpu::HETMOE_ATTN_NS
