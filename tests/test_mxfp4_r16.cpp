// kMXFP4_R16 and kQ8_0_R16 (cpu_kernels/repack.h): the repack is a permutation inside each 16-row group (unpack
// restores every byte; Q8_0's codes are stored sign-flipped), the scalar R16 kernel gives the file layout's scalar GEMV
// bit for bit, and every variant that has a SIMD R16 kernel matches the scalar one, gives each token of a batch the
// bits it gets alone, writes only its rows, and does not overflow at the extreme codes and activations.
// Shapes: 1, 3 and 90 blocks per row; row ranges of 1, 2 and 3 groups starting at 0 and past it (one token reads two
// groups side by side, an odd count's last alone); 1 and 2 tokens (two groups side by side), 3, and token counts
// around the kernel's 16-token tile (7, 8, 9, 17, 24).

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "cpu_kernels/repack.h"
#include "runtime/base/ggml_types.h"
#include "tests/logit_metrics.h"
#include "tests/quant_blocks.h"

namespace hetmoe::cpu {
namespace {

// SIMD vs scalar R16: the same exact integer dots and the same (float(dot) · d_x) · d_w per block, summed in the same
// order; the SIMD kernel fuses the last multiply and add (fma), which is exact here since d_w is a power of two
// (observed NMSE 0 on these shapes). 1e-10 is the bar of the other SIMD kernels (tests/test_cpu_kernels.cpp), kept so
// that a subnormal product rounding differently does not fail it; one wrong code in a 2880-long row moves NMSE by
// ~1e-4.
constexpr double kSimdVsScalarNmse = 1e-10;

constexpr int64_t kRows = 48;
constexpr int64_t kNumCols[] = {32, 96, 2880};

using test::random_mxfp4;
using test::random_q8_0;

std::vector<ActQ8Block> random_acts(int64_t num_tokens, int64_t num_cols, uint32_t seed) {
  return test::random_act_blocks(num_tokens, num_cols, seed);
}

std::vector<uint8_t> repacked(std::vector<uint8_t> w, uint64_t row_bytes) {
  std::vector<uint8_t> scratch(16 * row_bytes);
  repack_mxfp4_r16(w.data(), row_bytes, 0, static_cast<int64_t>(w.size() / row_bytes) / 16, scratch.data());
  return w;
}

using R16Kernel = void (*)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                           const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
using FileGemv = void (*)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                          const ActQ8Block* x, int64_t num_cols, float* y);

/// The scalar R16 kernel on rows [16, 48) against the file layout's scalar GEMV, bit for bit. file_of(num_cols): a
/// kRows-row matrix in the file's layout; repack(matrix, row_bytes): the same in R16.
template <class MakeFile, class Repack>
void check_scalar_r16_bits(FileGemv file_gemv, R16Kernel r16_scalar, uint64_t block_bytes, const MakeFile& file_of,
                           const Repack& repack) {
  for (const int64_t num_cols : kNumCols) {
    const uint64_t row_bytes = num_cols / 32 * block_bytes;
    const std::vector<uint8_t> w = file_of(num_cols);
    const std::vector<uint8_t> r = repack(w, row_bytes);
    for (const int64_t num_tokens : {1, 3, 9}) {
      const auto xq = random_acts(num_tokens, num_cols, 3);
      std::vector<float> want(static_cast<size_t>(num_tokens * 32)), got(want.size(), std::nanf(""));
      for (int64_t t = 0; t < num_tokens; ++t)
        file_gemv(w.data(), row_bytes, 16, 48, xq.data() + t * num_cols / 32, num_cols, &want[t * 32]);
      r16_scalar(r.data(), row_bytes, 16, 48, xq.data(), num_tokens, num_cols, got.data(), 32);
      EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
          << num_cols << " cols, " << num_tokens << " tokens";
    }
  }
}

TEST(Mxfp4R16, UnpackRestoresEveryByteAndRepackMovesThem) {
  for (const int64_t num_cols : kNumCols) {
    const uint64_t row_bytes = num_cols / 32 * 17;
    const auto w = random_mxfp4(kRows, num_cols, 1);
    auto r = w;
    std::vector<uint8_t> scratch(16 * row_bytes);
    // The middle group only: the others must stay as they are.
    repack_mxfp4_r16(r.data(), row_bytes, 1, 2, scratch.data());
    EXPECT_TRUE(std::equal(w.begin(), w.begin() + 16 * row_bytes, r.begin()));
    EXPECT_TRUE(std::equal(w.begin() + 32 * row_bytes, w.end(), r.begin() + 32 * row_bytes));
    EXPECT_NE(w, r) << num_cols;
    unpack_mxfp4_r16(r.data(), row_bytes, 1, 2, scratch.data());
    EXPECT_EQ(w, r) << num_cols;
    // Layout spot check: block 1 of row 5 in group 0 → scale at 272 + 5, codes 4..7 at 272 + 16 + 64 + 20.
    if (num_cols >= 64) {
      auto all = repacked(w, row_bytes);
      const uint8_t* file = w.data() + 5 * row_bytes + 17;
      EXPECT_EQ(all[272 + 5], file[0]);
      EXPECT_EQ(0, std::memcmp(&all[272 + 16 + 64 + 20], file + 1 + 4, 4));
    }
  }
}

TEST(Mxfp4R16, ScalarKernelEqualsFileLayoutScalarGemvBitForBit) {
  check_scalar_r16_bits(kernel_table(Isa::kScalar).gemv_mxfp4, gemm_mxfp4_r16_scalar, kMXFP4BlockBytes,
                        [](int64_t num_cols) { return random_mxfp4(kRows, num_cols, 2); }, repacked);
}

class Mxfp4R16Simd : public ::testing::TestWithParam<Isa> {};

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

INSTANTIATE_TEST_SUITE_P(Supported, Mxfp4R16Simd, ::testing::ValuesIn(supported_isas()), isa_param_name);

/// The SIMD kernel against the scalar one on every shape, row range and token count above; returns the worst NMSE.
/// repacked_of(num_cols): an R16 matrix of kRows rows; row_bytes_of(num_cols): its row bytes.
template <class MakeRepacked>
double check_simd_against_scalar(R16Kernel simd, R16Kernel scalar, uint64_t block_bytes,
                                 const MakeRepacked& repacked_of) {
  double worst = 0.0;
  for (const int64_t num_cols : kNumCols) {
    const uint64_t row_bytes = num_cols / 32 * block_bytes;
    const std::vector<uint8_t> r = repacked_of(num_cols);
    for (const auto& [row_begin, row_end] : {std::pair<int64_t, int64_t>{0, 16}, {16, 48}, {0, 48}}) {
      const int64_t n = row_end - row_begin;
      // 17, 24: token lanes (17 with a tail of 1 in a pass); 23, 31: a partial lane tile of 7 tokens; 200: more than one
      // lane chunk at 2880 columns.
      for (const int64_t num_tokens : {1, 2, 3, 7, 8, 9, 17, 23, 24, 31, 200}) {
        const auto xq = random_acts(num_tokens, num_cols, 5 + static_cast<uint32_t>(num_tokens));
        const int64_t y_stride = n + 3;  // a stride wider than the rows: the gap must stay untouched
        std::vector<float> want(static_cast<size_t>(num_tokens * y_stride), -7.0f), got(want.size(), -7.0f);
        scalar(r.data(), row_bytes, row_begin, row_end, xq.data(), num_tokens, num_cols, want.data(), y_stride);
        simd(r.data(), row_bytes, row_begin, row_end, xq.data(), num_tokens, num_cols, got.data(), y_stride);
        for (int64_t t = 0; t < num_tokens; ++t)
          for (int64_t i = n; i < y_stride; ++i) {
            EXPECT_EQ(got[t * y_stride + i], -7.0f) << "stray write";
            if (got[t * y_stride + i] != -7.0f) return 1.0;
          }
        const double e = test::nmse(want, got);
        worst = std::max(worst, e);
        EXPECT_LE(e, kSimdVsScalarNmse) << num_cols << " cols, rows [" << row_begin << ", " << row_end << "), "
                                        << num_tokens << " tokens";
        for (int64_t t = 0; t < num_tokens; ++t) {
          std::vector<float> alone(static_cast<size_t>(n));
          simd(r.data(), row_bytes, row_begin, row_end, xq.data() + t * num_cols / 32, 1, num_cols, alone.data(), n);
          EXPECT_EQ(0, std::memcmp(alone.data(), &got[t * y_stride], n * sizeof(float)))
              << "token " << t << " of " << num_tokens << " differs from the token alone";
        }
      }
    }
  }
  return worst;
}

double check_mxfp4_against_scalar(R16Kernel simd) {
  return check_simd_against_scalar(simd, gemm_mxfp4_r16_scalar, kMXFP4BlockBytes, [](int64_t num_cols) {
    return repacked(random_mxfp4(kRows, num_cols, 4), num_cols / 32 * 17);
  });
}

TEST_P(Mxfp4R16Simd, MatchesScalarAndEachTokenGetsItsAloneBits) {
  const KernelTable& table = kernel_table(GetParam());
  if (table.gemm_mxfp4_r16 == nullptr) {
    EXPECT_NE(GetParam(), Isa::kAvx512) << "the AVX-512 variant has the R16 kernel";
    GTEST_SKIP() << isa_name(GetParam()) << " has no R16 kernel (weights stay in the file's layout there)";
  }
  const double worst = check_mxfp4_against_scalar(table.gemm_mxfp4_r16);
  std::printf("[ NMSE     ] %s gemm_mxfp4_r16 vs scalar: max %.3g\n", isa_name(GetParam()), worst);
}

void check_extreme_codes(R16Kernel simd) {
  // Every code ±6 (nibble 0x7 / 0xF: the doubled value ±12, the offset byte 24 or 0) and activations ±127 of one sign:
  // |Σ| = 32 · 12 · 127 per block, the largest the dot can reach.
  constexpr int64_t kCols = 2880;
  const uint64_t row_bytes = kCols / 32 * 17;
  for (const uint8_t code : {uint8_t{0x77}, uint8_t{0xFF}}) {
    std::vector<uint8_t> w(16 * row_bytes);
    for (size_t b = 0; b < w.size() / 17; ++b) {
      w[b * 17] = 127;
      std::memset(&w[b * 17 + 1], code, 16);
    }
    const auto r = repacked(w, row_bytes);
    std::vector<ActQ8Block> xq(kCols / 32);
    for (auto& blk : xq) {
      blk.d = 1.0f;
      std::memset(blk.q, 127, 32);
    }
    std::vector<float> want(16), got(16);
    gemm_mxfp4_r16_scalar(r.data(), row_bytes, 0, 16, xq.data(), 1, kCols, want.data(), 16);
    simd(r.data(), row_bytes, 0, 16, xq.data(), 1, kCols, got.data(), 16);
    const float expect = (code == 0x77 ? 1.0f : -1.0f) * 90 * 32 * 12 * 127 * 0.5f;  // d_w = 2^(127 − 128)
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(want[i], expect) << "row " << i;
      EXPECT_EQ(got[i], expect) << "row " << i;
    }
  }
}

TEST_P(Mxfp4R16Simd, ExtremeCodesAndActivationsDoNotOverflow) {
  const KernelTable& table = kernel_table(GetParam());
  if (table.gemm_mxfp4_r16 == nullptr) GTEST_SKIP() << "no R16 kernel";
  check_extreme_codes(table.gemm_mxfp4_r16);
}

void check_every_scale_exponent(R16Kernel simd) {
  // One block per row (32 columns), so no other block's sum hides a wrong scale: 16 calls put the exponents
  // 16c .. 16c + 15 at rows 0..15 (every e in 0..255 at its own lane; e = 0, 1 are the subnormal scales, the AVX2
  // kernel builds those bits apart from the others). d_x = 2^-20 keeps e = 255 finite.
  constexpr int64_t kCols = 32;
  const uint64_t row_bytes = 17;
  auto w = random_mxfp4(16, kCols, 9);
  auto x = random_acts(4, kCols, 10);
  for (auto& xb : x) xb.d = 0x1p-20f;
  for (int c = 0; c < 16; ++c) {
    for (int i = 0; i < 16; ++i) w[i * row_bytes] = static_cast<uint8_t>(16 * c + i);
    const auto r = repacked(w, row_bytes);
    for (const int64_t num_tokens : {1, 4}) {
      std::vector<float> want(static_cast<size_t>(16 * num_tokens)), got(want.size());
      gemm_mxfp4_r16_scalar(r.data(), row_bytes, 0, 16, x.data(), num_tokens, kCols, want.data(), 16);
      simd(r.data(), row_bytes, 0, 16, x.data(), num_tokens, kCols, got.data(), 16);
      for (int64_t t = 0; t < num_tokens; ++t)
        for (int i = 0; i < 16; ++i)
          EXPECT_EQ(std::bit_cast<uint32_t>(want[t * 16 + i]), std::bit_cast<uint32_t>(got[t * 16 + i]))
              << "e = " << 16 * c + i << ", token " << t;
    }
  }
}

TEST_P(Mxfp4R16Simd, EveryScaleExponentAtEveryRowOfAGroupGivesTheScalarBits) {
  const KernelTable& table = kernel_table(GetParam());
  if (table.gemm_mxfp4_r16 == nullptr) GTEST_SKIP() << "no R16 kernel";
  check_every_scale_exponent(table.gemm_mxfp4_r16);
}

#if defined(__x86_64__)
}  // namespace
namespace detail {
const KernelTable& kernel_table_avx512();  // cpu_kernels/kernels_variants.h: the AVX-512 variant's own table
}  // namespace detail
namespace {

// On a CPU with AVX512_VBMI the AVX-512 table holds the vpermb kernel (kernels_avx512vbmi.cpp); the AVX-512
// variant's own kernel (AND + vpshufb), which CPUs without VBMI run, gets the same checks here.
TEST(Mxfp4R16Avx512, KernelWithoutVbmiPassesTheSameChecks) {
  const auto isas = supported_isas();
  if (std::find(isas.begin(), isas.end(), Isa::kAvx512) == isas.end()) GTEST_SKIP() << "no AVX-512";
  const R16Kernel base = detail::kernel_table_avx512().gemm_mxfp4_r16;
  if (base == kernel_table(Isa::kAvx512).gemm_mxfp4_r16)
    GTEST_SKIP() << "no AVX512_VBMI: the AVX-512 table runs this kernel (Mxfp4R16Simd/avx512)";
  const double worst = check_mxfp4_against_scalar(base);
  std::printf("[ NMSE     ] avx512 without VBMI gemm_mxfp4_r16 vs scalar: max %.3g\n", worst);
  check_extreme_codes(base);
  check_every_scale_exponent(base);
}
#endif

// ---- kQ8_0_R16 ---------------------------------------------------------------------------------------------------

std::vector<uint8_t> repacked_q8(std::vector<uint8_t> w, uint64_t row_bytes) {
  std::vector<uint8_t> scratch(16 * row_bytes);
  repack_q8_0_r16(w.data(), row_bytes, 0, static_cast<int64_t>(w.size() / row_bytes) / 16, scratch.data());
  return w;
}

TEST(Q8R16, UnpackRestoresEveryByteAndRepackFlipsTheCodes) {
  for (const int64_t num_cols : kNumCols) {
    const uint64_t row_bytes = num_cols / 32 * 34;
    const auto w = random_q8_0(kRows, num_cols, 11);
    auto r = w;
    std::vector<uint8_t> scratch(16 * row_bytes);
    repack_q8_0_r16(r.data(), row_bytes, 1, 2, scratch.data());  // the middle group only
    EXPECT_TRUE(std::equal(w.begin(), w.begin() + 16 * row_bytes, r.begin()));
    EXPECT_TRUE(std::equal(w.begin() + 32 * row_bytes, w.end(), r.begin() + 32 * row_bytes));
    EXPECT_NE(w, r) << num_cols;
    unpack_q8_0_r16(r.data(), row_bytes, 1, 2, scratch.data());
    EXPECT_EQ(w, r) << num_cols;
    // Layout spot check: block 1 of row 5 in group 0 → scale at 544 + 10, q[8..11] + 128 at 544 + 32 + 2 · 64 + 20.
    if (num_cols >= 64) {
      const auto all = repacked_q8(w, row_bytes);
      const uint8_t* file = w.data() + 5 * row_bytes + 34;
      EXPECT_EQ(0, std::memcmp(&all[544 + 10], file, 2));
      for (int j = 0; j < 4; ++j) EXPECT_EQ(all[544 + 32 + 128 + 20 + j], file[2 + 8 + j] ^ 0x80) << j;
    }
  }
}

TEST(Q8R16, ScalarKernelEqualsFileLayoutScalarGemvBitForBit) {
  check_scalar_r16_bits(kernel_table(Isa::kScalar).gemv_q8_0, gemm_q8_0_r16_scalar, kQ8_0BlockBytes,
                        [](int64_t num_cols) { return random_q8_0(kRows, num_cols, 12); }, repacked_q8);
}

class Q8R16Simd : public ::testing::TestWithParam<Isa> {};

INSTANTIATE_TEST_SUITE_P(Supported, Q8R16Simd, ::testing::ValuesIn(supported_isas()), isa_param_name);

// Q8_0's d_w is any f16, so the SIMD kernel's fma of (float(dot) · d_x) · d_w into the sum rounds once where the
// scalar kernel rounds twice: NMSE ~1e-15, under the same 1e-10 bar (one wrong code moves it by ~1e-4).
TEST_P(Q8R16Simd, MatchesScalarAndEachTokenGetsItsAloneBits) {
  const KernelTable& table = kernel_table(GetParam());
  if (table.gemm_q8_0_r16 == nullptr) {
    EXPECT_NE(GetParam(), Isa::kAvx512) << "the AVX-512 variant has the R16 kernel";
    GTEST_SKIP() << isa_name(GetParam()) << " has no R16 kernel (weights stay in the file's layout there)";
  }
  const double worst = check_simd_against_scalar(
      table.gemm_q8_0_r16, gemm_q8_0_r16_scalar, kQ8_0BlockBytes,
      [](int64_t num_cols) { return repacked_q8(random_q8_0(kRows, num_cols, 14), num_cols / 32 * 34); });
  std::printf("[ NMSE     ] %s gemm_q8_0_r16 vs scalar: max %.3g\n", isa_name(GetParam()), worst);
}

TEST_P(Q8R16Simd, ExtremeCodesAndActivationsDoNotOverflow) {
  const KernelTable& table = kernel_table(GetParam());
  if (table.gemm_q8_0_r16 == nullptr) GTEST_SKIP() << "no R16 kernel";
  // Codes −128 (stored 0) or 127 (stored 255) and activations ±127: |Σ| up to 32 · 128 · 127 per block, the seed
  // −128 · Σ x_q = ∓520192, and the 2880-column sum of 90 such blocks: all exact in int32 and in float.
  constexpr int64_t kCols = 2880;
  const uint64_t row_bytes = kCols / 32 * 34;
  for (const int8_t code : {int8_t{-128}, int8_t{127}})
    for (const int8_t act : {int8_t{127}, int8_t{-127}}) {
      std::vector<uint8_t> w(16 * row_bytes);
      const uint16_t one = ref::f32_to_f16(1.0f);
      for (size_t b = 0; b < w.size() / 34; ++b) {
        std::memcpy(&w[b * 34], &one, 2);
        std::memset(&w[b * 34 + 2], static_cast<uint8_t>(code), 32);
      }
      const auto r = repacked_q8(w, row_bytes);
      std::vector<ActQ8Block> xq(kCols / 32);
      for (auto& blk : xq) {
        blk.d = 1.0f;
        std::memset(blk.q, static_cast<uint8_t>(act), 32);
      }
      std::vector<float> want(16), got(16);
      gemm_q8_0_r16_scalar(r.data(), row_bytes, 0, 16, xq.data(), 1, kCols, want.data(), 16);
      table.gemm_q8_0_r16(r.data(), row_bytes, 0, 16, xq.data(), 1, kCols, got.data(), 16);
      const float expect = 90.0f * 32 * code * act;
      for (int i = 0; i < 16; ++i) {
        EXPECT_EQ(want[i], expect) << "row " << i;
        EXPECT_EQ(got[i], expect) << "row " << i << ", code " << int{code} << ", act " << int{act};
      }
    }
}

}  // namespace
}  // namespace hetmoe::cpu
