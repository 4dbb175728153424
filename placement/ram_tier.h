#pragma once
// The RAM tier of a Plan: when the memory a run can use (profiler::MemoryRoom) is short of the model, the dense
// weights and the most often selected CPU experts stay resident in RAM (copied into anonymous memory, locked where
// RLIMIT_MEMLOCK allows) and the least selected are left in the mapped file, paged from disk when the router picks
// them. Experts on the GPU need no RAM. Three tiers per expert: VRAM, RAM, disk.
//
// Budget for resident weights = room − KV cache − buffers − page cache for paged experts, where the page cache is
// one token's worth of experts (top-k · layers · expert bytes, capped at half the paged bytes) so a token's paged
// experts are not evicted by each other while it runs. Experts are taken in descending selection probability
// (across all layers) while they fit.
// Predicted cost: every selection of a paged expert reads it from disk (an upper bound: page-cache hits are not
// counted): paged_loads_per_token = Σ over paged experts of p_e, paged_time_s = Σ p_e · expert bytes / disk rate.

#include <cstdint>
#include <span>

#include "placement/plan.h"
#include "placement/traffic.h"
#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// What the tier is planned from. Bytes; rates in bytes per second.
struct RamTierRequest {
  uint64_t room_bytes = 0;          // what the process can use now (min(MemAvailable, cgroup room)); 0: unknown
  uint64_t kv_bytes = 0;            // the KV cache at the run's context, in RAM
  uint64_t buffer_bytes = 256ull << 20;  // activations, scratch, tokenizer, allocator slack
  /// Room kept free for the page cache beyond what the plan counts (paged experts, the rest of the process, the
  /// kernel's reclaim margin): a mapped model that "just fits" thrashes. Measured (docs/memory.md): the synthetic 20b
  /// in a 12 GiB cgroup (12.05 GiB usable) decoded at 0.96 / 1.21 tok/s mapped without a tier, 1.52 / 1.56 with a
  /// tier leaving 1.05 GiB, 1.88 / 2.46 leaving 1.55 GiB (two interleaved rounds, busy host).
  uint64_t headroom_bytes = 1536ull << 20;
  double disk_read_bytes_per_s = 0; // `hetmoe probe`'s random-read rate of the model's disk; 0: not measured
  bool lock = true;                 // lock resident weights (mlock) where RLIMIT_MEMLOCK allows
};

/// Fills plan.ram_tier and each layer's paged_experts (CPU experts only). When everything fits (or room is
/// unknown) the tier is disabled and nothing is paged. `probabilities`: (num_layers, num_experts) selection
/// probabilities (ExpertStats::selection_probabilities or the router-bias prior). The decode prediction gains
/// paged_time_s (plan.prediction.decode_time_s and decode_tok_s updated). A note says what was paged and why; when
/// even the dense weights do not fit the note says so (the tier still keeps as many experts as fit: none).
/// Errors: kInvalidArgument when probabilities or bytes do not match the plan's shape.
Status plan_ram_tier(Plan& plan, const ModelBytes& bytes, std::span<const double> probabilities,
                     const RamTierRequest& request);

/// Bytes of weights a Plan keeps in RAM when nothing is paged: embedding, CPU-side dense parts and CPU experts.
uint64_t ram_weight_bytes(const Plan& plan, const ModelBytes& bytes);

}  // namespace hetmoe::placement
