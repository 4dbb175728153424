// Scalar variant of the kernel table: plain C++, no ISA flags. It computes exactly the integer math of the SIMD
// variants (per 32-value block: an exact int32 dot of weight codes with int8 activations, then
// acc += (float(dot) · d_x) · d_w) so that they can be compared with it at a tight tolerance; only the order of the
// float additions differs. It is itself compared with ref::dot_row (f32 activations) in tests/test_cpu_kernels.cpp.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/reference.h"

namespace hetmoe::cpu {
namespace {

constexpr int64_t kBlock = 32;

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void quantize_act_q8(const float* x, ActQ8Block* out, int64_t n) {
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0.0f;
    for (int64_t j = 0; j < kBlock; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = d;
    // nearbyint rounds to nearest even in the default FP environment, like the SIMD cvtps2dq.
    for (int64_t j = 0; j < kBlock; ++j) out[b].q[j] = static_cast<int8_t>(std::nearbyint(xb[j] * inv_d));
  }
}

/// Σ_j w_q[j] · x_q[j] of one MXFP4 block (integer codes of the doubled E2M1 table) with one activation block.
int32_t mxfp4_block_dot(const uint8_t* block, const ActQ8Block& xb) {
  const uint8_t* qs = block + 1;
  int32_t sum = 0;
  for (int j = 0; j < 16; ++j) {
    sum += ref::kMxfp4Values[qs[j] & 0x0F] * xb.q[j];
    sum += ref::kMxfp4Values[qs[j] >> 4] * xb.q[j + 16];
  }
  return sum;
}

float mxfp4_row_dot(const uint8_t* row, const ActQ8Block* x, int64_t num_blocks) {
  float acc = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block = row + b * kMXFP4BlockBytes;
    acc += static_cast<float>(mxfp4_block_dot(block, x[b])) * x[b].d * detail::kMxfp4Scale.v[block[0]];
  }
  return acc;
}

float q8_0_row_dot(const uint8_t* row, const ActQ8Block* x, int64_t num_blocks) {
  float acc = 0.0f;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const uint8_t* block = row + b * kQ8_0BlockBytes;
    const auto* q = reinterpret_cast<const int8_t*>(block + 2);
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) sum += q[j] * x[b].q[j];
    acc += static_cast<float>(sum) * x[b].d * ref::f16_to_f32(load_u16(block));
  }
  return acc;
}

float f32_value(const uint8_t* row, int64_t k) {
  float v;
  std::memcpy(&v, row + 4 * k, sizeof v);
  return v;
}
float f16_value(const uint8_t* row, int64_t k) { return ref::f16_to_f32(load_u16(row + 2 * k)); }
float bf16_value(const uint8_t* row, int64_t k) { return ref::bf16_to_f32(load_u16(row + 2 * k)); }

template <float (*Value)(const uint8_t*, int64_t)>
float dense_row_dot(const uint8_t* row, const float* x, int64_t num_cols) {
  float acc = 0.0f;
  for (int64_t k = 0; k < num_cols; ++k) acc += Value(row, k) * x[k];
  return acc;
}

template <float (*RowDot)(const uint8_t*, const ActQ8Block*, int64_t)>
void gemv_quant(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                int64_t num_cols, float* y) {
  for (int64_t r = row_begin; r < row_end; ++r) y[r - row_begin] = RowDot(w + r * row_bytes, x, num_cols / kBlock);
}

template <float (*RowDot)(const uint8_t*, const ActQ8Block*, int64_t)>
void gemm_quant(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  const int64_t num_blocks = num_cols / kBlock;
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t t = 0; t < num_tokens; ++t)
      y[t * y_stride + (r - row_begin)] = RowDot(w + r * row_bytes, x + t * num_blocks, num_blocks);
}

template <float (*Value)(const uint8_t*, int64_t)>
void gemv_dense(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                int64_t num_cols, float* y) {
  for (int64_t r = row_begin; r < row_end; ++r) y[r - row_begin] = dense_row_dot<Value>(w + r * row_bytes, x, num_cols);
}

template <float (*Value)(const uint8_t*, int64_t)>
void gemm_dense(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t t = 0; t < num_tokens; ++t)
      y[t * y_stride + (r - row_begin)] = dense_row_dot<Value>(w + r * row_bytes, x + t * num_cols, num_cols);
}

float dot_f32_f16(const float* q, const uint16_t* k, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += q[i] * ref::f16_to_f32(k[i]);
  return acc;
}

void axpy_f16(float a, const uint16_t* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a * ref::f16_to_f32(v[i]);
}

/// K/V element i of a row: f16 (Half = true) or f32.
template <bool Half>
float kv_value(const uint8_t* row, int64_t i) {
  if constexpr (Half) {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, sizeof h);
    return ref::f16_to_f32(h);
  } else {
    float f;
    std::memcpy(&f, row + 4 * i, sizeof f);
    return f;
  }
}

template <bool Half>
void attn_scores(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                 int64_t head_dim, float scale, float* scores, int64_t scores_stride) {
  for (int64_t j = 0; j < num_keys; ++j)
    for (int64_t h = 0; h < group; ++h) {
      float acc = 0.0f;
      for (int64_t i = 0; i < head_dim; ++i) acc += q[h * head_dim + i] * kv_value<Half>(k + j * stride_bytes, i);
      scores[h * scores_stride + j] = scale * acc;
    }
}

template <bool Half>
void attn_values(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                 int64_t num_keys, int64_t head_dim, float* out) {
  for (int64_t j = 0; j < num_keys; ++j)
    for (int64_t h = 0; h < group; ++h)
      for (int64_t i = 0; i < head_dim; ++i)
        out[h * head_dim + i] += p[h * p_stride + j] * kv_value<Half>(v + j * stride_bytes, i);
}

void softmax_with_sink(float* s, int64_t n, float sink) {
  float m = sink;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
  float z = std::exp(sink - m);
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    z += s[j];
  }
  for (int64_t j = 0; j < n; ++j) s[j] *= 1.0f / z;
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy_f32(float a, const float* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a * v[i];
}

constexpr KernelTable kScalarTable{
    .isa = Isa::kScalar,
    .quantize_act_q8 = quantize_act_q8,
    .gemv_mxfp4 = gemv_quant<mxfp4_row_dot>,
    .gemv_q8_0 = gemv_quant<q8_0_row_dot>,
    .gemv_f32 = gemv_dense<f32_value>,
    .gemv_f16 = gemv_dense<f16_value>,
    .gemv_bf16 = gemv_dense<bf16_value>,
    .gemm_mxfp4 = gemm_quant<mxfp4_row_dot>,
    .gemm_q8_0 = gemm_quant<q8_0_row_dot>,
    .gemm_f32 = gemm_dense<f32_value>,
    .gemm_f16 = gemm_dense<f16_value>,
    .gemm_bf16 = gemm_dense<bf16_value>,
    .dot_f32_f16 = dot_f32_f16,
    .axpy_f16 = axpy_f16,
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .attn_scores_f16 = attn_scores<true>,
    .attn_values_f16 = attn_values<true>,
    .attn_scores_f32 = attn_scores<false>,
    .attn_values_f32 = attn_values<false>,
    .softmax_with_sink = softmax_with_sink,
    .swiglu_oai = ref::swiglu_oai,
    .rope_neox = ref::rope_neox_apply,
};

}  // namespace

namespace detail {
const KernelTable& kernel_table_scalar() { return kScalarTable; }
}  // namespace detail

}  // namespace hetmoe::cpu
