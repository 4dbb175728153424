#include "cpu_kernels/reference.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numbers>

namespace hetmoe::ref {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      const float v = std::ldexp(static_cast<float>(mant), -24);
      return sign ? -v : v;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));  // NaN
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to ≥ 65520 → inf
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    const float a = std::bit_cast<float>(abs);
    // value / 2^-24, rounded to nearest even by the FPU's default rounding mode
    const float scaled = a * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rest = abs & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t f32_to_bf16(float f) {
  const auto bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN: keep it quiet
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

float mxfp4_scale(uint8_t e) { return std::ldexp(1.0f, static_cast<int>(e) - 128); }

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

void dequantize_row(TensorType type, const uint8_t* src, float* dst, int64_t num_elements) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(num_elements) * sizeof(float));
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < num_elements; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < num_elements; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < num_elements / kQuantBlockElems; ++b) {
        const uint8_t* block = src + b * kQ8_0BlockBytes;
        const float d = f16_to_f32(load_u16(block));
        const auto* q = reinterpret_cast<const int8_t*>(block + 2);
        for (uint32_t j = 0; j < kQuantBlockElems; ++j) dst[b * kQuantBlockElems + j] = d * static_cast<float>(q[j]);
      }
      return;
    case TensorType::kMXFP4:
      for (int64_t b = 0; b < num_elements / kQuantBlockElems; ++b) {
        const uint8_t* block = src + b * kMXFP4BlockBytes;
        const float d = mxfp4_scale(block[0]);
        const uint8_t* qs = block + 1;
        float* out = dst + b * kQuantBlockElems;
        for (int j = 0; j < 16; ++j) {
          out[j] = d * static_cast<float>(kMxfp4Values[qs[j] & 0x0F]);
          out[j + 16] = d * static_cast<float>(kMxfp4Values[qs[j] >> 4]);
        }
      }
      return;
    case TensorType::kMXFP4_R16:
    case TensorType::kQ8_0_R16:
      // Its rows are not contiguous (cpu_kernels/repack.h): no row to dequantize. NaN, so that a misuse shows.
      for (int64_t i = 0; i < num_elements; ++i) dst[i] = std::nanf("");
      return;
  }
}

float dot_row(TensorType type, const uint8_t* row, const float* x, int64_t num_elements) {
  // Dequantize one block at a time into a small buffer, then accumulate in double.
  constexpr int64_t kChunk = 256;  // a multiple of every block size
  float w[kChunk];
  double sum = 0.0;
  const auto& traits = tensor_type_traits(type);
  for (int64_t start = 0; start < num_elements; start += kChunk) {
    const int64_t n = std::min(kChunk, num_elements - start);
    dequantize_row(type, row + start / traits.block_elems * traits.block_bytes, w, n);
    for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(w[k]) * static_cast<double>(x[start + k]);
  }
  return static_cast<float>(sum);
}

void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void softmax(float* x, int64_t n) {
  float max_val = x[0];
  for (int64_t i = 1; i < n; ++i) max_val = std::max(max_val, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu_oai(const float* gate, const float* up, float* out, int64_t n, float alpha, float limit) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = std::min(gate[i], limit);
    const float a = std::clamp(up[i], -limit, limit);
    const float glu = g / (1.0f + std::exp(-alpha * g));
    out[i] = glu * (a + 1.0f);
  }
}

namespace {

float rope_yarn_corr_dim(int32_t num_rot_dims, int32_t original_context, float num_rot, float base) {
  return static_cast<float>(num_rot_dims) *
         std::log(static_cast<float>(original_context) / (num_rot * 2.0f * std::numbers::pi_v<float>)) /
         (2.0f * std::log(base));
}

}  // namespace

void rope_yarn_corr_dims(const RopeYarnParams& p, float* low, float* high) {
  const float start = std::floor(rope_yarn_corr_dim(p.num_rot_dims, p.original_context, p.beta_fast, p.freq_base));
  const float end = std::ceil(rope_yarn_corr_dim(p.num_rot_dims, p.original_context, p.beta_slow, p.freq_base));
  *low = std::max(0.0f, start);
  *high = std::min(static_cast<float>(p.num_rot_dims - 1), end);
}

void rope_yarn_cos_sin(const RopeYarnParams& p, int64_t pos, float* cos_out, float* sin_out) {
  float low = 0, high = 0;
  rope_yarn_corr_dims(p, &low, &high);
  float mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  // θ in double: at position 131,071 an f32 θ (~1.3e5 rad) is off by up to 2^-7 rad, and θ built by repeated f32
  // products drifts further; in double θ and its cos/sin are exact to f32 output precision at any context length.
  const double base = p.freq_base, freq_scale = p.freq_scale, ext_factor = p.ext_factor;
  const double ramp_width = std::max(0.001, static_cast<double>(high) - low);
  for (int32_t i = 0; i < p.num_rot_dims / 2; ++i) {
    const double theta_extrap = static_cast<double>(pos) * std::pow(base, -2.0 * i / p.num_rot_dims);
    const double theta_interp = freq_scale * theta_extrap;
    double theta = theta_interp;
    if (ext_factor != 0.0) {
      const double y = (static_cast<double>(i) - low) / ramp_width;
      const double mix = (1.0 - std::min(1.0, std::max(0.0, y))) * ext_factor;
      theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
    }
    cos_out[i] = static_cast<float>(std::cos(theta) * mscale);
    sin_out[i] = static_cast<float>(std::sin(theta) * mscale);
  }
}

void rope_neox_apply(float* x, int32_t num_rot_dims, const float* cos_tab, const float* sin_tab) {
  const int32_t half = num_rot_dims / 2;
  for (int32_t i = 0; i < half; ++i) {
    const float x0 = x[i];
    const float x1 = x[i + half];
    x[i] = x0 * cos_tab[i] - x1 * sin_tab[i];
    x[i + half] = x0 * sin_tab[i] + x1 * cos_tab[i];
  }
}

}  // namespace hetmoe::ref
