#pragma once
// Chooses and creates the forward pass the CLI runs, and executes a placement Plan (placement/plan.h) with it: the
// CPU fast path for an all-CPU plan, the scalar reference with `--reference`, the GPU / hybrid pass
// (runtime/exec/hybrid_step.h over the device of runtime/backend/gpu_backend.h) for a plan that uses the GPU. Nothing here decides placement:
// the CLI makes the Plan (runtime/cli/plan_options.h) and commands call create_forward() without naming an
// implementation.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "placement/thread_layout.h"
#include "placement/plan.h"
#include "placement/settings.h"
#include "runtime/backend/device_plan.h"
#include "runtime/base/expected.h"
#include "runtime/backend/forward_pass.h"
#include "runtime/backend/multi_forward.h"
#include "runtime/backend/step_device.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe {

struct ForwardOptions {
  uint32_t context_length = 8192;            // tokens (1..model context_length)
  KvCacheType kv_type = KvCacheType::kF16;    // KV cache: K's type, and V's unless kv_type_v is set (kv_type.h);
  std::optional<KvCacheType> kv_type_v;       // the GPU pass takes f16, q8_0 and q4_0 (not f32)
  KvCacheType v_type() const { return kv_type_v.value_or(kv_type); }
  int num_threads = 0;                       // 0 = all cores
  bool use_reference = false;                // the scalar oracle (runtime/exec/forward_reference.h)
  uint32_t max_batch_tokens = 64;            // CPU path: prefill tokens per batch
  uint32_t rollback_slots = 0;               // CPU path: how far truncate() may go back
  /// CPU path: repack the model's MXFP4 experts and Q8_0 matrices in place into the layout of the kernels
  /// (kMXFP4_R16, kQ8_0_R16, runtime/model/weights_repack.h) when the weights are in memory and the selected variant
  /// has such kernels (AVX-512). The model then serves only CPU passes (the reference and the GPU refuse it), so a
  /// caller that makes other passes from the same model leaves it off; the CLI turns it on (--no-repack: off).
  bool repack_weights = false;
  /// CPU path: attention multiplies in bf16 where the kernels have bf16 products (AVX512_BF16;
  /// CpuForwardOptions::attention_bf16; --attention-bf16); false: f32.
  bool attention_bf16 = false;
  placement::ThreadLayoutOptions thread_layout;  // CPU path: pinned workers (NUMA nodes, SMT, PU list); the count
                                                 // is num_threads
  /// The placement to execute (placement/plan.h); the caller keeps it alive. Required for the GPU path (a plan that
  /// uses the GPU: every block's attention and the unembedding there, the experts it lists); nullptr: the all-CPU
  /// plan (library callers and tests of the CPU path). The runtime runs from Plans and decides no placement itself.
  const placement::Plan* plan = nullptr;
  /// Expert selection counts (num_layers, num_experts) to increment, one per selected (layer, expert) per token
  /// (CpuForwardOptions::expert_counts, HybridForwardOptions::expert_counts); nullptr: not counted.
  uint64_t* expert_counts = nullptr;
  /// Where the CPU path's expert weights live with several NUMA nodes (the config file's numa.policy): kLocal binds
  /// each node's experts to its memory; kNone and kInterleave shard the experts over the nodes' workers without
  /// moving pages (page interleaving is not implemented; a note says so). One node: no effect.
  NumaPolicy numa_policy = NumaPolicy::kLocal;
  // Device runtime (--device, --vram-budget; docs/gpu.md).
  enum class Device { kCpu, kGpu, kAuto };
  Device device = Device::kCpu;              // kAuto: the GPU when the plan uses it and it is usable, else the CPU
                                             // (with a note)
  uint64_t vram_budget_bytes = 0;            // hard device memory limit; 0: free device memory minus a reserve
  int gpu_idx = 0;                           // CUDA device
  bool overlap = true;                       // hybrid: the device's experts run while the CPU's do (--no-overlap:
                                             // one after the other, to measure the overlap's gain)
  /// Progress while the plan's RAM tier copies resident weights into memory (runtime/exec/ram_tier.h).
  gguf::File::LoadProgress ram_tier_progress;
};

/// Parses --device: "cpu", "gpu" or "auto". Errors: kInvalidArgument naming the value and the choices.
Expected<ForwardOptions::Device> parse_device(std::string_view text);

/// The forward pass for `model` (which must outlive it) executing options.plan: the CPU path with the kernels of
/// cpu::selected_isa() (HETMOE_ISA may force scalar|avx2|avx512) or the reference for an all-CPU plan (or none);
/// the GPU pass (hybrid when some experts stay on the CPU) for a plan that uses the GPU, with options.device gpu or
/// auto. kAuto falls back to the CPU (every expert there) when the GPU pass cannot be created (no CUDA build, no
/// device or driver, the dense part over the VRAM budget) and says why in `notes`; kGpu returns that error instead.
/// The CPU path may change `model` (options.repack_weights: its weights' bytes and views; a note says so); `model` is
/// const here because every other pass only reads it.
/// notes (optional): lines for the user (device chosen, experts placed, what stays on the CPU and why).
/// Errors: kInvalidArgument for a plan of another model shape, a plan that uses the GPU with device kCpu or with
/// --reference (the message names the conflict), kGpu with a plan that places nothing on the GPU, or the GPU path
/// without a plan; the implementation's (context out of range, allocation failure, VRAM budget too small with
/// kGpu, no GPU with kGpu) and selected_isa()'s (a bad HETMOE_ISA value).
Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options,
                                                      std::vector<std::string>* notes = nullptr);

/// The hybrid step (runtime/exec/hybrid_step.h) over `device`, its CPU experts on the pinned workers of
/// options.thread_layout with options.num_threads (WorkerPool::create_for_machine, one arena), with options.overlap
/// and options.expert_counts; create_gpu_forward's second half, open for tests with a host device.
/// Errors: WorkerPool::create_for_machine's (a layout this process cannot run on), selected_isa()'s,
/// HybridForward::create's.
Expected<std::unique_ptr<ForwardPass>> create_hybrid_forward(const Model& model,
                                                             std::unique_ptr<GpuStepDevice> device,
                                                             const ForwardOptions& options,
                                                             std::vector<std::string>* notes);

/// A forward pass over num_slots sequences (a server's slots), made from `first`, create_forward(model, options)'s
/// pass, which becomes slot 0: the batched CPU pass (CpuMultiForward, runtime/exec/multi_forward_cpu.h: the slots'
/// decode tokens in groups of up to 4 through one CpuForward) when `first` is the CPU path; otherwise
/// SequentialMultiForward over `first` and num_slots − 1 more create_forward passes (each its own weights' copy on a
/// GPU). Errors: kInvalidArgument for no pass or num_slots 0; those of create_forward, CpuMultiForward::create and
/// SequentialMultiForward::create.
Expected<std::unique_ptr<MultiSequenceForward>> create_multi_forward(const Model& model, const ForwardOptions& options,
                                                                     std::unique_ptr<ForwardPass> first,
                                                                     uint32_t num_slots);

/// Creates the GPU (or hybrid) forward pass on options.gpu_idx for `model` (which must outlive it), executing
/// options.plan: the experts it puts on the GPU are resident (runtime/backend/device_plan.h lays them out under the VRAM
/// budget; any that do not fit run on the CPU, with a note), the others run on the CPU. Appends to `notes` (optional)
/// the device, the placement summary and what stays on the CPU and why. The plan's dynamic policy is not executed
/// yet (expert migrations are the device runtime's next step).
/// The KV cache lives on the GPU in options.kv_type / v_type(): f16, q8_0 or q4_0 (the CUDA attention kernels read
/// the blocks directly).
/// Errors: kUnsupported "built without CUDA" / "no CUDA GPU found (…)" / a device older than sm_75 / an f32 KV cache
/// (naming the flag), a plan that keeps a block's attention or the unembedding on the CPU (gpu_experts_of_plan);
/// kInvalidArgument for no plan, a
/// plan of another model, a VRAM budget the dense part does not fit in (plan_device_memory's message), a bad
/// gpu_idx; kIo for a CUDA error (the message carries cudaGetErrorString and the call).
Expected<std::unique_ptr<ForwardPass>> create_gpu_forward(const Model& model, const ForwardOptions& options,
                                                          std::vector<std::string>* notes);

/// "reference", the CPU path with its ISA, e.g. "cpu avx512" ("cpu avx512 bf16-attn" for the CPU pass when
/// attention_bf16 is set and the kernels run bf16 tiles; the GPU pass runs attention on the GPU), or the GPU pass: "gpu" (every expert resident) or
/// "gpu + cpu avx512" (hybrid). With `forward` (from create_forward) the name of the pass actually created; without,
/// the one the options ask for ("auto (gpu when usable) + cpu avx512" for --device auto).
std::string forward_path_name(const ForwardOptions& options, const ForwardPass* forward = nullptr);

}  // namespace hetmoe
