// Scalar attention kernels over block-quantized KV-cache rows (q8_0, q4_0), the split-softmax chunk, and the KV block
// quantization itself (kv_blocks.h). No ISA flags: this is the reference the SIMD variants (attention_avx2.cpp,
// attention_avx512.cpp) are tested against.

#include <algorithm>
#include <cmath>
#include <cstring>

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

}  // namespace

namespace detail {

void add_attention_kernels_scalar(KernelTable& t) {
  t.attn_scores_q8_0 = attn_scores<dequantize_kv_q8_0>;
  t.attn_values_q8_0 = attn_values<dequantize_kv_q8_0>;
  t.attn_scores_q4_0 = attn_scores<dequantize_kv_q4_0>;
  t.attn_values_q4_0 = attn_values<dequantize_kv_q4_0>;
  t.softmax_partial = softmax_partial;
}

}  // namespace detail

}  // namespace hetmoe::cpu
