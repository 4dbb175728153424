#pragma once
// Scalar reference kernels: the oracle every SIMD and CUDA kernel is tested against. Plain C++, no ISA
// flags, double accumulation where a sum is long. Formulas follow gpt-oss-spec.md §3/§4 and the llama.cpp
// CPU backend it cites (ggml/src/ggml-cpu/ops.cpp, ggml/src/ggml-quants.c).

#include <cstdint>

#include "runtime/base/ggml_types.h"

namespace hetmoe::ref {

// ---- scalar conversions ------------------------------------------------------------------------------

/// IEEE 754 binary16 → binary32 (subnormals, inf and NaN preserved).
float f16_to_f32(uint16_t h);
/// binary32 → binary16, round to nearest even (overflow → inf, NaN stays NaN), as F16C's vcvtps2ph.
uint16_t f32_to_f16(float f);
/// bfloat16 → binary32 (exact).
float bf16_to_f32(uint16_t b);
/// binary32 → bfloat16 bits, rounded to nearest even (as AVX512_BF16's vcvtneps2bf16 rounds normal values); NaN stays
/// a (quiet) NaN.
uint16_t f32_to_bf16(float f);

/// MXFP4 value table: twice the E2M1 values (ggml's kvalues_mxfp4); scale is 2^(e-128) to compensate.
inline constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/// 2^(e-128) as a float for an MXFP4 block exponent byte e (e = 0 gives 2^-128, a subnormal; e = 255 gives 2^127).
float mxfp4_scale(uint8_t e);

// ---- rows of quantized weights ---------------------------------------------------------------------

/// Dequantizes one row of `num_elements` values of `type` from `src` into dst[num_elements] (f32).
/// num_elements must be a multiple of the type's block size (32 for Q8_0 and MXFP4); the caller validates.
/// Q8_0 block: {f16 d; int8 q[32]} → d*q[j]. MXFP4 block: {u8 e; u8 qs[16]} → element j < 16 is
/// kMxfp4Values[qs[j] & 15] * 2^(e-128), element j+16 is kMxfp4Values[qs[j] >> 4] * 2^(e-128).
void dequantize_row(TensorType type, const uint8_t* src, float* dst, int64_t num_elements);

/// Dot product of one weight row (num_elements values of `type`) with x[num_elements] (f32), accumulated in
/// double: Σ_k W[k]·x[k]. Same layout rules as dequantize_row.
float dot_row(TensorType type, const uint8_t* row, const float* x, int64_t num_elements);

// ---- vector ops ---------------------------------------------------------------------------------------

/// out[n] = x[n] / sqrt(mean(x²) + eps) * weight[n]; the sum of squares is accumulated in double
/// (llama.cpp ggml_compute_forward_rms_norm_f32). out may alias x.
void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps);

/// In-place softmax over x[n] with max subtraction (f32 exp, double sum).
void softmax(float* x, int64_t n);

/// SwiGLU as in gpt-oss (spec §3 step 8, reference openai/gpt-oss gpt_oss/torch/model.py swiglu):
/// g' = min(gate, limit), a' = clamp(up, -limit, limit), out = g' * sigmoid(alpha * g') * (a' + 1).
/// gate[n], up[n], out[n] f32; out may alias gate or up. NaN in gate or up gives NaN.
inline constexpr float kSwigluAlpha = 1.702f, kSwigluLimit = 7.0f;
void swiglu_oai(const float* gate, const float* up, float* out, int64_t n, float alpha = kSwigluAlpha,
                float limit = kSwigluLimit);

// ---- RoPE (YaRN, NEOX layout) ---------------------------------------------------------------------------

/// YaRN rotary embedding parameters (gpt-oss-spec.md §3 step 3; ggml's ggml_rope_yarn_corr_dims and rope_yarn).
struct RopeYarnParams {
  int32_t num_rot_dims = 64;         // rotated dims per head (= head_dim for gpt-oss)
  float freq_base = 150000.0f;       // theta base
  float freq_scale = 1.0f / 32.0f;   // 1 / YaRN factor
  int32_t original_context = 4096;   // YaRN original context length
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  float ext_factor = 1.0f;           // 1 for YaRN, 0 disables the ramp
  float attn_factor = 1.0f;          // extra magnitude factor (1 for gpt-oss)
};

/// The YaRN correction range in pair indices: low = max(0, floor(corr_dim(beta_fast))),
/// high = min(num_rot_dims - 1, ceil(corr_dim(beta_slow))), corr_dim(r) = d·ln(ctx/(2πr)) / (2 ln base).
void rope_yarn_corr_dims(const RopeYarnParams& p, float* low, float* high);

/// cos/sin tables for one position: cos_out[num_rot_dims/2], sin_out[num_rot_dims/2], already multiplied by the
/// YaRN magnitude m = attn_factor·(1 + 0.1·ln(1/freq_scale)). θ for pair i (θ_extrap = pos · base^(−2i/d), the ramp
/// mix with θ_extrap · freq_scale) and its cos/sin are computed in double, each output rounded once to f32, so
/// positions up to the 131,072-token context keep f32 accuracy (llama.cpp builds θ in f32: ~1e-3 off there).
void rope_yarn_cos_sin(const RopeYarnParams& p, int64_t pos, float* cos_out, float* sin_out);

/// NEOX rotation of one head in place, x[head_dim]: pair i ∈ [0, d/2) rotates (x[i], x[i + d/2]), d = num_rot_dims.
void rope_neox_apply(float* x, int32_t num_rot_dims, const float* cos_tab, const float* sin_tab);

}  // namespace hetmoe::ref
