#pragma once
// The one place a run's placement Plan is made (docs/placement.md): from the command-line flags, the config file
// and this machine, for generate, chat, bench and eval. create_forward (runtime/exec/forward_factory.h) then executes
// the Plan and decides nothing itself. The runtime library cannot link placement/ (placement builds on it), so this
// lives in the CLI.

#include <cstdint>
#include <string>
#include <vector>

#include "placement/expert_stats.h"
#include "placement/cost_model.h"
#include "placement/plan.h"
#include "profiler/memory_limit.h"
#include "runtime/cli/run_options.h"
#include "runtime/app/config.h"
#include "runtime/base/expected.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"

namespace hetmoe::cli {

/// The Plan the run executes, in this order:
///   1. --plan FILE (from `hetmoe plan -o FILE` or `--json`): used as is, checked against the model; with
///      --device auto and no usable GPU, a plan that uses the GPU runs all on the CPU (with a note);
///   2. no usable GPU (no CUDA build, no device, --device cpu or --reference): every weight on the CPU;
///   3. --cpu-moe: attention, router and unembedding on the GPU, every expert on the CPU;
///   4. --n-gpu-experts K (or the config's placement.num_gpu_experts): the K experts per block with the largest
///      router bias on the GPU (placement/static_plans.h);
///   5. otherwise the optimizer (placement/optimizer.h, dense_on_gpu) under the VRAM budget (--vram-budget, the
///      config's gpu.vram_budget, or the GPU's free memory minus gpu::kDefaultVramReserveBytes) and the RAM budget
///      (--ram-budget or gpu.ram_budget; default unlimited), at options.context_length (prediction at depth
///      context − 1, as `hetmoe plan`), with --stats FILE or the router-bias prior, and the cached `hetmoe probe`
///      profile's rates for options.num_threads when one exists for this machine (else the laptop defaults).
/// Plans made here (2–5) then get the config's placement.overrides (apply_expert_overrides), placement mode
/// (--placement, else placement.mode, else dynamic) and [placement.dynamic] keys and prefill_crossover
/// (apply_placement_settings), and are evaluated by the cost model (their prediction filled).
/// Sets options.device (kAuto becomes kCpu when no GPU is usable), options.vram_budget_bytes (the budget planned
/// for) and options.gpu_idx (the config's gpu.id unless set); the caller points options.plan at the result.
/// notes (optional): why no GPU is used, the plan's notes and a summary line
/// "plan: 24 blocks, 312/768 experts on the GPU (optimizer, VRAM budget 7.50 GiB), predicted 21.3 tok/s ...".
/// Errors: kUnsupported "--device gpu: no GPU found (...)"; kInvalidArgument for --plan with --cpu-moe or
/// --n-gpu-experts, a bad --placement, --ram-budget or config byte size, a context out of range, a plan or
/// statistics file of another model; plan_load's, expert_stats_load's, optimize_plan's and the overrides' errors.
Expected<placement::Plan> make_run_plan(const Model& model, const DeviceArgs& args, const RuntimeConfig* config,
                                        ForwardOptions& options, std::vector<std::string>* notes);

/// The start-up lines about memory: "memory: needs X in RAM: weights W (R resident, P paged from disk), KV cache K
/// at context C (f16), buffers B[; V in VRAM (KV cache G of it, f16)]; usable U (free now: ...)" — the RAM's KV
/// cache is that of the blocks whose attention is on the CPU, G that of the GPU's — and, when even what cannot be paged
/// (weights that are not experts, or all weights when copied into memory, KV cache, buffers) exceeds `usable`
/// (bytes the run can have: free memory plus what it holds), "memory: this run cannot fit: ..." naming a context
/// (-c N) or KV type that would. `room`: the free memory as read (for its description).
std::vector<std::string> memory_lines(const placement::Plan& plan, const placement::CostModel& cost_model,
                                      const profiler::MemoryRoom& room, uint64_t usable, uint32_t context_length,
                                      KvCacheType kv_type, bool weights_in_memory);

/// Expert selection counts of a run (issue 6: every run counts them): zero counts of the model's shape, to pass as
/// ForwardOptions::expert_counts = stats.counts.data().
placement::ExpertStats run_expert_stats(const Model& model);

/// Saves the counts of a run (--stats-out FILE) in `hetmoe profile`'s format, num_tokens taken from the counts
/// (each token adds num_experts_used to every layer's row), so the file loads with expert_stats_load and merges
/// with profile files. Errors: kIo (cannot write); kInvalidArgument when no token was counted (the pass did not
/// count: --reference, and the GPU pass does not yet).
Status save_run_expert_stats(placement::ExpertStats stats, const std::string& path);

}  // namespace hetmoe::cli
