// Scalar reference kernels against hand-computed values and independent double-precision formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numbers>
#include <random>
#include <vector>

#include "cpu_kernels/reference.h"

namespace hetmoe {
namespace {

TEST(ReferenceKernels, F16RoundTripsEveryHalfValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = ref::f16_to_f32(static_cast<uint16_t>(h));
    const bool is_nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0;
    if (is_nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(ref::f32_to_f16(f) & 0x7C00u, 0x7C00u);
    } else {
      ASSERT_EQ(ref::f32_to_f16(f), h) << "half bits " << h;
    }
  }
}

TEST(ReferenceKernels, F16ConversionRoundsToNearestEven) {
  EXPECT_EQ(ref::f32_to_f16(1.0f), 0x3C00);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(ref::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: ties to even (up).
  EXPECT_EQ(ref::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(ref::f32_to_f16(65504.0f), 0x7BFF);    // largest half
  EXPECT_EQ(ref::f32_to_f16(65520.0f), 0x7C00);    // rounds to inf
  EXPECT_EQ(ref::f32_to_f16(-1e9f), 0xFC00);       // -inf
  EXPECT_EQ(ref::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(ref::f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);  // underflows to zero
  EXPECT_EQ(ref::f32_to_f16(-0.0f), 0x8000);
}

TEST(ReferenceKernels, Bf16IsTheHighHalfOfF32) {
  EXPECT_EQ(ref::bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(ref::bf16_to_f32(0xC040), -3.0f);
}

// f32 → bf16 rounds to nearest, ties to even (the bf16 tile products' rounding), keeps NaN a NaN and saturates to inf
// only past the largest bf16.
TEST(ReferenceKernels, Bf16ConversionRoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(ref::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even below
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, even above
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // past the tie
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0xBF807FFFu)), 0xBF80);  // below the tie, negative
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80);  // f32 max rounds up to inf
  EXPECT_EQ(ref::f32_to_bf16(std::bit_cast<float>(0x7F7F7FFFu)), 0x7F7F);  // bf16 max stays
  EXPECT_EQ(ref::f32_to_bf16(-INFINITY), 0xFF80);
  const uint16_t nan = ref::f32_to_bf16(std::bit_cast<float>(0x7F800001u));  // a NaN whose payload is in the low half
  EXPECT_TRUE(std::isnan(ref::bf16_to_f32(nan)));
  for (float x : {0.1f, -3.7f, 1e-20f, 65504.0f})
    EXPECT_LE(std::abs(ref::bf16_to_f32(ref::f32_to_bf16(x)) - x), std::abs(x) * 0x1p-9f) << x;
}

TEST(ReferenceKernels, Mxfp4BlockDequantizesLowNibblesFirstThenHighNibbles) {
  uint8_t block[17];
  block[0] = 128;  // scale 2^0 → values are the doubled E2M1 table
  for (int j = 0; j < 16; ++j) block[1 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  ref::dequantize_row(TensorType::kMXFP4, block, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], ref::kMxfp4Values[j]) << j;
    EXPECT_EQ(out[j + 16], ref::kMxfp4Values[15 - j]) << j;
  }
  block[0] = 127;  // 2^(e-128) = 0.5: true E2M1 values (6.0 for code 7)
  ref::dequantize_row(TensorType::kMXFP4, block, out, 32);
  EXPECT_EQ(out[7], 6.0f);
  EXPECT_EQ(out[16 + 0], -6.0f);  // high nibble of byte 0 is 15 → −12 · 0.5
  EXPECT_EQ(out[16 + 2], -3.0f);  // high nibble of byte 2 is 13 → −6 · 0.5
}

TEST(ReferenceKernels, Q8_0BlockIsScaleTimesInt8) {
  uint8_t block[34];
  const uint16_t d = ref::f32_to_f16(0.25f);
  std::memcpy(block, &d, 2);
  for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  float out[32];
  ref::dequantize_row(TensorType::kQ8_0, block, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.25f * static_cast<float>(j - 16));
}

// dot_row must equal dequantize_row + a double dot product, for every type, on row lengths that are not a multiple
// of its internal 256-element chunk.
TEST(ReferenceKernels, DotRowMatchesDequantizeThenDotOnOddLengths) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> byte(0, 255);
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                          TensorType::kMXFP4}) {
    for (int64_t n : {32, 96, 288, 2880}) {
      std::vector<uint8_t> row(tensor_row_bytes(type, static_cast<uint64_t>(n)));
      for (auto& b : row) b = static_cast<uint8_t>(byte(rng));
      if (type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16) {
        // keep floats finite: random small values
        std::vector<float> vals(static_cast<size_t>(n));
        for (auto& v : vals) v = static_cast<float>(byte(rng) - 128) / 64.0f;
        for (int64_t i = 0; i < n; ++i) {
          if (type == TensorType::kF32) std::memcpy(&row[4 * i], &vals[i], 4);
          const uint16_t h = type == TensorType::kF16 ? ref::f32_to_f16(vals[i])
                                                      : static_cast<uint16_t>(std::bit_cast<uint32_t>(vals[i]) >> 16);
          if (type != TensorType::kF32) std::memcpy(&row[2 * i], &h, 2);
        }
      }
      if (type == TensorType::kQ8_0)
        for (int64_t b = 0; b < n / 32; ++b) {
          const uint16_t d = ref::f32_to_f16(0.01f);
          std::memcpy(&row[b * 34], &d, 2);
        }
      if (type == TensorType::kMXFP4)
        for (int64_t b = 0; b < n / 32; ++b) row[b * 17] = static_cast<uint8_t>(120 + b % 8);
      std::vector<float> x(static_cast<size_t>(n)), w(static_cast<size_t>(n));
      for (auto& v : x) v = static_cast<float>(byte(rng) - 128) / 128.0f;
      ref::dequantize_row(type, row.data(), w.data(), n);
      double expect = 0;
      for (int64_t i = 0; i < n; ++i) expect += static_cast<double>(w[i]) * x[i];
      EXPECT_NEAR(ref::dot_row(type, row.data(), x.data(), n), expect, 1e-5 * (1 + std::abs(expect)))
          << tensor_type_name(static_cast<uint32_t>(type)) << " n=" << n;
    }
  }
}

TEST(ReferenceKernels, RmsNormUnitWeightGivesUnitRms) {
  std::vector<float> x = {1, -2, 3, -4, 5, 0, 7};
  std::vector<float> w(x.size(), 1.0f), out(x.size());
  ref::rms_norm(x.data(), w.data(), out.data(), static_cast<int64_t>(x.size()), 1e-5f);
  double ss = 0;
  for (float v : out) ss += v * v;
  EXPECT_NEAR(ss / static_cast<double>(x.size()), 1.0, 1e-5);
  EXPECT_GT(out[0], 0);
}

TEST(ReferenceKernels, SoftmaxSumsToOneAndSurvivesLargeLogits) {
  std::vector<float> x = {1000, 999, -1000, 998};
  ref::softmax(x.data(), 4);
  EXPECT_NEAR(x[0] + x[1] + x[2] + x[3], 1.0, 1e-6);
  EXPECT_NEAR(x[0] / x[1], std::exp(1.0), 1e-4);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(ReferenceKernels, SwigluOaiClampsGateAboveAndUpBothSidesAndAddsOne) {
  const float gate[] = {0.0f, 1.0f, 10.0f, -3.0f};
  const float up[] = {0.0f, 20.0f, -20.0f, 0.5f};
  float out[4];
  ref::swiglu_oai(gate, up, out, 4);
  const auto expect = [](double g, double a) {
    g = std::min(g, 7.0);
    a = std::clamp(a, -7.0, 7.0);
    return g / (1 + std::exp(-1.702 * g)) * (a + 1);
  };
  EXPECT_FLOAT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], expect(1, 20), 1e-5);   // up clamped to 7 → ×8
  EXPECT_NEAR(out[2], expect(7, -20), 1e-5);  // gate clamped to 7, up to −7 → ×(−6)
  EXPECT_NEAR(out[3], expect(-3, 0.5), 1e-6); // negative gate is not clamped below
}

TEST(ReferenceKernels, YarnCorrectionDimsUseLlamaCppRoundedBounds) {
  ref::RopeYarnParams p;  // gpt-oss-20b: head dim 64, base 150000, orig ctx 4096, betas 32/1
  float low = 0, high = 0;
  ref::rope_yarn_corr_dims(p, &low, &high);
  EXPECT_EQ(low, 8.0f);    // floor(8.09), gpt-oss-spec.md §3
  EXPECT_EQ(high, 18.0f);  // ceil(17.40)
}

/// The spec's YaRN cos/sin of one position in double (gpt-oss-20b's parameters: base 150000, factor 32, corr dims
/// 8..18): cos_out[32], sin_out[32].
void yarn_cos_sin_double(int64_t pos, std::vector<double>& c, std::vector<double>& s) {
  const double m = 1.0 + 0.1 * std::log(32.0);
  c.resize(32);
  s.resize(32);
  for (int i = 0; i < 32; ++i) {
    const double extrap = static_cast<double>(pos) * std::pow(150000.0, -2.0 * i / 64.0);
    const double interp = extrap / 32.0;
    const double ramp = 1.0 - std::clamp((i - 8.0) / (18.0 - 8.0), 0.0, 1.0);
    const double theta = interp * (1 - ramp) + extrap * ramp;
    c[i] = std::cos(theta) * m;
    s[i] = std::sin(theta) * m;
  }
}

// At small and at the largest positions of the 131,072-token context (and one past 2^16, where an f32 θ ~ 6.5e4
// rad carries an absolute error of ~4e-3): every entry within 2 f32 ulp of 1.35 (the magnitude m) of the double
// formula, since θ and cos/sin are computed in double and rounded once. NMSE against double ≤ 1e-13 (an f32 θ at
// 131,071 gave 1.3e-3, a wrong ramp or base gives O(1)).
TEST(ReferenceKernels, YarnCosSinMatchTheSpecFormulaInDoubleUpToTheLongestContext) {
  ref::RopeYarnParams p;
  for (int64_t pos : {int64_t{1234}, int64_t{65537}, int64_t{131071}}) {
    std::vector<float> c(32), s(32);
    ref::rope_yarn_cos_sin(p, pos, c.data(), s.data());
    std::vector<double> wc, ws;
    yarn_cos_sin_double(pos, wc, ws);
    double err = 0.0, norm = 0.0;
    for (int i = 0; i < 32; ++i) {
      EXPECT_NEAR(c[i], wc[i], 2.5e-7) << "pos " << pos << " pair " << i;
      EXPECT_NEAR(s[i], ws[i], 2.5e-7) << "pos " << pos << " pair " << i;
      err += (c[i] - wc[i]) * (c[i] - wc[i]) + (s[i] - ws[i]) * (s[i] - ws[i]);
      norm += wc[i] * wc[i] + ws[i] * ws[i];
    }
    EXPECT_LE(err / norm, 1e-13) << "pos " << pos;
  }
}

TEST(ReferenceKernels, RopeAtPositionZeroOnlyScalesByTheYarnMagnitude) {
  ref::RopeYarnParams p;
  std::vector<float> c(32), s(32), x(64), x0;
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>(i) - 20.0f;
  x0 = x;
  ref::rope_yarn_cos_sin(p, 0, c.data(), s.data());
  ref::rope_neox_apply(x.data(), 64, c.data(), s.data());
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(x[i], x0[i] * 1.3465736f, 1e-5) << i;
}

TEST(ReferenceKernels, RopeNeoxRotatesHalvesNotAdjacentPairs) {
  // one pair with θ = π/2 (no magnitude scaling): (x[i], x[i+d/2]) → (−x[i+d/2], x[i])
  const float c[2] = {0.0f, 1.0f}, s[2] = {1.0f, 0.0f};
  float x[4] = {1, 2, 3, 4};
  ref::rope_neox_apply(x, 4, c, s);
  EXPECT_FLOAT_EQ(x[0], -3);
  EXPECT_FLOAT_EQ(x[2], 1);
  EXPECT_FLOAT_EQ(x[1], 2);
  EXPECT_FLOAT_EQ(x[3], 4);
}

}  // namespace
}  // namespace hetmoe
