// AVX-512 with VBMI: the MXFP4_R16 kernel of kernels_r16_avx512.h built with -mavx512vbmi (its nibble lookups by
// vpermb). dispatch.cpp puts it in the AVX-512 table (KernelTable::gemm_mxfp4_r16) only where cpuid reports
// AVX512_VBMI (Ice Lake, Zen 4 and later); the AVX-512 variant itself does not need it. Same bits as the AVX-512
// kernel (tests/test_mxfp4_r16.cpp checks both where the CPU has VBMI).

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_SIMD_NS avx512vbmi_kernels

#include "cpu_kernels/kernels_r16_avx512.h"

namespace hetmoe::cpu::detail {

void gemm_mxfp4_r16_avx512vbmi(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                               const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y,
                               int64_t y_stride) {
  HETMOE_SIMD_NS::gemm_r16<HETMOE_SIMD_NS::Mxfp4R16Block>(w, row_bytes, row_begin, row_end, x, num_tokens, num_cols,
                                                           y, y_stride);
}

}  // namespace hetmoe::cpu::detail
