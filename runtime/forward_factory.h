#pragma once
// Chooses and creates the forward pass the CLI runs: the CPU fast path by default, the scalar reference with
// `--reference`. Commands call create_forward() and never name an implementation.

#include <cstdint>
#include <memory>
#include <string>

#include "placement/thread_layout.h"
#include "placement/plan.h"
#include "runtime/expected.h"
#include "runtime/forward_pass.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace hetmoe {

struct ForwardOptions {
  uint32_t context_length = 8192;            // tokens (1..model context_length)
  KvCacheType kv_type = KvCacheType::kF16;
  int num_threads = 0;                       // 0 = all cores
  bool use_reference = false;                // the scalar oracle (runtime/forward_reference.h)
  uint32_t max_batch_tokens = 64;            // CPU path: prefill tokens per batch
  uint32_t rollback_slots = 0;               // CPU path: how far truncate() may go back
  placement::ThreadLayoutOptions thread_layout;  // CPU path: pinned workers (NUMA nodes, SMT, PU list); the count
                                                 // is num_threads
  /// The placement to execute (placement/plan.h); the caller keeps it alive. nullptr: the all-CPU plan (what the
  /// optimizer returns without a GPU). The runtime runs from Plans and decides no placement itself.
  const placement::Plan* plan = nullptr;
  /// CPU path: expert selection counts (num_layers, num_experts) to increment (CpuForwardOptions::expert_counts).
  uint64_t* expert_counts = nullptr;
};

/// The forward pass for `model` (which must outlive it): the CPU path with the kernels of cpu::selected_isa()
/// (HETMOE_ISA may force scalar|avx2|avx512) on workers pinned as options.thread_layout says (runtime/worker_pool.h;
/// with several NUMA nodes, experts are sharded over the nodes' memory and run on their node), or the reference.
/// Errors: the implementation's (context out of range, allocation failure), selected_isa()'s (a bad HETMOE_ISA
/// value) and WorkerPool::create_for_machine's (more threads than PUs, a PU or node that does not exist);
/// kInvalidArgument for a plan of another model shape; kUnsupported for a plan that places anything on a GPU (no GPU
/// forward path is built in yet), or for expert counting with the reference.
Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options);

/// "reference" or the CPU path with its ISA, e.g. "cpu avx512" (for the figures commands print).
std::string forward_path_name(const ForwardOptions& options);

}  // namespace hetmoe
