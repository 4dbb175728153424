#pragma once
// Measured CPU kernel rates for the cost model (placement/cost_model.h): how many weight bytes per second the
// selected GEMV kernels stream with a given thread count, so DeviceRates' CPU efficiencies are measured on this
// machine rather than assumed (efficiency = GEMV bytes/s ÷ STREAM-like read bandwidth, profiler/bandwidth.h).

#include <cstdint>

#include "runtime/base/expected.h"
#include "runtime/base/ggml_types.h"

namespace hetmoe::placement {

/// Runs the GEMV kernel of cpu::selected_isa() for `type` (kMXFP4 or kQ8_0; its R16 kernel where the variant has one,
/// as the CPU path repacks such weights at load) over a matrix of rows of 2880 values
/// (gpt-oss's hidden size) totalling about `num_bytes` (make it several times the last-level cache), rows split
/// over `num_threads` oneTBB workers as the CPU path splits them, `num_reps` times; returns the best weight bytes per
/// second. Errors: kInvalidArgument for another type or num_threads < 1; selected_isa()'s; kIo if the buffer
/// cannot be allocated.
Expected<double> measure_cpu_gemv_bytes_per_s(TensorType type, uint64_t num_bytes, int num_threads, int num_reps = 3);

/// Decode attention FLOP/s of `num_threads` oneTBB workers (the cost model's DeviceRates::cpu_attention_flops): the
/// tiled attention kernels of cpu::selected_isa() (f16 K/V, V read in place, as the CPU path runs one decode token)
/// over gpt-oss's 12 full-attention layers at depth 4096 (8 KV heads × 8 query heads, head_dim 64; ~100 MB of K/V in
/// huge pages), one parallel region per layer, each head's keys split over the threads when there are fewer heads;
/// best of `num_reps` after a warm-up. FLOP = 4 · query heads · keys · head_dim per layer (scores and values).
/// bf16: the bf16 tiles (--attention-bf16) where the variant has them, else the f32 ones (as the runtime falls back).
/// Errors: kInvalidArgument for num_threads or num_reps < 1; selected_isa()'s; kIo if the K/V cannot be allocated.
Expected<double> measure_cpu_attention_flops(int num_threads, int num_reps = 3, bool bf16 = false);

}  // namespace hetmoe::placement
