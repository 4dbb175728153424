// The avx2_vnni variant's source (cpu_kernels/kernels_avx2.cpp with HETMOE_AVX2_VNNI) built once more for the tests,
// with its ymm vpdpbusd in the EVEX encoding of AVX512_VNNI + AVX512VL instead of AVX-VNNI's VEX one: the same
// instruction (the same sums), so a CPU with AVX-512 VNNI but no AVX-VNNI (Zen 4, Ice Lake, Sapphire Rapids' older
// siblings) runs the variant's code paths in tests/test_avx2_vnni_evex.cpp. Linked into that test only; its table
// (kernel_table_avx2_vnni_evex) has no attention entries and is never dispatched.
#include <immintrin.h>

#define _mm256_dpbusd_avx_epi32 _mm256_dpbusd_epi32
#define HETMOE_SIMD_NS avx2_vnni_evex_kernels
#define HETMOE_AVX2_VNNI 1
#define HETMOE_AVX2_VNNI_TABLE kernel_table_avx2_vnni_evex
#include "cpu_kernels/kernels_avx2.cpp"  // NOLINT(bugprone-suspicious-include): one source, another ISA build
