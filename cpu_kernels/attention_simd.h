// Generic SIMD attention kernels over block-quantized KV rows (q8_0, q4_0) and the split-softmax chunk, compiled
// once per ISA like kernels_simd.h: a per-ISA TU (attention_avx2.cpp, attention_avx512.cpp) built with its own -m
// flags defines HETMOE_ATTN_NS (an ISA-unique namespace: no inline helper is shared between TUs built with different
// flags) and provides, in hetmoe::cpu::HETMOE_ATTN_NS, before including this file:
//   using Arch;                                          xsimd arch of the f32 math
//   void dequantize_q8_0_block(const uint8_t* block, float* out)   34-byte block → out[32], value d · q
//   void dequantize_q4_0_block(const uint8_t* block, float* out)   18-byte block → out[32], value d · (nibble − 8)
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

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kv_blocks.h"

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

inline void add_attention_kernels(KernelTable& t) {
  t.attn_scores_q8_0 = attn_scores<kKvQ8_0BlockBytes, dequantize_q8_0_block>;
  t.attn_values_q8_0 = attn_values<kKvQ8_0BlockBytes, dequantize_q8_0_block>;
  t.attn_scores_q4_0 = attn_scores<kKvQ4_0BlockBytes, dequantize_q4_0_block>;
  t.attn_values_q4_0 = attn_values<kKvQ4_0BlockBytes, dequantize_q4_0_block>;
  t.softmax_partial = softmax_partial;
}

}  // namespace hetmoe::cpu::HETMOE_ATTN_NS
