#pragma once
// Chooses and creates the forward pass the CLI runs: the CPU fast path by default, the scalar reference with
// `--reference`, the GPU / hybrid pass (runtime/hybrid_step.h, gpu_kernels/gpu_forward.h) with `--device gpu|auto`.
// Commands call create_forward() and never name an implementation.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "placement/thread_layout.h"
#include "placement/plan.h"
#include "runtime/device_plan.h"
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
  // Device runtime (--device, --vram-budget, --n-gpu-experts, --cpu-moe; README "GPU and hybrid").
  enum class Device { kCpu, kGpu, kAuto };
  Device device = Device::kCpu;              // kAuto: the GPU when one is usable, else the CPU (with a note)
  uint64_t vram_budget_bytes = 0;            // hard device memory limit; 0: free device memory minus a reserve
  ExpertPolicy expert_policy = ExpertPolicy::kAuto;
  uint32_t num_gpu_experts = 0;              // experts per layer on the GPU for ExpertPolicy::kNumGpuExperts
  int gpu_idx = 0;                           // CUDA device
};

/// Parses --device: "cpu", "gpu" or "auto". Errors: kInvalidArgument naming the value and the choices.
Expected<ForwardOptions::Device> parse_device(std::string_view text);

/// The forward pass for `model` (which must outlive it): the CPU path with the kernels of cpu::selected_isa()
/// (HETMOE_ISA may force scalar|avx2|avx512), the reference, or with options.device gpu/auto the GPU pass (hybrid
/// when some experts stay on the CPU). kAuto falls back to the CPU when no GPU can be used (no CUDA build, no
/// device or driver, the dense part over the VRAM budget) and says why in `notes`; kGpu returns that error instead.
/// notes (optional): lines for the user (device chosen, experts placed, what stays on the CPU and why).
/// Errors: the implementation's (context out of range, allocation failure, VRAM budget too small with kGpu, no GPU
/// with kGpu) and selected_isa()'s (a bad HETMOE_ISA value).
Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options,
                                                      std::vector<std::string>* notes = nullptr);

/// "reference", the CPU path with its ISA, e.g. "cpu avx512", or the GPU pass: "gpu" (every expert resident) or
/// "gpu + cpu avx512" (hybrid). With `forward` (from create_forward) the name of the pass actually created; without,
/// the one the options ask for ("auto (gpu when usable) + cpu avx512" for --device auto).
std::string forward_path_name(const ForwardOptions& options, const ForwardPass* forward = nullptr);

}  // namespace hetmoe
