// The avx2_vnni variant's code paths on a CPU without AVX-VNNI: its source built with the EVEX vpdpbusd
// (tests/avx2_vnni_evex_kernels.cpp) where AVX-512 VNNI runs. The variant's contract: its quantized GEMV and GEMM
// give the avx2 variant's bits (the same exact integer sums); its MXFP4_R16 kernel the scalar R16 kernel's bits, and
// its Q8_0_R16 kernel the AVX-512 one's (both add (float(dot) · d_x) · d_w by an fma; the scalar kernel multiplies
// and adds, which differs where d_w is not a power of two).
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "cpu_kernels/repack.h"
#include "tests/quant_blocks.h"

#if defined(__x86_64__)
namespace hetmoe::cpu::detail {
const KernelTable& kernel_table_avx2_vnni_evex();  // tests/avx2_vnni_evex_kernels.cpp
}

namespace hetmoe::cpu {
namespace {

bool evex_runs() {
  for (Isa isa : supported_isas())
    if (isa == Isa::kAvx512) return true;  // the AVX-512 variant needs AVX512F/BW/VL/DQ/VNNI
  return false;
}

std::vector<uint8_t> random_blocks(bool mxfp4, int64_t num_rows, int64_t num_cols, uint32_t seed) {
  return mxfp4 ? test::random_mxfp4(num_rows, num_cols, seed) : test::random_q8_0(num_rows, num_cols, seed);
}

std::vector<ActQ8Block> random_acts(int64_t num_tokens, int64_t num_cols, uint32_t seed) {
  return test::random_act_blocks(num_tokens, num_cols, seed);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Avx2VnniEvex, QuantizedGemvAndGemmGiveTheAvx2Bits) {
  if (!evex_runs()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const KernelTable& vnni = detail::kernel_table_avx2_vnni_evex();
  const KernelTable& avx2 = kernel_table(Isa::kAvx2);
  for (const bool mxfp4 : {true, false}) {
    for (const int64_t num_cols : {32, 96, 2880}) {
      const int64_t num_rows = 37;  // odd: every tile's remainder rows
      const uint64_t row_bytes = num_cols / 32 * (mxfp4 ? 17 : 34);
      const auto w = random_blocks(mxfp4, num_rows, num_cols, 3);
      for (const int64_t num_tokens : {1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 24}) {
        const auto x = random_acts(num_tokens, num_cols, 7 + static_cast<uint32_t>(num_tokens));
        std::vector<float> want(static_cast<size_t>(num_tokens * num_rows)), got(want.size());
        if (num_tokens == 1) {
          (mxfp4 ? avx2.gemv_mxfp4 : avx2.gemv_q8_0)(w.data(), row_bytes, 0, num_rows, x.data(), num_cols,
                                                      want.data());
          (mxfp4 ? vnni.gemv_mxfp4 : vnni.gemv_q8_0)(w.data(), row_bytes, 0, num_rows, x.data(), num_cols, got.data());
          EXPECT_TRUE(same_bits(want, got)) << (mxfp4 ? "mxfp4" : "q8_0") << " GEMV, " << num_cols << " cols";
        }
        (mxfp4 ? avx2.gemm_mxfp4 : avx2.gemm_q8_0)(w.data(), row_bytes, 0, num_rows, x.data(), num_tokens, num_cols,
                                                    want.data(), num_rows);
        (mxfp4 ? vnni.gemm_mxfp4 : vnni.gemm_q8_0)(w.data(), row_bytes, 0, num_rows, x.data(), num_tokens, num_cols,
                                                    got.data(), num_rows);
        EXPECT_TRUE(same_bits(want, got)) << (mxfp4 ? "mxfp4" : "q8_0") << " GEMM, " << num_cols << " cols, "
                                          << num_tokens << " tokens";
      }
    }
  }
}

TEST(Avx2VnniEvex, R16KernelsGiveTheReferenceBitsForEveryTokenCount) {
  if (!evex_runs()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const KernelTable& vnni = detail::kernel_table_avx2_vnni_evex();
  ASSERT_NE(vnni.gemm_mxfp4_r16, nullptr);
  ASSERT_NE(vnni.gemm_q8_0_r16, nullptr);
  for (const bool mxfp4 : {true, false}) {
    const auto simd = mxfp4 ? vnni.gemm_mxfp4_r16 : vnni.gemm_q8_0_r16;
    const auto scalar = mxfp4 ? gemm_mxfp4_r16_scalar : kernel_table(Isa::kAvx512).gemm_q8_0_r16;
    ASSERT_NE(scalar, nullptr);
    for (const int64_t num_cols : {32, 2880}) {
      const int64_t num_rows = 48;
      const uint64_t row_bytes = num_cols / 32 * (mxfp4 ? 17 : 34);
      auto w = random_blocks(mxfp4, num_rows, num_cols, 5);
      std::vector<uint8_t> scratch(16 * row_bytes);
      (mxfp4 ? repack_mxfp4_r16 : repack_q8_0_r16)(w.data(), row_bytes, 0, num_rows / 16, scratch.data());
      // 1–16: passes; 17, 24: the token lanes (17 with a tail of 1 in a pass); 23, 31: a partial lane tile of 7
      // (MXFP4; Q8_0's lanes take whole tiles); 33: lanes + tail; 200: more than one lane chunk at 2880 columns.
      for (const int64_t num_tokens : {1, 2, 3, 7, 8, 9, 16, 17, 23, 24, 31, 33, 200}) {
        const auto x = random_acts(num_tokens, num_cols, 11 + static_cast<uint32_t>(num_tokens));
        for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, 48}, {16, 32}}) {
          std::vector<float> want(static_cast<size_t>(num_tokens * (r1 - r0))), got(want.size());
          scalar(w.data(), row_bytes, r0, r1, x.data(), num_tokens, num_cols, want.data(), r1 - r0);
          simd(w.data(), row_bytes, r0, r1, x.data(), num_tokens, num_cols, got.data(), r1 - r0);
          EXPECT_TRUE(same_bits(want, got)) << (mxfp4 ? "mxfp4_r16, " : "q8_0_r16, ") << num_cols << " cols, rows ["
                                            << r0 << ", " << r1 << "), " << num_tokens << " tokens";
        }
      }
    }
  }
}

TEST(Avx2VnniEvex, Q8R16ExtremeCodesAndActivationsDoNotOverflow) {
  if (!evex_runs()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const KernelTable& vnni = detail::kernel_table_avx2_vnni_evex();
  // Codes −128 (stored 0) and 127 (stored 255) against activations of ±127: |Σ| = 32 · 128 · 127 per block, where a
  // maddubs of q + 128 would have saturated.
  constexpr int64_t kCols = 2880;
  const uint64_t row_bytes = kCols / 32 * 34;
  for (const int code : {-128, 127}) {
    std::vector<uint8_t> w(16 * row_bytes);
    for (size_t b = 0; b < w.size() / 34; ++b) {
      const uint16_t one = 0x3C00;  // f16 1.0
      std::memcpy(&w[b * 34], &one, 2);
      std::memset(&w[b * 34 + 2], static_cast<uint8_t>(static_cast<int8_t>(code)), 32);
    }
    std::vector<uint8_t> scratch(16 * row_bytes);
    repack_q8_0_r16(w.data(), row_bytes, 0, 1, scratch.data());
    for (const int8_t a : {int8_t{127}, int8_t{-127}}) {
      std::vector<ActQ8Block> x(kCols / 32);
      for (auto& xb : x) {
        xb.d = 1.0f;
        std::memset(xb.q, static_cast<uint8_t>(a), 32);
      }
      std::vector<float> got(16);
      vnni.gemm_q8_0_r16(w.data(), row_bytes, 0, 16, x.data(), 1, kCols, got.data(), 16);
      const float expect = 90.0f * 32 * code * a;
      for (int i = 0; i < 16; ++i) EXPECT_EQ(got[i], expect) << "code " << code << ", x " << int{a} << ", row " << i;
    }
  }
}

}  // namespace
}  // namespace hetmoe::cpu
#endif
