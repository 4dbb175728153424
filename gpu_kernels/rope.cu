// YaRN RoPE in the NEOX layout, in place, as ref::rope_yarn_cos_sin + ref::rope_neox_apply.
// Parallelization: one block per token. The first num_rot_dims/2 threads each build the cos/sin of one pair i as
// the reference does, in double (θ_extrap = pos · base^(−2i/d), the ramp mix, cos/sin, then one rounding to float)
// into shared memory; then all threads rotate the (head, pair) elements of the token. The host computes the
// correction range and the magnitude with the reference's own float formulas; only the device's double pow/cos/sin
// (≤ 2 ulp in double) differ from the CPU's, far below the final float rounding.

#include <algorithm>
#include <cmath>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/ops.h"

namespace hetmoe::gpu {
namespace {

constexpr int kThreads = 128;

struct RopeConstants {
  double freq_base;
  double freq_scale;
  float low;  // YaRN correction range in pair indices
  float high;
  double ext_factor;
  float mscale;
};

// Same expression as ref::rope_yarn_corr_dims' helper (cpu_kernels/reference.cpp), in float.
float corr_dim(int32_t num_rot_dims, int32_t original_context, float num_rot, float base) {
  constexpr float kPi = 3.14159265358979323846f;
  return static_cast<float>(num_rot_dims) *
         std::log(static_cast<float>(original_context) / (num_rot * 2.0f * kPi)) / (2.0f * std::log(base));
}

RopeConstants rope_constants(const ref::RopeYarnParams& p) {
  RopeConstants c{};
  const float start = std::floor(corr_dim(p.num_rot_dims, p.original_context, p.beta_fast, p.freq_base));
  const float end = std::ceil(corr_dim(p.num_rot_dims, p.original_context, p.beta_slow, p.freq_base));
  c.low = std::max(0.0f, start);
  c.high = std::min(static_cast<float>(p.num_rot_dims - 1), end);
  c.freq_base = p.freq_base;
  c.freq_scale = p.freq_scale;
  c.ext_factor = p.ext_factor;
  c.mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) c.mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  return c;
}

__global__ void rope_neox_yarn_kernel(float* x, int64_t num_heads, int64_t head_dim, int32_t num_rot_dims,
                                      const int32_t* __restrict__ positions, RopeConstants c) {
  extern __shared__ float cos_sin[];  // [half] cos, then [half] sin
  const int half = num_rot_dims / 2;
  const int64_t t = blockIdx.x;
  for (int i = threadIdx.x; i < half; i += kThreads) {
    const double theta_extrap = static_cast<double>(positions[t]) * pow(c.freq_base, -2.0 * i / num_rot_dims);
    const double theta_interp = c.freq_scale * theta_extrap;
    double theta = theta_interp;
    if (c.ext_factor != 0.0) {
      const double y = (static_cast<double>(i) - c.low) / fmax(0.001, static_cast<double>(c.high) - c.low);
      const double mix = (1.0 - fmin(1.0, fmax(0.0, y))) * c.ext_factor;
      theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
    }
    cos_sin[i] = static_cast<float>(cos(theta) * c.mscale);
    cos_sin[half + i] = static_cast<float>(sin(theta) * c.mscale);
  }
  __syncthreads();
  float* xt = x + t * num_heads * head_dim;
  for (int64_t e = threadIdx.x; e < num_heads * half; e += kThreads) {
    const int64_t h = e / half;
    const int i = static_cast<int>(e % half);
    float* xh = xt + h * head_dim;
    const float x0 = xh[i];
    const float x1 = xh[i + half];
    const float cs = cos_sin[i];
    const float sn = cos_sin[half + i];
    xh[i] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
    xh[i + half] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
  }
}

}  // namespace

cudaError_t rope_neox_yarn(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
                           const int32_t* positions, const ref::RopeYarnParams& params, cudaStream_t stream) {
  if (x == nullptr || positions == nullptr || num_tokens <= 0 || num_heads <= 0 || head_dim <= 0 ||
      num_tokens > detail::kMaxGridX || params.num_rot_dims <= 0 || params.num_rot_dims % 2 != 0 ||
      params.num_rot_dims > head_dim || params.num_rot_dims > 1024 || !(params.freq_base > 0.0f) ||
      !(params.freq_scale > 0.0f) || params.original_context <= 0)
    return cudaErrorInvalidValue;
  const RopeConstants c = rope_constants(params);
  const size_t smem = static_cast<size_t>(params.num_rot_dims) * sizeof(float);
  rope_neox_yarn_kernel<<<static_cast<unsigned>(num_tokens), kThreads, smem, stream>>>(
      x, num_heads, head_dim, params.num_rot_dims, positions, c);
  return detail::launch_status();
}

}  // namespace hetmoe::gpu
