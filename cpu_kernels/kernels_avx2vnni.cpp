// AVX2 + AVX-VNNI variant (Intel Alder Lake and later, AMD Zen 5; built with -mavx2 -mfma -mf16c -mavxvnni): the AVX2
// variant's source with its int8 dots on vpdpbusd (ymm), HETMOE_AVX2_VNNI in kernels_avx2.cpp. The same integer sums,
// so the same results bit for bit, as the AVX2 variant on the file's layout; it also has a Q8_0_R16 kernel (repacked
// Q8_0 matrices then round as the AVX-512 R16 kernel does). The attention kernels are the AVX2 variant's.

#define HETMOE_SIMD_NS avx2_vnni_kernels
#define HETMOE_AVX2_VNNI 1
#include "cpu_kernels/kernels_avx2.cpp"  // NOLINT(bugprone-suspicious-include): one source, two ISA builds
