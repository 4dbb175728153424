// AVX-512 attention kernels over q8_0 / q4_0 KV rows (built with the AVX-512 F/BW/VL/DQ/VNNI flags of
// kernels_avx512.cpp; see cpu_kernels/CMakeLists.txt).

// GCC 12's AVX-512 intrinsics initialize their "undefined" operands from themselves, which -Wmaybe-uninitialized
// reports at every inlined use (GCC bug 105593, fixed in GCC 13; as in kernels_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu_kernels/kernels_variants.h"

#define HETMOE_ATTN_NS avx512_attention

#include "cpu_kernels/attention_avx512_isa.h"
#include "cpu_kernels/attention_simd.h"

namespace hetmoe::cpu::detail {

void add_attention_kernels_avx512(KernelTable& t) { HETMOE_ATTN_NS::add_attention_kernels(t); }

}  // namespace hetmoe::cpu::detail
