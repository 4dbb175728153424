#pragma once
// r16_seeds, for the R16 kernels of every SIMD variant (kernels_simd.h, kernels_r16_avx512.h): included inside no
// namespace by a TU that has defined HETMOE_SIMD_NS, so each variant gets its own copy (ODR, kernels_simd.h).

#include <cstdint>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kernels_variants.h"

namespace hetmoe::cpu::HETMOE_SIMD_NS {

/// The R16 kernels' offset corrections (Seed: −offset · Σ_j x_q[j] of one block) for num_blocks blocks of x, once
/// per call, in the calling thread's scratch: [num_blocks]. nullptr when the buffer cannot grow (the kernels then
/// compute each where they need it, with the same values).
template <int32_t (*Seed)(const ActQ8Block&)>
const int32_t* r16_seeds(const ActQ8Block* x, int64_t num_blocks) {
  auto* seeds = static_cast<int32_t*>(detail::thread_scratch(static_cast<uint64_t>(num_blocks) * sizeof(int32_t)));
  if (seeds != nullptr)
    for (int64_t i = 0; i < num_blocks; ++i) seeds[i] = Seed(x[i]);
  return seeds;
}

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS
