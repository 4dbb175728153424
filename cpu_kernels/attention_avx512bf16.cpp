// Tiled attention with bf16 products on AVX512_BF16 (KernelTable::attn_tile_update_bf16): vdpbf16ps multiplies two
// bf16 pairs per f32 lane and adds both products to the lane, twice the MACs of an f32 FMA per instruction, so a
// prefill tile at depth — bound by its FMAs (docs/performance.md) — takes about half the time. Built with the flags
// of attention_avx512.cpp plus -mavx512bf16; dispatch.cpp adds these entries to the AVX-512 table only where cpuid
// reports AVX512_BF16 (Zen 4, Sapphire Rapids and later, Cooper Lake).
//
// Layouts (the f32 tile's, attention_simd.h, with bf16 pairs in the f32 lanes; 8 query rows across 16 lanes):
//   qt: [row group][pitch / 4][32 bf16]: bf16 4r + t of vector i = q[8·group + r][4i + t] — lane 2r holds dims
//       4i, 4i + 1 of row r, lane 2r + 1 dims 4i + 2, 4i + 3.
//   kb: [keys, rounded up to even][pitch] bf16, K rows as they are; a key's 4 dims 4i..4i + 3 are one 64-bit
//       broadcast, so lane 2r + p sums dims 4i + 2p, 4i + 2p + 1 of row r, and the lane pairs are added at the end
//       (fold_key_pair), as the f32 tile adds its two dim parities.
//   vb: [key pair][pitch][2] bf16: V[2m][d], V[2m + 1][d] side by side, so a lane d takes two keys per vdpbf16ps.
//   s:  the f32 tile's scores; after the softmax each key vector's 16 probabilities (lane 2r + p: key 2kv + p of row
//       r) are rounded to bf16 in the vector's first 32 bytes: 32-bit element r = row r's two keys, broadcast
//       against vb.

// GCC 12's AVX-512 intrinsics initialize their "undefined" operands from themselves (GCC bug 105593; as in
// kernels_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <type_traits>

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_ATTN_NS avx512bf16_attention

#include "cpu_kernels/attention_avx512_isa.h"
#include "cpu_kernels/attention_simd.h"

namespace hetmoe::cpu::HETMOE_ATTN_NS {

namespace {

constexpr int64_t kMaxPitch = attn_tile_pitch(kMaxAttnHeadDim);

void pack_q_bf16(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin, uint16_t* qt) {
  const int64_t group_elems = attn_tile_pitch(head_dim) * 8;  // bf16 of one row group
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t row = row_begin + r;
    uint16_t* dst = qt + row / 8 * group_elems + row % 8 * 4;
    const float* src = q + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) dst[d / 4 * 32 + d % 4] = ref::f32_to_bf16(src[d]);
  }
}

/// 32 f32 (lo: elements 0..15, hi: 16..31) → 32 bf16, rounded to nearest even.
inline __m512i bf16_from(__m512 lo, __m512 hi) { return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)); }

/// 16 values of a K or V row widened to f32: f32 tile rows as they are, f16 cache rows converted (exact).
inline __m512 load_row16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_row16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

/// K rows (row j at k + j · stride, pitch values each) → kb [num_keys rounded up to even][pitch] bf16. Odd num_keys:
/// the pair's second row is k's row num_keys for f32 tile rows (attn_tile_update's padding row, masked), zeros for
/// f16 cache rows (the cache may end there).
template <class T>
void k_rows_bf16(const T* k, int64_t stride, int64_t num_keys, int64_t pitch, uint16_t* kb) {
  const int64_t n = std::is_same_v<T, float> ? (num_keys + 1) / 2 * 2 : num_keys;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < pitch; d += 32)
      _mm512_storeu_si512(kb + j * pitch + d,
                          bf16_from(load_row16(k + j * stride + d), load_row16(k + j * stride + d + 16)));
  if (n % 2 != 0) std::memset(kb + n * pitch, 0, static_cast<size_t>(pitch) * sizeof(uint16_t));
}

/// V rows (row j at v + j · stride) → vb [key pair][pitch][2] bf16; the second key of an odd num_keys' last pair is 0.
template <class T>
void v_pairs_bf16(const T* v, int64_t stride, int64_t num_keys, int64_t pitch, uint16_t* vb) {
  // bf16 from (row a: 0..15, row b: 16..31) → a0 b0 a1 b1 … a15 b15.
  alignas(64) static constexpr uint16_t kInterleave[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                           21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                           11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i perm = _mm512_load_si512(kInterleave);
  for (int64_t j = 0; j < num_keys; j += 2) {
    const T* a = v + j * stride;
    const T* b = j + 1 < num_keys ? a + stride : nullptr;
    uint16_t* dst = vb + j * pitch;  // pair j / 2: 2 · pitch values
    for (int64_t d = 0; d < pitch; d += 16) {
      const __m512 va = load_row16(a + d), vbv = b != nullptr ? load_row16(b + d) : _mm512_setzero_ps();
      _mm512_storeu_si512(dst + 2 * d, _mm512_permutexvar_epi16(perm, bf16_from(va, vbv)));
    }
  }
}

using fb = xsimd::batch<float, Arch>;

/// e^x for the probabilities (detail::Bf16TileExp; the same values go into sum_io, so the normalization matches):
/// 8 instructions against xsimd::exp's ~20 (the tile: 5 % faster).
inline fb exp_for_bf16(const fb& x) {
  using E = detail::Bf16TileExp;
  const __m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(E::kLog2e)), _mm512_set1_ps(E::kMinT));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_fmadd_ps(f, _mm512_set1_ps(E::kC3), _mm512_set1_ps(E::kC2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(E::kC1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(E::kC0));
  return _mm512_scalef_ps(p, n);  // p · 2^n
}

/// Scores of keys [key_begin, key_begin + NK) (NK even) for NG consecutive row groups (tile_scores_keys with bf16
/// pairs: each 64-bit K broadcast carries 4 dims).
template <int NG, int NK, int64_t kPitch>
inline void scores_keys(const uint16_t* qt_group, int64_t num_dim_vecs, const uint16_t* kb, int64_t runtime_pitch,
                        int64_t key_begin, float scale, float* s_group, int64_t s_key_stride,
                        PrefetchSpread& prefetch) {
  const int64_t pitch = kPitch > 0 ? kPitch : runtime_pitch;
  const int64_t group_elems = pitch * 8;
  __m512 acc[NG][NK];
  for (int gg = 0; gg < NG; ++gg)
    for (int kk = 0; kk < NK; ++kk) acc[gg][kk] = _mm512_setzero_ps();
  const uint16_t* kp = kb + key_begin * pitch;
  for (int64_t i = 0; i < num_dim_vecs; ++i) {
    prefetch.step();
    __m512bh qv[NG];
    for (int gg = 0; gg < NG; ++gg)
      qv[gg] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(qt_group + gg * group_elems + i * 32));
    for (int kk = 0; kk < NK; ++kk) {
      int64_t dims;  // 4 bf16
      std::memcpy(&dims, kp + kk * pitch + i * 4, sizeof dims);
      const __m512bh kv = reinterpret_cast<__m512bh>(_mm512_set1_epi64(dims));
      for (int gg = 0; gg < NG; ++gg) acc[gg][kk] = _mm512_dpbf16_ps(acc[gg][kk], qv[gg], kv);
    }
  }
  const fb vs(scale);
  for (int gg = 0; gg < NG; ++gg) {
    float* out = s_group + gg * 16 + key_begin / 2 * s_key_stride;
    for (int kk = 0; kk < NK; kk += 2)
      (fold_key_pair(fb(acc[gg][kk]), fb(acc[gg][kk + 1])) * vs).store_unaligned(out + kk / 2 * s_key_stride);
  }
}

/// out rows [row_in_group, row_in_group + RV) of one row group ← alpha · out + Σ_j p_j · V_j over head dims
/// [d, d + 16 C), two keys per vdpbf16ps (tile_values_rows with bf16 pairs).
template <int RV, int C, int64_t kPitch>
inline void values_rows(const float* s_group, int64_t s_key_stride, const float* lane_alpha, int64_t row_in_group,
                        const uint16_t* vb, int64_t num_key_pairs, int64_t runtime_pitch, int64_t d, float* out_row,
                        PrefetchSpread& prefetch) {
  const int64_t pitch = kPitch > 0 ? kPitch : runtime_pitch;
  __m512 acc[RV][C];
  for (int r = 0; r < RV; ++r) {
    const __m512 alpha = _mm512_set1_ps(lane_alpha[(row_in_group + r) * 2]);
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_mul_ps(_mm512_loadu_ps(out_row + r * pitch + d + c * 16), alpha);
  }
  const uint16_t* vp = vb + 2 * d;
  const float* sk = s_group + row_in_group;  // 32-bit element row_in_group + r of each key vector: row r's pair
  for (int64_t m = 0; m < num_key_pairs; ++m, vp += 2 * pitch, sk += s_key_stride) {
    prefetch.step();
    __m512bh vv[C];
    for (int c = 0; c < C; ++c) vv[c] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(vp + c * 32));
    for (int r = 0; r < RV; ++r) {
      int32_t pair;
      std::memcpy(&pair, sk + r, sizeof pair);
      const __m512bh pr = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], vv[c], pr);
    }
  }
  for (int r = 0; r < RV; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(out_row + r * pitch + d + c * 16, acc[r][c]);
}

/// K and V rows of T (f32 tile rows, or f16 cache rows in place), row j at k + j · k_stride (v + j · v_stride).
template <int64_t kPitch, class T>
void update_bf16_pitch(const uint16_t* qt, int64_t num_rows, const T* k, int64_t k_stride, const T* v,
                       int64_t v_stride, int64_t num_keys, int64_t head_dim, float scale, const int32_t* key_begin,
                       const int32_t* key_end, float* s, float* max_io, float* sum_io, float* out,
                       const PrefetchRange* prefetch, int64_t num_prefetch) {
  constexpr int64_t L = 16;
  // Scores: one group × 16 keys or two groups × 8 keys (16 accumulators); values: 4 rows × 4 (or 2) vectors of dims.
  constexpr int kScoreKeys = 16, kPairScoreKeys = 8, kValueRows = 4;
  constexpr int kValueVecs = (kPitch / L) % 4 == 0 && kPitch > 0 ? 4 : 2;
  const int64_t pitch = kPitch > 0 ? kPitch : attn_tile_pitch(head_dim);
  const int64_t num_groups = attn_tile_rows(num_rows) / 8;
  const int64_t num_dim_vecs = pitch / 4;
  const int64_t num_key_pairs = (num_keys + 1) / 2;
  const int64_t s_key_stride = num_groups * L;
  const int64_t num_score_steps = (num_groups / 2) * ((num_keys + kPairScoreKeys - 1) / kPairScoreKeys) * num_dim_vecs +
                                  (num_groups % 2) * ((num_keys + kScoreKeys - 1) / kScoreKeys) * num_dim_vecs;
  const int64_t num_value_steps = num_groups * (8 / kValueRows) * (pitch / (kValueVecs * L)) * num_key_pairs;
  PrefetchSpread spread(prefetch, num_prefetch, num_score_steps + num_value_steps);

  alignas(64) uint16_t kb[kAttnTileMaxKeys * kMaxPitch];  // (keys rounded up to even, pitch)
  alignas(64) uint16_t vb[kAttnTileMaxKeys * kMaxPitch];  // (key pairs, pitch, 2)
  k_rows_bf16(k, k_stride, num_keys, pitch, kb);
  v_pairs_bf16(v, v_stride, num_keys, pitch, vb);

  // 1. Scores, two groups at a time.
  for (int64_t g = 0; g < num_groups;) {
    const uint16_t* qt_group = qt + g * pitch * 8;
    float* s_group = s + g * L;
    int64_t j = 0;
    if (g + 1 < num_groups) {
      for (; j + kPairScoreKeys <= num_keys; j += kPairScoreKeys)
        scores_keys<2, kPairScoreKeys, kPitch>(qt_group, num_dim_vecs, kb, pitch, j, scale, s_group, s_key_stride,
                                               spread);
      for (; j < num_keys; j += 2)
        scores_keys<2, 2, kPitch>(qt_group, num_dim_vecs, kb, pitch, j, scale, s_group, s_key_stride, spread);
      g += 2;
    } else {
      for (; j + kScoreKeys <= num_keys; j += kScoreKeys)
        scores_keys<1, kScoreKeys, kPitch>(qt_group, num_dim_vecs, kb, pitch, j, scale, s_group, s_key_stride, spread);
      for (; j < num_keys; j += 2)
        scores_keys<1, 2, kPitch>(qt_group, num_dim_vecs, kb, pitch, j, scale, s_group, s_key_stride, spread);
      g += 1;
    }
  }

  for (int64_t g = 0; g < num_groups; ++g) {
    float* s_group = s + g * L;
    // 2. Online softmax per row, then the probabilities rounded to bf16 in place.
    alignas(64) float lane_alpha[L];
    tile_softmax_group(s_group, s_key_stride, g, num_rows, num_keys, key_begin, key_end, max_io, sum_io, lane_alpha,
                       exp_for_bf16);
    for (int64_t kv = 0; kv < num_key_pairs; ++kv) {
      float* p = s_group + kv * s_key_stride;
      const __m256bh p16 = _mm512_cvtneps_pbh(_mm512_loadu_ps(p));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(p16));
    }
    // 3. Values, kValueRows rows × kValueVecs vectors of head dims at a time.
    for (int64_t r = 0; r < 8; r += kValueRows)
      for (int64_t d = 0; d < pitch; d += kValueVecs * L)
        values_rows<kValueRows, kValueVecs, kPitch>(s_group, s_key_stride, lane_alpha, r, vb, num_key_pairs, pitch, d,
                                                    out + (g * 8 + r) * pitch, spread);
  }
  spread.finish();
}

template <class T>
void update_bf16_rows(const uint16_t* qt, int64_t num_rows, const T* k, int64_t k_stride, const T* v,
                      int64_t v_stride, int64_t num_keys, int64_t head_dim, float scale, const int32_t* key_begin,
                      const int32_t* key_end, float* s, float* max_io, float* sum_io, float* out,
                      const PrefetchRange* prefetch, int64_t num_prefetch) {
  with_tile_pitch(head_dim, [&](auto pitch) {
    update_bf16_pitch<decltype(pitch)::value>(qt, num_rows, k, k_stride, v, v_stride, num_keys, head_dim, scale,
                                              key_begin, key_end, s, max_io, sum_io, out, prefetch, num_prefetch);
  });
}

void update_bf16(const uint16_t* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys,
                 int64_t head_dim, float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                 float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch, int64_t num_prefetch) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  update_bf16_rows(qt, num_rows, k, pitch, v, pitch, num_keys, head_dim, scale, key_begin, key_end, s, max_io, sum_io,
                   out, prefetch, num_prefetch);
}

void update_bf16_kv_f16(const uint16_t* qt, int64_t num_rows, const uint8_t* k, int64_t k_stride_bytes,
                        const uint8_t* v, int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim, float scale,
                        const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io, float* sum_io,
                        float* out, const PrefetchRange* prefetch, int64_t num_prefetch) {
  constexpr auto kElem = static_cast<int64_t>(sizeof(uint16_t));
  update_bf16_rows(qt, num_rows, reinterpret_cast<const uint16_t*>(k), k_stride_bytes / kElem,
                   reinterpret_cast<const uint16_t*>(v), v_stride_bytes / kElem, num_keys, head_dim, scale, key_begin,
                   key_end, s, max_io, sum_io, out, prefetch, num_prefetch);
}

}  // namespace

}  // namespace hetmoe::cpu::HETMOE_ATTN_NS

namespace hetmoe::cpu::detail {

void add_attention_kernels_avx512_bf16(KernelTable& t) {
  t.attn_tile_pack_q_bf16 = HETMOE_ATTN_NS::pack_q_bf16;
  t.attn_tile_update_bf16 = HETMOE_ATTN_NS::update_bf16;
  t.attn_tile_update_bf16_kv_f16 = HETMOE_ATTN_NS::update_bf16_kv_f16;
  // Every tile, decode's too: from the f16 rows in place (attn_tile_update_bf16_kv_f16) a decode tile is faster in
  // bf16 than in f32 (BM_AttnTile keys:4096 tokens:1, Zen 4: 943–991 against 1056–1095 µs with V in place; through
  // f32 rows 1333–1389), and prefill and decode then see the same precision.
  t.attn_tile_bf16_min_rows = 1;
}

}  // namespace hetmoe::cpu::detail
