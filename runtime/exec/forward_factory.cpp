#include "runtime/exec/forward_factory.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <thread>

#include "runtime/backend/gpu_backend.h"
#include "runtime/exec/forward_cpu.h"
#include "runtime/exec/forward_reference.h"
#include "runtime/exec/hybrid_step.h"
#include "runtime/exec/multi_forward_cpu.h"
#include "runtime/exec/multi_forward_sequential.h"
#include "runtime/exec/ram_tier.h"
#include "runtime/exec/worker_pool.h"
#include "runtime/model/weights_repack.h"

namespace hetmoe {

namespace {

/// The plan must be for this model.
Status check_plan_shape(const Model& model, const placement::Plan& plan) {
  const ModelHparams& hp = model.hparams;
  if (plan.num_layers != hp.num_layers || plan.num_experts != hp.num_experts || plan.layers.size() != hp.num_layers ||
      plan.num_experts_used != hp.num_experts_used)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the plan is for {} layers × {} experts (top-{}), the model has {} × {} (top-{})",
                                  plan.num_layers, plan.num_experts, plan.num_experts_used, hp.num_layers,
                                  hp.num_experts, hp.num_experts_used));
  for (const placement::LayerPlan& l : plan.layers)
    if (l.experts.size() != hp.num_experts)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("a layer of the plan places {} experts, the model has {}", l.experts.size(),
                                    hp.num_experts));
  return {};
}

/// "12 experts and the attention of 24 blocks", what a plan puts on the GPU.
std::string gpu_part(const placement::Plan& plan) {
  uint64_t experts = 0, blocks = 0;
  for (const placement::LayerPlan& l : plan.layers) {
    blocks += l.attention == placement::Device::kGpu;
    for (placement::Device d : l.experts) experts += d == placement::Device::kGpu;
  }
  return fmt::format("{} expert{} and the attention of {} block{}{}", experts, experts == 1 ? "" : "s", blocks,
                     blocks == 1 ? "" : "s",
                     plan.output == placement::Device::kGpu ? " and the unembedding" : "");
}

/// The CUDA attention kernels read an f16, q8_0 or q4_0 cache (gpu_kernels/ops.h KvType); f32 has CPU kernels only.
/// An error naming the flag and the type, else empty.
Status check_gpu_kv_types(const ForwardOptions& options) {
  for (const auto& [flag, type] : {std::pair{"--cache-type-k", options.kv_type}, {"--cache-type-v", options.v_type()}})
    if (type == KvCacheType::kF32)
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("the GPU pass keeps the KV cache in f16, q8_0 or q4_0; {} f32 runs on the CPU only "
                                    "(--device cpu)",
                                    flag));
  return {};
}

}  // namespace

Expected<ForwardOptions::Device> parse_device(std::string_view text) {
  if (text == "cpu") return ForwardOptions::Device::kCpu;
  if (text == "gpu") return ForwardOptions::Device::kGpu;
  if (text == "auto") return ForwardOptions::Device::kAuto;
  return make_error(ErrorCode::kInvalidArgument, fmt::format("--device {}: expected cpu, gpu or auto", text));
}

Expected<std::unique_ptr<ForwardPass>> create_gpu_forward(const Model& model, const ForwardOptions& options,
                                                          std::vector<std::string>* notes) {
  HETMOE_RETURN_IF_ERROR(check_gpu_kv_types(options));
  gpu::StepDeviceOptions device_options;
  device_options.plan = options.plan;
  device_options.context_length = options.context_length;
  device_options.max_batch_tokens = options.max_batch_tokens;
  device_options.rollback_slots = options.rollback_slots;
  device_options.k_type = options.kv_type;
  device_options.v_type = options.v_type();
  device_options.vram_budget_bytes = options.vram_budget_bytes;
  device_options.gpu_idx = options.gpu_idx;
  auto device = gpu::create_step_device(model, device_options, notes);
  if (!device) return device.error();
  return create_hybrid_forward(model, std::move(*device), options, notes);
}

Expected<std::unique_ptr<ForwardPass>> create_hybrid_forward(const Model& model,
                                                             std::unique_ptr<GpuStepDevice> device,
                                                             const ForwardOptions& options,
                                                             std::vector<std::string>* notes) {
  HETMOE_RETURN_IF_ERROR(check_gpu_kv_types(options));
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  // The CPU experts run on the pinned workers of the thread layout (runtime/exec/worker_pool.h), in one arena: with
  // several NUMA nodes it spans them (the node sharding of the CPU path is not done for the hybrid's experts).
  auto pool = WorkerPool::create_for_machine(options.num_threads, options.thread_layout, /*one_arena=*/true);
  if (!pool) return pool.error();
  if (notes && (*pool)->layout().nodes.size() > 1)
    notes->push_back(fmt::format("hybrid: the CPU experts run in one arena over {} NUMA nodes (not sharded by node)",
                                 (*pool)->layout().nodes.size()));
  HybridForwardOptions hybrid;
  hybrid.num_threads = options.num_threads;
  hybrid.arena = &(*pool)->arena(0);
  hybrid.arena_owner = std::shared_ptr<WorkerPool>(std::move(*pool));
  hybrid.overlap = options.overlap;
  hybrid.expert_counts = options.expert_counts;
  auto forward = HybridForward::create(model, std::move(device), hybrid, cpu::kernel_table(*isa));
  if (!forward) return forward.error();
  return std::unique_ptr<ForwardPass>(std::move(*forward));
}

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options,
                                                      std::vector<std::string>* notes) {
  if (options.plan) HETMOE_RETURN_IF_ERROR(check_plan_shape(model, *options.plan));
  // The RAM tier: resident weights copied into memory in place, paged experts left in the mapping.
  if (options.plan && !options.use_reference) {
    HETMOE_ASSIGN_OR_RETURN(std::string tier, apply_ram_tier(model, *options.plan, options.ram_tier_progress));
    if (!tier.empty() && notes) notes->push_back(std::move(tier));
  }
  const bool gpu_plan = options.plan && options.plan->uses_gpu();
  if (gpu_plan && options.use_reference)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--reference runs on the CPU, but the plan places {} on the GPU",
                                  gpu_part(*options.plan)));
  if (gpu_plan && options.device == ForwardOptions::Device::kCpu)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--device cpu conflicts with the plan, which places {} on the GPU (make the plan "
                                  "with --vram-budget 0, or run with --device gpu or auto)",
                                  gpu_part(*options.plan)));
  if (has_repacked_weights(model) && (options.use_reference || gpu_plan))
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the model's weights were repacked for the CPU kernels (MXFP4_R16, Q8_0_R16) by "
                                  "an earlier CPU pass; {} needs the file's layout: load the model again",
                                  options.use_reference ? "--reference" : "the GPU"));
  if (!options.use_reference && options.device != ForwardOptions::Device::kCpu) {
    if (!options.plan)
      return make_error(ErrorCode::kInvalidArgument,
                        "the GPU path runs a placement Plan (ForwardOptions::plan); none was given");
    if (gpu_plan) {
      auto gpu = create_gpu_forward(model, options, notes);
      if (gpu) {
        // GPU-resident experts need no RAM: their pages of a mapped file are dropped once uploaded (a CPU read
        // after a migration faults them in again). A model copied into memory keeps them (anonymous pages cannot
        // be fetched again).
        const uint64_t released = model.file->release_pages(gpu_expert_ranges(model, *options.plan));
        if (released > 0 && notes)
          notes->push_back(fmt::format("released {:.2f} GiB of host pages of the experts uploaded to the GPU",
                                       static_cast<double>(released) / static_cast<double>(uint64_t{1} << 30)));
        return gpu;
      }
      if (options.device == ForwardOptions::Device::kGpu)
        return make_error(gpu.error().code, "--device gpu: " + gpu.error().to_string());
      if (notes) notes->push_back(fmt::format("{}; running on the CPU", gpu.error().to_string()));
    } else if (options.device == ForwardOptions::Device::kGpu) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--device gpu: the plan places nothing on the GPU{}",
                                    options.plan->notes.empty() ? std::string()
                                                                : " (" + options.plan->notes.front() + ")"));
    }
  }
  if (options.use_reference) {
    if (options.expert_counts)
      return make_error(ErrorCode::kUnsupported, "expert selection counting needs the CPU path, not --reference");
    auto ref = ReferenceForward::create(model, options.context_length, options.kv_type, options.v_type(),
                                        options.num_threads);
    if (!ref) return ref.error();
    return std::unique_ptr<ForwardPass>(std::make_unique<ReferenceForward>(std::move(*ref)));
  }
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  // The copy into memory is the moment to write the kernels' layout (before NUMA placement moves pages).
  const cpu::KernelTable& kernels = cpu::kernel_table(*isa);
  if (options.attention_bf16 && kernels.attn_tile_bf16_min_rows == std::numeric_limits<int64_t>::max() && notes)
    notes->push_back(fmt::format("--attention-bf16: the {} kernels have no bf16 products on this CPU (they need "
                                 "AVX512_BF16); attention stays f32",
                                 cpu::isa_name(*isa)));
  // A mapped model repacks what its RAM tier made resident (the paged experts keep the file's layout).
  if (options.repack_weights && (kernels.gemm_mxfp4_r16 != nullptr || kernels.gemm_q8_0_r16 != nullptr) &&
      model.file && (model.file->in_memory() || model.file->resident_bytes() > 0)) {
    const int threads = options.num_threads > 0 ? options.num_threads
                                                : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    // Not const: the CPU pass is the model's only reader from here on (the guard above refuses the others).
    const RepackTargets targets{.mxfp4_experts = kernels.gemm_mxfp4_r16 != nullptr,
                                .q8_0_matrices = kernels.gemm_q8_0_r16 != nullptr};
    const bool resident = !model.file->in_memory();
    HETMOE_ASSIGN_OR_RETURN(RepackResult repack,
                            resident ? repack_resident_weights_r16(const_cast<Model&>(model), threads, targets)
                                     : repack_weights_r16(const_cast<Model&>(model), threads, targets));
    if (repack.num_tensors + repack.num_experts > 0 && notes)
      notes->push_back(fmt::format("repacked {} tensors{} ({}; {:.2f} GB) into the {} kernels' layout in {:.1f} s "
                                   "(--no-repack keeps the file's{})",
                                   repack.num_tensors,
                                   resident ? fmt::format(" and {} resident expert matrices", repack.num_experts)
                                            : std::string(),
                                   targets.q8_0_matrices ? "MXFP4 experts, Q8_0 matrices" : "MXFP4 experts",
                                   static_cast<double>(repack.num_bytes) / 1e9, cpu::isa_name(*isa), repack.seconds,
                                   resident ? "; the experts paged from disk keep it" : ""));
  }
  CpuForwardOptions cpu_options;
  cpu_options.context_length = options.context_length;
  cpu_options.kv_type = options.kv_type;
  cpu_options.kv_type_v = options.kv_type_v;
  cpu_options.num_threads = options.num_threads;
  cpu_options.max_batch_tokens = options.max_batch_tokens;
  cpu_options.rollback_slots = options.rollback_slots;
  cpu_options.attention_bf16 = options.attention_bf16;
  // Pinned workers, one arena per NUMA node; with several nodes, experts are sharded over the nodes' memory and run
  // in their node's arena (runtime/exec/worker_pool.h).
  auto pool = WorkerPool::create_for_machine(options.num_threads, options.thread_layout, /*one_arena=*/false);
  if (!pool) return pool.error();
  std::shared_ptr<WorkerPool> shared_pool = std::move(*pool);
  cpu_options.arena = &shared_pool->arena(0);
  if (shared_pool->num_arenas() > 1) {
    if (options.numa_policy == NumaPolicy::kInterleave && notes)
      notes->push_back("numa.policy = \"interleave\": page interleaving is not implemented; the experts are sharded "
                       "over the nodes without moving their pages (as \"none\")");
    auto expert_node = place_experts_on_nodes(model, shared_pool->layout(),
                                              /*bind_memory=*/options.numa_policy == NumaPolicy::kLocal);
    if (!expert_node) return expert_node.error();
    cpu_options.expert_node = std::move(*expert_node);
    for (int n = 0; n < shared_pool->num_arenas(); ++n) cpu_options.node_arenas.push_back(&shared_pool->arena(n));
  }
  cpu_options.arena_owner = std::move(shared_pool);
  cpu_options.expert_counts = options.expert_counts;
  auto cpu_forward = CpuForward::create(model, cpu_options, cpu::kernel_table(*isa));
  if (!cpu_forward) return cpu_forward.error();
  return std::unique_ptr<ForwardPass>(std::move(*cpu_forward));
}

Expected<std::unique_ptr<MultiSequenceForward>> create_multi_forward(const Model& model, const ForwardOptions& options,
                                                                     std::unique_ptr<ForwardPass> first,
                                                                     uint32_t num_slots) {
  if (!first || num_slots == 0)
    return make_error(ErrorCode::kInvalidArgument, "a multi-sequence forward needs a first pass and at least one slot");
  if (dynamic_cast<CpuForward*>(first.get())) {
    std::unique_ptr<CpuForward> cpu(static_cast<CpuForward*>(first.release()));
    auto multi = CpuMultiForward::create(std::move(cpu), num_slots);
    if (!multi) return multi.error();
    return std::unique_ptr<MultiSequenceForward>(std::move(*multi));
  }
  std::vector<std::unique_ptr<ForwardPass>> slots;
  slots.push_back(std::move(first));
  for (uint32_t s = 1; s < num_slots; ++s) {
    auto forward = create_forward(model, options);
    if (!forward) return make_error(forward.error().code, fmt::format("slot {}: {}", s, forward.error().to_string()));
    slots.push_back(std::move(*forward));
  }
  auto multi = SequentialMultiForward::create(std::move(slots));
  if (!multi) return multi.error();
  return std::unique_ptr<MultiSequenceForward>(std::move(*multi));
}

std::string forward_path_name(const ForwardOptions& options, const ForwardPass* forward) {
  if (options.use_reference) return "reference";
  auto isa = cpu::selected_isa();
  const std::string cpu_name = std::string("cpu ") + (isa ? cpu::isa_name(*isa) : "?");
  if (const auto* hybrid = dynamic_cast<const HybridForward*>(forward))
    return hybrid->gpu_only() ? "gpu" : "gpu + " + cpu_name;  // attention on the GPU: attention_bf16 does nothing
  // The CPU pass's attention tiles in bf16.
  const bool bf16_tiles = isa && options.attention_bf16 &&
                          cpu::kernel_table(*isa).attn_tile_bf16_min_rows != std::numeric_limits<int64_t>::max();
  const std::string cpu_pass = bf16_tiles ? cpu_name + " bf16-attn" : cpu_name;
  if (forward) return cpu_pass;
  switch (options.device) {
    case ForwardOptions::Device::kCpu: return cpu_pass;
    case ForwardOptions::Device::kGpu: return "gpu + " + cpu_name;
    case ForwardOptions::Device::kAuto: return "auto (gpu when usable) + " + cpu_name;
  }
  return cpu_name;
}

}  // namespace hetmoe
