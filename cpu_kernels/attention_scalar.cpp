// Scalar attention kernels over block-quantized KV-cache rows (q8_0, q4_0), the split-softmax chunk, the tiled
// (flash) attention kernels, and the KV block quantization itself (kv_blocks.h). No ISA flags: this is the reference
// the SIMD variants (attention_avx2.cpp, attention_avx512.cpp) are tested against.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"

namespace hetmoe::cpu {

void quantize_kv_q8_0(const float* x, uint8_t* out, int64_t n) {
  for (int64_t b = 0; b < n / kKvBlockElems; ++b, x += kKvBlockElems, out += kKvQ8_0BlockBytes) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kKvBlockElems; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = ref::f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int64_t j = 0; j < kKvBlockElems; ++j)
      out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

void quantize_kv_q4_0(const float* x, uint8_t* out, int64_t n) {
  for (int64_t b = 0; b < n / kKvBlockElems; ++b, x += kKvBlockElems, out += kKvQ4_0BlockBytes) {
    float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
    for (int64_t j = 0; j < kKvBlockElems; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = ref::f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    const auto nibble = [&](float v) {  // truncation toward zero of v·id + 8.5 ∈ [0.5, 16.5]: round half up, ≤ 15
      return static_cast<uint8_t>(std::min(15, static_cast<int>(v * id + 8.5f)));
    };
    for (int64_t j = 0; j < kKvBlockElems / 2; ++j)
      out[2 + j] = static_cast<uint8_t>(nibble(x[j]) | (nibble(x[j + kKvBlockElems / 2]) << 4));
  }
}

void dequantize_kv_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kKvBlockElems; ++b, src += kKvQ8_0BlockBytes, dst += kKvBlockElems) {
    uint16_t dh;
    std::memcpy(&dh, src, 2);
    const float d = ref::f16_to_f32(dh);
    for (int64_t j = 0; j < kKvBlockElems; ++j) dst[j] = d * static_cast<float>(static_cast<int8_t>(src[2 + j]));
  }
}

void dequantize_kv_q4_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kKvBlockElems; ++b, src += kKvQ4_0BlockBytes, dst += kKvBlockElems) {
    uint16_t dh;
    std::memcpy(&dh, src, 2);
    const float d = ref::f16_to_f32(dh);
    for (int64_t j = 0; j < kKvBlockElems / 2; ++j) {
      dst[j] = d * static_cast<float>((src[2 + j] & 0x0F) - 8);
      dst[j + kKvBlockElems / 2] = d * static_cast<float>((src[2 + j] >> 4) - 8);
    }
  }
}

namespace {

using DequantizeRow = void (*)(const uint8_t*, float*, int64_t);

template <DequantizeRow Dequantize>
void attn_scores(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                 int64_t head_dim, float scale, float* scores, int64_t scores_stride) {
  float row[kMaxAttnHeadDim];
  for (int64_t j = 0; j < num_keys; ++j) {
    Dequantize(k + j * stride_bytes, row, head_dim);
    for (int64_t h = 0; h < group; ++h) {
      float acc = 0.0f;
      for (int64_t i = 0; i < head_dim; ++i) acc += q[h * head_dim + i] * row[i];
      scores[h * scores_stride + j] = scale * acc;
    }
  }
}

template <DequantizeRow Dequantize>
void attn_values(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                 int64_t num_keys, int64_t head_dim, float* out) {
  float row[kMaxAttnHeadDim];
  for (int64_t j = 0; j < num_keys; ++j) {
    Dequantize(v + j * stride_bytes, row, head_dim);
    for (int64_t h = 0; h < group; ++h)
      for (int64_t i = 0; i < head_dim; ++i) out[h * head_dim + i] += p[h * p_stride + j] * row[i];
  }
}

float softmax_partial(float* s, int64_t n, float* max_out) {
  float m = s[0];
  for (int64_t j = 1; j < n; ++j) m = std::max(m, s[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  *max_out = m;
  return sum;
}

// Tiled attention, scalar: qt is the query rows themselves, [attn_tile_rows][pitch]; s is [row][kAttnTileMaxKeys].

void kv_row_f16_from_f32(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = ref::f32_to_f16(src[i]);
}

void kv_rows_f32_f16(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t j = 0; j < num_keys; ++j) {
    const auto* row = src + j * stride_bytes;
    for (int64_t d = 0; d < pitch; ++d) {
      uint16_t h = 0;
      if (d < head_dim) std::memcpy(&h, row + 2 * d, 2);
      dst[j * pitch + d] = ref::f16_to_f32(h);  // f16 0 → 0.0f for the padding
    }
  }
}

void kv_rows_f32_f32(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t j = 0; j < num_keys; ++j) {
    std::memcpy(dst + j * pitch, src + j * stride_bytes, static_cast<size_t>(head_dim) * sizeof(float));
    std::fill(dst + j * pitch + head_dim, dst + (j + 1) * pitch, 0.0f);
  }
}

template <DequantizeRow Dequantize>
void kv_rows_f32_blocks(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) {
  for (int64_t j = 0; j < num_keys; ++j) Dequantize(src + j * stride_bytes, dst + j * head_dim, head_dim);
}

void attn_tile_pack_q(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin, float* qt) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t r = 0; r < num_rows; ++r)
    std::copy(q + r * head_dim, q + (r + 1) * head_dim, qt + (row_begin + r) * pitch);
}

/// One key block of the online softmax (KernelTable::attn_tile_update's contract) with the operands of P: P::q(qt
/// value), P::kv(K or V value) and P::p(probability) as multiplied, P::exp for the probabilities.
template <class P, class Q>
void tile_update_rows(const Q* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys, int64_t head_dim,
                      float scale, const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io,
                      float* sum_io, float* out) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t begin = key_begin[r], end = std::min<int64_t>(key_end[r], num_keys);
    if (begin >= end) continue;
    float* sr = s + r * kAttnTileMaxKeys;
    float m = max_io[r];
    for (int64_t j = begin; j < end; ++j) {
      float acc = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) acc += P::q(qt[r * pitch + d]) * P::kv(k[j * pitch + d]);
      sr[j] = scale * acc;
      m = std::max(m, sr[j]);
    }
    const float alpha = std::exp(max_io[r] - m);  // 0 for a row's first keys (max_io = −∞)
    float sum = 0.0f;
    for (int64_t j = begin; j < end; ++j) sum += (sr[j] = P::exp(sr[j] - m));
    sum_io[r] = alpha * sum_io[r] + sum;
    max_io[r] = m;
    float* o = out + r * pitch;
    for (int64_t d = 0; d < head_dim; ++d) o[d] *= alpha;
    for (int64_t j = begin; j < end; ++j)
      for (int64_t d = 0; d < head_dim; ++d) o[d] += P::p(sr[j]) * P::kv(v[j * pitch + d]);
  }
}

/// f32 tiles: every operand as it is.
struct F32Operands {
  static float q(float x) { return x; }
  static float kv(float x) { return x; }
  static float p(float x) { return x; }
  static float exp(float x) { return std::exp(x); }
};

void attn_tile_update(const float* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys,
                      int64_t head_dim, float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                      float* max_io, float* sum_io, float* out, const PrefetchRange* /*prefetch*/,
                      int64_t /*num_prefetch*/) {
  tile_update_rows<F32Operands>(qt, num_rows, k, v, num_keys, head_dim, scale, key_begin, key_end, s, max_io, sum_io,
                                out);
}

void attn_tile_update_v_f16(const float* qt, int64_t num_rows, const float* k, const uint8_t* v,
                            int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim, float scale,
                            const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io, float* sum_io,
                            float* out, const PrefetchRange* prefetch, int64_t num_prefetch) {
  thread_local std::vector<float> v_rows;  // (num_keys, pitch) f32
  v_rows.resize(static_cast<size_t>(num_keys * attn_tile_pitch(head_dim)));
  kv_rows_f32_f16(v, v_stride_bytes, num_keys, head_dim, v_rows.data());
  attn_tile_update(qt, num_rows, k, v_rows.data(), num_keys, head_dim, scale, key_begin, key_end, s, max_io, sum_io,
                   out, prefetch, num_prefetch);
}

// bf16 products, scalar (the reference of the SIMD variants): qt is [attn_tile_rows][pitch] bf16; K, V and the
// probabilities are rounded where they are multiplied.

void attn_tile_pack_q_bf16(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin, uint16_t* qt) {
  const int64_t pitch = attn_tile_pitch(head_dim);
  for (int64_t r = 0; r < num_rows; ++r)
    for (int64_t d = 0; d < head_dim; ++d) qt[(row_begin + r) * pitch + d] = ref::f32_to_bf16(q[r * head_dim + d]);
}

float round_bf16(float x) { return ref::bf16_to_f32(ref::f32_to_bf16(x)); }

/// detail::Bf16TileExp: the SIMD variants' operations one by one (nearbyint rounds to nearest even, ldexp as
/// vscalefps).
float exp_bf16_tile(float x) {
  using E = detail::Bf16TileExp;
  const float t = std::max(x * E::kLog2e, E::kMinT);
  const float n = std::nearbyint(t);
  const float f = t - n;
  const float p = std::fma(std::fma(std::fma(f, E::kC3, E::kC2), f, E::kC1), f, E::kC0);
  return std::ldexp(p, static_cast<int>(n));
}

/// bf16 tiles: q packed in bf16, K, V and the probabilities rounded where they are multiplied.
struct Bf16Operands {
  static float q(uint16_t x) { return ref::bf16_to_f32(x); }
  static float kv(float x) { return round_bf16(x); }
  static float p(float x) { return round_bf16(x); }
  static float exp(float x) { return exp_bf16_tile(x); }
};

void attn_tile_update_bf16(const uint16_t* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys,
                           int64_t head_dim, float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                           float* max_io, float* sum_io, float* out, const PrefetchRange* /*prefetch*/,
                           int64_t /*num_prefetch*/) {
  tile_update_rows<Bf16Operands>(qt, num_rows, k, v, num_keys, head_dim, scale, key_begin, key_end, s, max_io, sum_io,
                                 out);
}

void attn_tile_update_bf16_kv_f16(const uint16_t* qt, int64_t num_rows, const uint8_t* k, int64_t k_stride_bytes,
                                  const uint8_t* v, int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim,
                                  float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                                  float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch,
                                  int64_t num_prefetch) {
  thread_local std::vector<float> k_rows, v_rows;  // (num_keys + 1, pitch) f32; K's extra row: the odd key's pair
  const int64_t pitch = attn_tile_pitch(head_dim);
  k_rows.assign(static_cast<size_t>((num_keys + 1) * pitch), 0.0f);
  v_rows.resize(static_cast<size_t>(num_keys * pitch));
  kv_rows_f32_f16(k, k_stride_bytes, num_keys, head_dim, k_rows.data());
  kv_rows_f32_f16(v, v_stride_bytes, num_keys, head_dim, v_rows.data());
  attn_tile_update_bf16(qt, num_rows, k_rows.data(), v_rows.data(), num_keys, head_dim, scale, key_begin, key_end, s,
                        max_io, sum_io, out, prefetch, num_prefetch);
}

}  // namespace

namespace detail {

void add_attention_kernels_scalar(KernelTable& t) {
  t.attn_scores_q8_0 = attn_scores<dequantize_kv_q8_0>;
  t.attn_values_q8_0 = attn_values<dequantize_kv_q8_0>;
  t.attn_scores_q4_0 = attn_scores<dequantize_kv_q4_0>;
  t.attn_values_q4_0 = attn_values<dequantize_kv_q4_0>;
  t.softmax_partial = softmax_partial;
  t.kv_rows_f32_f16 = kv_rows_f32_f16;
  t.kv_row_f16_from_f32 = kv_row_f16_from_f32;
  t.kv_rows_f32_f32 = kv_rows_f32_f32;
  t.kv_rows_f32_q8_0 = kv_rows_f32_blocks<dequantize_kv_q8_0>;
  t.kv_rows_f32_q4_0 = kv_rows_f32_blocks<dequantize_kv_q4_0>;
  t.attn_tile_pack_q = attn_tile_pack_q;
  t.attn_tile_update = attn_tile_update;
  t.attn_tile_update_v_f16 = attn_tile_update_v_f16;
  t.attn_v_f16_max_rows = std::numeric_limits<int64_t>::max();
  t.attn_tile_pack_q_bf16 = attn_tile_pack_q_bf16;
  t.attn_tile_update_bf16 = attn_tile_update_bf16;
  t.attn_tile_update_bf16_kv_f16 = attn_tile_update_bf16_kv_f16;
  t.attn_tile_bf16_min_rows = std::numeric_limits<int64_t>::max();  // a reference: never chosen
}

}  // namespace detail

}  // namespace hetmoe::cpu
