// CPU kernel variants (cpu_kernels/kernels.h): every variant this CPU supports against the scalar variant, and the
// scalar variant against the reference oracle (ref::dot_row, f32 activations, double accumulation). One error metric,
// NMSE = mse(a, b) / mse(a, 0) with a the reference side, and a tolerance per comparison with the reason beside it.
// Shapes stress the tiling edges: row counts that are not a multiple of the row unroll (1, 3, 5, 37; row_begin > 0),
// token counts that are not a multiple of the token tile (1, 3, 7, 33), and one-, three- and 90-block rows.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/reference.h"
#include "tests/logit_metrics.h"

namespace hetmoe::cpu {
namespace {

// SIMD vs scalar variant: the same integer block dots, the same float scale products; only the order in which the
// float products are summed differs (per-lane accumulators, tree reduction). f32 summation error is ~1e-7 of the sum
// of |terms|, so NMSE ~1e-13 (observed: ≤ 1.1e-13 quantized, ≤ 3e-12 float weights); 1e-10 still catches any wrong
// element (one wrong code in a 2880-long row moves NMSE by ~1e-4). Outputs are pooled over the four row ranges
// (46 rows): a single output can sit near zero by cancellation (1 row × 32 columns gave 1.2e-9 alone), which says
// nothing about the kernel.
constexpr double kSimdVsScalarNmse = 1e-10;
// Float weights, scalar variant (f32 sums) vs ref::dot_row (double sums): f32 rounding only, ≤ 1e-12 observed.
constexpr double kFloatVsRefNmse = 1e-10;
// Quantized weights, scalar variant (int8 activations) vs ref::dot_row (f32 activations): the activation
// quantization error. Per value it is uniform in ±d/2 with d = amax/127; for Gaussian blocks of 32, amax ≈ 2.0–2.5σ,
// so the relative error variance is (amax/σ/127)² / 12 ≈ 2–3e-5, and the dot product with independent weights
// inherits it: NMSE ≈ 2–3e-5 predicted; measured 3.3e-5 (MXFP4) and 2.2e-5 (Q8_0) over all shapes below, worst single
// shape 4.0e-5. 1e-4 = 2.5× the worst; a layout error (nibble order, scale) gives NMSE ~1.
constexpr double kQuantVsRefNmse = 1e-4;

using test::nmse;

enum class WType { kMxfp4, kQ8_0, kF32, kF16, kBF16 };

const char* wtype_name(WType t) {
  switch (t) {
    case WType::kMxfp4: return "mxfp4";
    case WType::kQ8_0: return "q8_0";
    case WType::kF32: return "f32";
    case WType::kF16: return "f16";
    case WType::kBF16: return "bf16";
  }
  return "?";
}

TensorType tensor_type(WType t) {
  switch (t) {
    case WType::kMxfp4: return TensorType::kMXFP4;
    case WType::kQ8_0: return TensorType::kQ8_0;
    case WType::kF32: return TensorType::kF32;
    case WType::kF16: return TensorType::kF16;
    case WType::kBF16: return TensorType::kBF16;
  }
  return TensorType::kF32;
}

bool is_quantized(WType t) { return t == WType::kMxfp4 || t == WType::kQ8_0; }

constexpr WType kAllTypes[] = {WType::kMxfp4, WType::kQ8_0, WType::kF32, WType::kF16, WType::kBF16};

uint16_t f32_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);  // round to nearest even
}

/// A random weight matrix [num_rows][num_cols] of `type`, rows contiguous (row_bytes = tensor_row_bytes).
/// MXFP4: exponents around 2^0 (e in [122, 132]) with every 37th block at e = 0 or 1 (subnormal scales), all 16 codes.
/// Q8_0: d in [0.002, 0.02] (as f16), q in [-128, 127] (ggml files stay in ±127; -128 checks the sign tricks).
std::vector<uint8_t> random_weights(WType type, int64_t num_rows, int64_t num_cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(num_cols));
  std::vector<uint8_t> w(row_bytes * static_cast<uint64_t>(num_rows));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  switch (type) {
    case WType::kMxfp4: {
      std::uniform_int_distribution<int> e_dist(122, 132), byte(0, 255);
      for (size_t b = 0; b < w.size() / kMXFP4BlockBytes; ++b) {
        uint8_t* block = w.data() + b * kMXFP4BlockBytes;
        block[0] = static_cast<uint8_t>(b % 37 == 5 ? b % 2 : e_dist(rng));
        for (int j = 1; j < 17; ++j) block[j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    }
    case WType::kQ8_0: {
      std::uniform_real_distribution<float> d_dist(0.002f, 0.02f);
      std::uniform_int_distribution<int> q_dist(-128, 127);
      for (size_t b = 0; b < w.size() / kQ8_0BlockBytes; ++b) {
        uint8_t* block = w.data() + b * kQ8_0BlockBytes;
        const uint16_t d = ref::f32_to_f16(d_dist(rng));
        std::memcpy(block, &d, 2);
        for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q_dist(rng)));
      }
      break;
    }
    case WType::kF32:
      for (size_t i = 0; i < w.size() / 4; ++i) {
        const float v = normal(rng);
        std::memcpy(w.data() + 4 * i, &v, 4);
      }
      break;
    case WType::kF16:
    case WType::kBF16:
      for (size_t i = 0; i < w.size() / 2; ++i) {
        const float v = normal(rng);
        const uint16_t h = type == WType::kF16 ? ref::f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(w.data() + 2 * i, &h, 2);
      }
      break;
  }
  return w;
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

/// The GEMV of `type` from `table` over rows [row_begin, row_end); quantized types take xq, float types x.
std::vector<float> run_gemv(const KernelTable& table, WType type, const std::vector<uint8_t>& w, uint64_t row_bytes,
                            int64_t row_begin, int64_t row_end, const std::vector<float>& x,
                            const std::vector<ActQ8Block>& xq, int64_t num_cols) {
  std::vector<float> y(static_cast<size_t>(row_end - row_begin), std::nanf(""));
  switch (type) {
    case WType::kMxfp4:
      table.gemv_mxfp4(w.data(), row_bytes, row_begin, row_end, xq.data(), num_cols, y.data());
      break;
    case WType::kQ8_0:
      table.gemv_q8_0(w.data(), row_bytes, row_begin, row_end, xq.data(), num_cols, y.data());
      break;
    case WType::kF32:
      table.gemv_f32(w.data(), row_bytes, row_begin, row_end, x.data(), num_cols, y.data());
      break;
    case WType::kF16:
      table.gemv_f16(w.data(), row_bytes, row_begin, row_end, x.data(), num_cols, y.data());
      break;
    case WType::kBF16:
      table.gemv_bf16(w.data(), row_bytes, row_begin, row_end, x.data(), num_cols, y.data());
      break;
  }
  return y;
}

/// The GEMM of `type` into y[num_tokens][y_stride] (pre-filled with NaN so that a missed or stray write shows).
std::vector<float> run_gemm(const KernelTable& table, WType type, const std::vector<uint8_t>& w, uint64_t row_bytes,
                            int64_t row_begin, int64_t row_end, const std::vector<float>& x,
                            const std::vector<ActQ8Block>& xq, int64_t num_tokens, int64_t num_cols,
                            int64_t y_stride) {
  std::vector<float> y(static_cast<size_t>(num_tokens * y_stride), std::nanf(""));
  switch (type) {
    case WType::kMxfp4:
      table.gemm_mxfp4(w.data(), row_bytes, row_begin, row_end, xq.data(), num_tokens, num_cols, y.data(), y_stride);
      break;
    case WType::kQ8_0:
      table.gemm_q8_0(w.data(), row_bytes, row_begin, row_end, xq.data(), num_tokens, num_cols, y.data(), y_stride);
      break;
    case WType::kF32:
      table.gemm_f32(w.data(), row_bytes, row_begin, row_end, x.data(), num_tokens, num_cols, y.data(), y_stride);
      break;
    case WType::kF16:
      table.gemm_f16(w.data(), row_bytes, row_begin, row_end, x.data(), num_tokens, num_cols, y.data(), y_stride);
      break;
    case WType::kBF16:
      table.gemm_bf16(w.data(), row_bytes, row_begin, row_end, x.data(), num_tokens, num_cols, y.data(), y_stride);
      break;
  }
  return y;
}

struct RowRange {
  int64_t begin, end;
};
// 1, 3, 5 and 37 rows; all but the first start past row 0. The matrices have kNumRows rows.
constexpr RowRange kRowRanges[] = {{0, 1}, {2, 5}, {1, 6}, {3, 40}};
constexpr int64_t kNumRows = 41;
// 4096: Q8_0 rows over 4 KiB, which the GEMV takes in groups of 8 (kernels_simd.h: gemv_quant).
constexpr int64_t kNumCols[] = {32, 96, 2880, 4096};
// 4 and 5 straddle the row tiles of 4 tokens and the wide tile of 5 to 8 (gemm_quant_wide); 8 and 9 straddle
// kGemmMatchesGemvBelowTokens; 16 is one whole token-lane tile, 33 two or four and a 1-token tail.
constexpr int64_t kNumTokens[] = {1, 4, 5, 8, 9, 16, 33};

class CpuKernelsTest : public ::testing::TestWithParam<Isa> {
 protected:
  const KernelTable& table() const { return kernel_table(GetParam()); }
  const KernelTable& scalar() const { return kernel_table(Isa::kScalar); }
};

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

INSTANTIATE_TEST_SUITE_P(Supported, CpuKernelsTest, ::testing::ValuesIn(supported_isas()), isa_param_name);

TEST_P(CpuKernelsTest, TableIsTheRequestedVariant) { EXPECT_EQ(table().isa, GetParam()); }

TEST_P(CpuKernelsTest, QuantizeActQ8MatchesScalarRecomputation) {
  constexpr int64_t kN = 2880;
  std::vector<float> x = random_floats(kN, 11, 3.0f);
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);            // an all-zero block: d = 0, q = 0
  for (int j = 0; j < 32; ++j) x[96 + j] = 0.25f * (j - 16);   // exact multiples: x·(1/d) near integers and halves
  x[200] = -1e4f;                                             // one large value dominating its block
  std::vector<ActQ8Block> got(kN / 32);
  table().quantize_act_q8(x.data(), got.data(), kN);
  for (int64_t b = 0; b < kN / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    ASSERT_EQ(got[b].d, d) << "block " << b;
    for (int j = 0; j < 32; ++j) {
      const float v = x[b * 32 + j];
      ASSERT_EQ(got[b].q[j], static_cast<int8_t>(std::nearbyint(v * inv_d))) << "block " << b << " j " << j;
      ASSERT_LE(std::fabs(got[b].d * got[b].q[j] - v), 0.5f * d * (1.0f + 1e-5f) + 1e-30f);
    }
  }
}

// Every MXFP4 exponent byte, 0 (the subnormal scale 2^-128) to 255 (2^127), at every block position of a 4-block step:
// row r has block i's exponent (r + 64 i) mod 256 and codes only in block r mod 4, so its value is that block's
// (dot · d_x) · 2^(e - 128), summed over the SIMD lanes. Divided by 2^(e - 128) it must match the scalar variant to
// float rounding of the lanes' partial sums, which may cancel (1.2e-5 relative seen; bar 1e-3), while a wrong scale is
// off by a factor ≥ 2. Activations are scaled by 2^30 for e < 128 and 2^-30 from 128
// on, so every value stays a normal float.
TEST_P(CpuKernelsTest, Mxfp4EveryExponentAtEveryBlockPositionMatchesScalar) {
  constexpr int64_t kRows = 256, kCols = 128, kBlocks = kCols / 32;
  const uint64_t row_bytes = tensor_row_bytes(hetmoe::TensorType::kMXFP4, kCols);
  std::vector<uint8_t> w(row_bytes * kRows, 0);
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> byte(0, 255);
  const auto exponent = [](int64_t r) { return static_cast<int>(r % 256); };  // of the row's block with codes
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t i = 0; i < kBlocks; ++i) {
      uint8_t* block = w.data() + r * row_bytes + i * kMXFP4BlockBytes;
      const int64_t k = r % kBlocks;  // the block with codes; its exponent is r (i = k: (r + 64 k) - 64 k)
      block[0] = static_cast<uint8_t>((r + 64 * (i - k) + 256) % 256);
      if (i == k)
        for (int j = 1; j < 17; ++j) block[j] = static_cast<uint8_t>(byte(rng));
    }
  for (const int64_t num_tokens : {int64_t{1}, int64_t{8}}) {
    for (const bool high : {false, true}) {
      auto x = random_floats(num_tokens * kCols, 78);
      for (float& v : x) v = std::ldexp(v, high ? -30 : 30);
      std::vector<ActQ8Block> xq(static_cast<size_t>(num_tokens * kBlocks));
      scalar().quantize_act_q8(x.data(), xq.data(), num_tokens * kCols);
      std::vector<float> want(static_cast<size_t>(num_tokens * kRows)), got(want.size());
      if (num_tokens == 1) {
        scalar().gemv_mxfp4(w.data(), row_bytes, 0, kRows, xq.data(), kCols, want.data());
        table().gemv_mxfp4(w.data(), row_bytes, 0, kRows, xq.data(), kCols, got.data());
      } else {
        scalar().gemm_mxfp4(w.data(), row_bytes, 0, kRows, xq.data(), num_tokens, kCols, want.data(), kRows);
        table().gemm_mxfp4(w.data(), row_bytes, 0, kRows, xq.data(), num_tokens, kCols, got.data(), kRows);
      }
      for (int64_t t = 0; t < num_tokens; ++t)
        for (int64_t r = high ? 128 : 0; r < (high ? 256 : 128); ++r) {
          const double s = std::ldexp(1.0, exponent(r) - 128);
          const size_t k = static_cast<size_t>(t * kRows + r);
          const double a = want[k] / s, b = got[k] / s;
          ASSERT_TRUE(std::isfinite(a) && std::isfinite(b)) << "row " << r;
          ASSERT_NEAR(a, b, 1e-3 * (1.0 + std::fabs(a))) << num_tokens << " tokens, token " << t << ", e = " << r;
        }
    }
  }
}

TEST_P(CpuKernelsTest, GemvMatchesScalarVariant) {
  for (WType type : kAllTypes) {
    double worst = 0.0;
    for (int64_t num_cols : kNumCols) {
      const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(num_cols));
      const auto w = random_weights(type, kNumRows, num_cols, 100 + static_cast<uint32_t>(num_cols));
      const auto x = random_floats(num_cols, 7);
      std::vector<ActQ8Block> xq(static_cast<size_t>(num_cols / 32));
      scalar().quantize_act_q8(x.data(), xq.data(), num_cols);
      std::vector<float> want, got;  // the four row ranges, pooled (see kSimdVsScalarNmse)
      for (const RowRange rr : kRowRanges) {
        const auto w_rows = run_gemv(scalar(), type, w, row_bytes, rr.begin, rr.end, x, xq, num_cols);
        const auto g_rows = run_gemv(table(), type, w, row_bytes, rr.begin, rr.end, x, xq, num_cols);
        want.insert(want.end(), w_rows.begin(), w_rows.end());
        got.insert(got.end(), g_rows.begin(), g_rows.end());
      }
      const double e = nmse(want, got);
      worst = std::max(worst, e);
      EXPECT_LE(e, kSimdVsScalarNmse) << wtype_name(type) << " cols " << num_cols;
    }
    std::printf("[ NMSE     ] %s gemv_%s vs scalar: max %.3g\n", isa_name(GetParam()), wtype_name(type), worst);
  }
}

TEST_P(CpuKernelsTest, GemmMatchesScalarVariantAndItsOwnGemv) {
  for (WType type : kAllTypes) {
    double worst = 0.0;
    for (int64_t num_cols : kNumCols) {
      const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(num_cols));
      const auto w = random_weights(type, kNumRows, num_cols, 200 + static_cast<uint32_t>(num_cols));
      for (int64_t num_tokens : kNumTokens) {
        const auto x = random_floats(num_tokens * num_cols, 300 + static_cast<uint32_t>(num_tokens));
        std::vector<ActQ8Block> xq(static_cast<size_t>(num_tokens * num_cols / 32));
        scalar().quantize_act_q8(x.data(), xq.data(), num_tokens * num_cols);
        std::vector<float> want_rows, got_rows;  // the four row ranges, pooled (see kSimdVsScalarNmse)
        for (const RowRange rr : kRowRanges) {
          const int64_t num_rows = rr.end - rr.begin;
          const int64_t y_stride = num_rows + 3;  // padding that must stay untouched
          const auto want =
              run_gemm(scalar(), type, w, row_bytes, rr.begin, rr.end, x, xq, num_tokens, num_cols, y_stride);
          const auto got =
              run_gemm(table(), type, w, row_bytes, rr.begin, rr.end, x, xq, num_tokens, num_cols, y_stride);
          for (int64_t t = 0; t < num_tokens; ++t) {
            for (int64_t i = 0; i < y_stride; ++i) {
              const float g = got[static_cast<size_t>(t * y_stride + i)];
              if (i >= num_rows) {
                ASSERT_TRUE(std::isnan(g)) << "write into the y_stride padding, token " << t << " col " << i;
                continue;
              }
              want_rows.push_back(want[static_cast<size_t>(t * y_stride + i)]);
              got_rows.push_back(g);
            }
          }
          // Below kGemmMatchesGemvBelowTokens, token t of the GEMM must be exactly the GEMV of x_t (same block
          // dots, same per-lane sums and reduction); from there on only up to the summation order.
          std::vector<float> gemv_rows, gemm_rows;
          for (int64_t t = 0; t < num_tokens; t += 2) {
            const std::vector<float> xt(x.begin() + t * num_cols, x.begin() + (t + 1) * num_cols);
            const std::vector<ActQ8Block> xqt(xq.begin() + t * num_cols / 32, xq.begin() + (t + 1) * num_cols / 32);
            const auto gemv = run_gemv(table(), type, w, row_bytes, rr.begin, rr.end, xt, xqt, num_cols);
            for (int64_t i = 0; i < num_rows; ++i) {
              const float g = got[static_cast<size_t>(t * y_stride + i)];
              if (num_tokens < kGemmMatchesGemvBelowTokens) {
                ASSERT_EQ(gemv[i], g) << wtype_name(type) << " cols " << num_cols << " token " << t << " row "
                                      << rr.begin + i;
              }
              gemv_rows.push_back(gemv[i]);
              gemm_rows.push_back(g);
            }
          }
          EXPECT_LE(nmse(gemv_rows, gemm_rows), kSimdVsScalarNmse)
              << "gemm vs gemv " << wtype_name(type) << " cols " << num_cols << " tokens " << num_tokens;
        }
        const double e = nmse(want_rows, got_rows);
        worst = std::max(worst, e);
        EXPECT_LE(e, kSimdVsScalarNmse) << wtype_name(type) << " cols " << num_cols << " tokens " << num_tokens;
      }
    }
    std::printf("[ NMSE     ] %s gemm_%s vs scalar: max %.3g\n", isa_name(GetParam()), wtype_name(type), worst);
  }
}

// Long prompts: the GEMMs process tokens in chunks whose activations fit in L2 (160 tokens of 2880 quantized values,
// 44 of f32); 333 tokens cross several chunk boundaries and end in a partial token tile.
TEST_P(CpuKernelsTest, GemmOverManyTokensMatchesScalarVariant) {
  // 1000 tokens: several of the GEMM token chunks (about 160 tokens of 2880 quantized values each) and a tail.
  constexpr int64_t kNumCols = 2880, kTokens = 1000;
  for (WType type : kAllTypes) {
    const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(kNumCols));
    const auto w = random_weights(type, 8, kNumCols, 500);
    const auto x = random_floats(kTokens * kNumCols, 501);
    std::vector<ActQ8Block> xq(static_cast<size_t>(kTokens * kNumCols / 32));
    scalar().quantize_act_q8(x.data(), xq.data(), kTokens * kNumCols);
    const auto want = run_gemm(scalar(), type, w, row_bytes, 1, 6, x, xq, kTokens, kNumCols, 5);
    const auto got = run_gemm(table(), type, w, row_bytes, 1, 6, x, xq, kTokens, kNumCols, 5);
    EXPECT_LE(nmse(want, got), kSimdVsScalarNmse) << wtype_name(type);
  }
}

// The largest integer block sums: Q8_0 codes -128 and 127 (|w| = 128 overflows a signed byte once negated, and
// 2 · 128 · 127 nearly fills an int16 pair) and MXFP4 codes ±12 (index 7 and 15) against activations of ±127, with
// signs aligned so that the block dots reach their extremes; the row-tile and token-lane GEMMs and the GEMV must
// agree with the scalar variant. A saturating or overflowing step would change whole blocks (NMSE ~1).
TEST_P(CpuKernelsTest, GemmWithExtremeCodesMatchesScalarVariant) {
  constexpr int64_t kNumCols = 96, kRows = 11;
  for (WType type : {WType::kMxfp4, WType::kQ8_0}) {
    const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(kNumCols));
    std::vector<uint8_t> w(row_bytes * kRows);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t b = 0; b < kNumCols / 32; ++b) {
        if (type == WType::kMxfp4) {
          uint8_t* block = w.data() + r * row_bytes + b * kMXFP4BlockBytes;
          block[0] = 127;
          // Row parity picks +12 or -12 everywhere; odd blocks mix the two halves.
          const uint8_t lo = r % 2 == 0 ? 7 : 15, hi = b % 2 == 0 ? lo : static_cast<uint8_t>(lo ^ 8);
          for (int j = 0; j < 16; ++j) block[1 + j] = static_cast<uint8_t>(lo | hi << 4);
        } else {
          uint8_t* block = w.data() + r * row_bytes + b * kQ8_0BlockBytes;
          const uint16_t d = ref::f32_to_f16(0.01f);
          std::memcpy(block, &d, 2);
          for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(r % 2 == 0 ? -128 : 127);
        }
      }
    }
    for (int64_t num_tokens : {1, 7, 16, 33}) {
      std::vector<float> x(static_cast<size_t>(num_tokens * kNumCols));
      for (size_t i = 0; i < x.size(); ++i) x[i] = (i / kNumCols) % 2 == 0 ? 1.0f : -1.0f;  // ±127 after quantizing
      std::vector<ActQ8Block> xq(x.size() / 32);
      scalar().quantize_act_q8(x.data(), xq.data(), static_cast<int64_t>(x.size()));
      const auto want = run_gemm(scalar(), type, w, row_bytes, 0, kRows, x, xq, num_tokens, kNumCols, kRows);
      const auto got = run_gemm(table(), type, w, row_bytes, 0, kRows, x, xq, num_tokens, kNumCols, kRows);
      EXPECT_LE(nmse(want, got), kSimdVsScalarNmse) << wtype_name(type) << " tokens " << num_tokens;
    }
  }
}

TEST_P(CpuKernelsTest, AttentionHelpersMatchDoubleSums) {
  for (int64_t n : {1, 17, 64, 100}) {
    const auto q = random_floats(n, 21);
    const auto kf = random_floats(n, 22);
    const auto out0 = random_floats(n, 23);
    std::vector<uint16_t> k16(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) k16[i] = ref::f32_to_f16(kf[i]);
    double dot16 = 0.0, dot32 = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      dot16 += static_cast<double>(q[i]) * ref::f16_to_f32(k16[i]);
      dot32 += static_cast<double>(q[i]) * kf[i];
    }
    // f32 sums of n ≤ 100 products of unit-variance values: absolute error ≤ n · 2^-24 · Σ|q·k| ≈ 1e-4 at worst.
    const double tol = 1e-5 * n;
    EXPECT_NEAR(table().dot_f32_f16(q.data(), k16.data(), n), dot16, tol) << n;
    EXPECT_NEAR(table().dot_f32(q.data(), kf.data(), n), dot32, tol) << n;

    const float a = 0.37f;
    std::vector<float> got16 = out0, got32 = out0, want16(out0.size()), want32(out0.size());
    table().axpy_f16(a, k16.data(), got16.data(), n);
    table().axpy_f32(a, kf.data(), got32.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      want16[i] = static_cast<float>(out0[i] + static_cast<double>(a) * ref::f16_to_f32(k16[i]));
      want32[i] = static_cast<float>(out0[i] + static_cast<double>(a) * kf[i]);
    }
    // One multiply-add per element, fused or not: ≤ 1 ulp apart → NMSE ~1e-15.
    EXPECT_LE(nmse(want16, got16), 1e-12) << n;
    EXPECT_LE(nmse(want32, got32), 1e-12) << n;
  }
}

// The scalar variant against the oracle: proves the shared integer math (block layouts, nibble order, scales) right.
// Group attention over a run of KV slots laid out like the cache (stride = kv_dim, the head's row inside it), on odd
// shapes: 1..8 query heads per KV head, head sizes 32/64/72 (72: a tail past the vector width), 1..200 keys.
TEST_P(CpuKernelsTest, GroupAttentionMatchesScalarVariant) {
  for (int64_t group : {1, 3, 8}) {
    for (int64_t head_dim : {32, 64, 72}) {
      for (int64_t num_keys : {1, 7, 200}) {
        const int64_t kv_heads = 2, kv_dim = kv_heads * head_dim;
        const auto q = random_floats(group * head_dim, 31);
        const auto kv = random_floats(num_keys * kv_dim, 32);
        std::vector<uint16_t> kv16(kv.size());
        for (size_t i = 0; i < kv.size(); ++i) kv16[i] = ref::f32_to_f16(kv[i]);
        const auto p = random_floats(group * num_keys, 33);
        for (bool half : {true, false}) {
          // The second KV head's rows: offset head_dim elements into each slot.
          const auto* base = half ? reinterpret_cast<const uint8_t*>(kv16.data() + head_dim)
                                  : reinterpret_cast<const uint8_t*>(kv.data() + head_dim);
          const int64_t stride = kv_dim * (half ? 2 : 4);
          std::vector<float> want_s(group * num_keys), got_s(group * num_keys);
          (half ? scalar().attn_scores_f16 : scalar().attn_scores_f32)(q.data(), group, base, stride, num_keys,
                                                                       head_dim, 0.125f, want_s.data(), num_keys);
          (half ? table().attn_scores_f16 : table().attn_scores_f32)(q.data(), group, base, stride, num_keys,
                                                                     head_dim, 0.125f, got_s.data(), num_keys);
          EXPECT_LE(nmse(want_s, got_s), kSimdVsScalarNmse) << group << " " << head_dim << " " << num_keys;
          std::vector<float> want_o(group * head_dim, 0.5f), got_o(group * head_dim, 0.5f);
          (half ? scalar().attn_values_f16 : scalar().attn_values_f32)(p.data(), num_keys, group, base, stride,
                                                                       num_keys, head_dim, want_o.data());
          (half ? table().attn_values_f16 : table().attn_values_f32)(p.data(), num_keys, group, base, stride,
                                                                     num_keys, head_dim, got_o.data());
          EXPECT_LE(nmse(want_o, got_o), kSimdVsScalarNmse) << group << " " << head_dim << " " << num_keys;
        }
      }
    }
  }
}

// Softmax with a sink on lengths around the vector width (1, 15, 17, 300, 4096), with a sink that dominates and one
// that does not: against a double-precision computation. f32 exp (xsimd or libm) is within a few ulp, so the NMSE of
// the probabilities is ~1e-14; 1e-10 leaves room for the summation order.
TEST_P(CpuKernelsTest, SoftmaxWithSinkMatchesDouble) {
  for (int64_t n : {1, 15, 17, 300, 4096}) {
    for (float sink : {-2.0f, 8.0f}) {
      auto s = random_floats(n, 41, 3.0f);
      double m = sink;
      for (float x : s) m = std::max(m, static_cast<double>(x));
      double z = std::exp(sink - m);
      for (float x : s) z += std::exp(x - m);
      std::vector<float> want(s.size());
      for (size_t j = 0; j < s.size(); ++j) want[j] = static_cast<float>(std::exp(s[j] - m) / z);
      table().softmax_with_sink(s.data(), n, sink);
      EXPECT_LE(nmse(want, s), 1e-10) << n << " " << sink;
      double total = std::exp(sink - m) / z;
      for (float p : s) total += p;
      EXPECT_NEAR(total, 1.0, 1e-5) << n;  // with the sink's share, the probabilities sum to 1
    }
  }
}

// SwiGLU-OAI at every ISA against ref::swiglu_oai on lengths around the vector width (0, 1, 15, 17, 300, 2881) and
// values across both clamps (|x| up to 12 against limit 7), in place (out = gate, as the runtime calls it). The SIMD
// exp is a few ulp from libm's expf, so the NMSE is ~1e-14; 1e-12 leaves room. Then the edges: a NaN gate or up stays
// NaN (x86 min/max would return the limit if the data were their first operand), a gate of −1000 gives −0 (exp
// overflows to inf), +inf and −inf inputs give what the reference gives (a −inf gate: NaN).
TEST_P(CpuKernelsTest, SwigluOaiMatchesReferenceOnOddLengthsAndEdges) {
  for (int64_t n : {0, 1, 15, 17, 300, 2881}) {
    auto gate = random_floats(n, 61, 12.0f);
    const auto up = random_floats(n, 62, 12.0f);
    std::vector<float> want(static_cast<size_t>(n));
    ref::swiglu_oai(gate.data(), up.data(), want.data(), n);
    table().swiglu_oai(gate.data(), up.data(), gate.data(), n, ref::kSwigluAlpha, ref::kSwigluLimit);
    if (n > 0) {
      EXPECT_LE(nmse(want, gate), 1e-12) << n;
    }
  }
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // 32 values (two AVX-512 vectors, four AVX2 ones): edges in the first vector, ordinary values elsewhere.
  std::vector<float> gate(32, 0.5f), up(32, -0.25f);
  gate[0] = nan;
  up[1] = nan;
  gate[2] = -1000.0f;
  gate[3] = inf, up[3] = inf;
  gate[4] = -inf, up[4] = -inf;
  gate[5] = 7.5f, up[5] = -7.5f;
  std::vector<float> want(32), got(32);
  ref::swiglu_oai(gate.data(), up.data(), want.data(), 32);
  table().swiglu_oai(gate.data(), up.data(), got.data(), 32, ref::kSwigluAlpha, ref::kSwigluLimit);
  EXPECT_TRUE(std::isnan(want[0]) && std::isnan(want[1]));
  EXPECT_TRUE(std::isnan(got[0])) << got[0];
  EXPECT_TRUE(std::isnan(got[1])) << got[1];
  for (size_t i = 2; i < 32; ++i) {
    if (std::isnan(want[i]))  // a −inf gate: −inf / (1 + exp(+inf)) is NaN in the reference too
      EXPECT_TRUE(std::isnan(got[i])) << i << " " << got[i];
    else
      EXPECT_NEAR(got[i], want[i], 1e-5f * std::max(1.0f, std::fabs(want[i]))) << i;
  }
  EXPECT_TRUE(std::signbit(got[2]) && got[2] == 0.0f) << got[2];
}

// NeoX RoPE at every ISA against ref::rope_neox_apply: rotary dims 2, 34, 64 (gpt-oss), 130 (halves below, at and
// around the vector width), angles across the circle. The SIMD variant may contract the products into FMAs: each
// value within an ulp or so, NMSE ≤ 1e-12.
TEST_P(CpuKernelsTest, RopeNeoxMatchesReferenceOnOddDims) {
  for (int32_t d : {2, 34, 64, 130}) {
    const auto x = random_floats(d, 71, 3.0f);
    std::vector<float> cos_tab(static_cast<size_t>(d / 2)), sin_tab(cos_tab.size());
    for (int32_t i = 0; i < d / 2; ++i) {
      cos_tab[static_cast<size_t>(i)] = std::cos(0.37f * static_cast<float>(i) + 0.1f);
      sin_tab[static_cast<size_t>(i)] = std::sin(0.37f * static_cast<float>(i) + 0.1f);
    }
    auto want = x, got = x;
    ref::rope_neox_apply(want.data(), d, cos_tab.data(), sin_tab.data());
    table().rope_neox(got.data(), d, cos_tab.data(), sin_tab.data());
    EXPECT_LE(nmse(want, got), 1e-12) << d;
    EXPECT_GT(nmse(x, got), 1e-3) << d;  // it rotated
  }
}

// The AVX-VNNI build of the AVX2 source (vpdpbusd instead of maddubs + madd) sums the same int8 products exactly, so
// its quantized GEMV and GEMM give the AVX2 variant's bits: every row tile, the wide tile (5–8 tokens), the token
// lanes (9 and more, partial tiles) and the odd column counts. A wrong MXFP4 offset or lane order fails here.
TEST(CpuKernelsAvx2Vnni, QuantizedGemvAndGemmGiveTheAvx2VariantsBits) {
  const auto supported = supported_isas();
  if (std::find(supported.begin(), supported.end(), Isa::kAvx2Vnni) == supported.end())
    GTEST_SKIP() << "this CPU has no AVX-VNNI";
  const KernelTable& avx2 = kernel_table(Isa::kAvx2);
  const KernelTable& vnni = kernel_table(Isa::kAvx2Vnni);
  for (WType type : {WType::kMxfp4, WType::kQ8_0}) {
    for (int64_t num_cols : kNumCols) {
      const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(num_cols));
      const auto w = random_weights(type, kNumRows, num_cols, 700 + static_cast<uint32_t>(num_cols));
      for (int64_t num_tokens : {1, 2, 3, 5, 8, 9, 15, 16, 17, 33}) {
        const auto x = random_floats(num_tokens * num_cols, 800 + static_cast<uint32_t>(num_tokens));
        std::vector<ActQ8Block> xq(static_cast<size_t>(num_tokens * num_cols / 32));
        kernel_table(Isa::kScalar).quantize_act_q8(x.data(), xq.data(), num_tokens * num_cols);
        for (const RowRange rr : kRowRanges) {
          const int64_t y_stride = rr.end - rr.begin + 3;
          const auto want = run_gemm(avx2, type, w, row_bytes, rr.begin, rr.end, x, xq, num_tokens, num_cols, y_stride);
          const auto got = run_gemm(vnni, type, w, row_bytes, rr.begin, rr.end, x, xq, num_tokens, num_cols, y_stride);
          ASSERT_EQ(want.size(), got.size());
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_EQ(std::bit_cast<uint32_t>(want[i]), std::bit_cast<uint32_t>(got[i]))
                << wtype_name(type) << " cols " << num_cols << " tokens " << num_tokens << " rows " << rr.begin
                << ".." << rr.end << " value " << i;
          if (num_tokens == 1) {
            const auto gemv_want = run_gemv(avx2, type, w, row_bytes, rr.begin, rr.end, x, xq, num_cols);
            const auto gemv_got = run_gemv(vnni, type, w, row_bytes, rr.begin, rr.end, x, xq, num_cols);
            for (size_t i = 0; i < gemv_want.size(); ++i)
              ASSERT_EQ(std::bit_cast<uint32_t>(gemv_want[i]), std::bit_cast<uint32_t>(gemv_got[i]))
                  << wtype_name(type) << " gemv cols " << num_cols << " row " << rr.begin + static_cast<int64_t>(i);
          }
        }
      }
    }
  }
}

TEST(CpuKernelsScalar, GemvMatchesReferenceDotRow) {
  const KernelTable& scalar = kernel_table(Isa::kScalar);
  for (WType type : kAllTypes) {
    std::vector<float> all_want, all_got;
    double worst = 0.0;
    for (int64_t num_cols : kNumCols) {
      const uint64_t row_bytes = tensor_row_bytes(tensor_type(type), static_cast<uint64_t>(num_cols));
      const auto w = random_weights(type, kNumRows, num_cols, 400 + static_cast<uint32_t>(num_cols));
      const auto x = random_floats(num_cols, 8);
      std::vector<ActQ8Block> xq(static_cast<size_t>(num_cols / 32));
      scalar.quantize_act_q8(x.data(), xq.data(), num_cols);
      const auto got = run_gemv(scalar, type, w, row_bytes, 0, kNumRows, x, xq, num_cols);
      std::vector<float> want(static_cast<size_t>(kNumRows));
      for (int64_t r = 0; r < kNumRows; ++r)
        want[r] = ref::dot_row(tensor_type(type), w.data() + r * row_bytes, x.data(), num_cols);
      const double e = nmse(want, got);
      worst = std::max(worst, e);
      EXPECT_LE(e, is_quantized(type) ? kQuantVsRefNmse : kFloatVsRefNmse) << wtype_name(type) << " cols " << num_cols;
      all_want.insert(all_want.end(), want.begin(), want.end());
      all_got.insert(all_got.end(), got.begin(), got.end());
    }
    std::printf("[ NMSE     ] scalar gemv_%s vs ref::dot_row: all shapes %.3g, worst shape %.3g\n", wtype_name(type),
                nmse(all_want, all_got), worst);
  }
}

TEST(CpuKernelsScalar, Mxfp4ScaleTableMatchesReference) {
  for (int e = 0; e < 256; ++e)
    EXPECT_EQ(detail::kMxfp4Scale.v[e], ref::mxfp4_scale(static_cast<uint8_t>(e))) << e;
}

// ---- dispatch -------------------------------------------------------------------------------------------------

/// Sets HETMOE_ISA for one scope and restores the previous value.
class ScopedIsaEnv {
 public:
  explicit ScopedIsaEnv(const char* value) {
    if (const char* old = std::getenv("HETMOE_ISA")) old_ = old;
    if (value) {
      setenv("HETMOE_ISA", value, 1);
    } else {
      unsetenv("HETMOE_ISA");
    }
  }
  ~ScopedIsaEnv() {
    if (old_) {
      setenv("HETMOE_ISA", old_->c_str(), 1);
    } else {
      unsetenv("HETMOE_ISA");
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST(CpuKernelsDispatch, SupportedIsasStartWithScalarAndEndWithTheBest) {
  const auto isas = supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kScalar);
  EXPECT_EQ(isas.back(), best_isa());
  EXPECT_TRUE(std::is_sorted(isas.begin(), isas.end()));
  for (Isa isa : isas) EXPECT_TRUE(isa_compiled(isa)) << isa_name(isa);
}

TEST(CpuKernelsDispatch, EnvironmentSelectsEachSupportedIsa) {
  for (Isa isa : supported_isas()) {
    ScopedIsaEnv env(isa_name(isa));
    const auto selected = selected_isa();
    ASSERT_TRUE(selected.has_value()) << selected.error().to_string();
    EXPECT_EQ(*selected, isa);
  }
  {
    ScopedIsaEnv env(nullptr);
    const auto selected = selected_isa();
    ASSERT_TRUE(selected.has_value());
    EXPECT_EQ(*selected, best_isa());
  }
  {
    ScopedIsaEnv env("");
    const auto selected = selected_isa();
    ASSERT_TRUE(selected.has_value());
    EXPECT_EQ(*selected, best_isa());
  }
}

TEST(CpuKernelsDispatch, UnknownValueIsAnErrorNamingIt) {
  ScopedIsaEnv env("avx9000");
  const auto selected = selected_isa();
  ASSERT_FALSE(selected.has_value());
  EXPECT_EQ(selected.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(selected.error().message.find("avx9000"), std::string::npos) << selected.error().message;
  EXPECT_NE(selected.error().message.find("scalar"), std::string::npos) << selected.error().message;
}

TEST(CpuKernelsDispatch, UnsupportedIsaIsRefused) {
  // A CPU with AVX2 only: asking for avx512 must fail and list what is supported.
  const auto refused = select_isa("avx512", {Isa::kScalar, Isa::kAvx2});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("avx512"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("scalar, avx2"), std::string::npos) << refused.error().message;
  const auto scalar_only = select_isa("avx2", {Isa::kScalar});
  ASSERT_FALSE(scalar_only.has_value());
  const auto ok = select_isa("scalar", {Isa::kScalar});
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, Isa::kScalar);
  // On this machine: every ISA that is not supported is refused through the environment too.
  const auto supported = supported_isas();
  for (Isa isa : {Isa::kAvx2, Isa::kAvx2Vnni, Isa::kAvx512}) {
    if (std::find(supported.begin(), supported.end(), isa) != supported.end()) continue;
    ScopedIsaEnv env(isa_name(isa));
    EXPECT_FALSE(selected_isa().has_value()) << isa_name(isa);
  }
}

}  // namespace
}  // namespace hetmoe::cpu
