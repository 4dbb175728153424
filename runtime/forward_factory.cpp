#include "runtime/forward_factory.h"

#include <fmt/format.h>

#include "gpu_kernels/gpu_forward.h"
#include "runtime/forward_cpu.h"
#include "runtime/forward_reference.h"
#include "runtime/hybrid_step.h"
#include "runtime/worker_pool.h"

namespace hetmoe {

namespace {

/// The plan must be for this model and, as only CPU paths exist, keep everything on the CPU.
Status check_plan(const Model& model, const placement::Plan& plan) {
  const ModelHparams& hp = model.hparams;
  if (plan.num_layers != hp.num_layers || plan.num_experts != hp.num_experts || plan.layers.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the plan is for {} layers × {} experts, the model has {} × {}", plan.num_layers,
                                  plan.num_experts, hp.num_layers, hp.num_experts));
  if (plan.uses_gpu())
    return make_error(ErrorCode::kUnsupported,
                      "the plan places weights on a GPU, but this forward path runs on the CPU only; make the plan "
                      "with --vram-budget 0");
  return {};
}

}  // namespace


Expected<ForwardOptions::Device> parse_device(std::string_view text) {
  if (text == "cpu") return ForwardOptions::Device::kCpu;
  if (text == "gpu") return ForwardOptions::Device::kGpu;
  if (text == "auto") return ForwardOptions::Device::kAuto;
  return make_error(ErrorCode::kInvalidArgument, fmt::format("--device {}: expected cpu, gpu or auto", text));
}

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options,
                                                      std::vector<std::string>* notes) {
  if (options.plan) HETMOE_RETURN_IF_ERROR(check_plan(model, *options.plan));
  if (!options.use_reference && options.device != ForwardOptions::Device::kCpu) {
    auto gpu = gpu::create_gpu_forward(model, options, notes);
    if (gpu) return gpu;
    if (options.device == ForwardOptions::Device::kGpu)
      return make_error(gpu.error().code, "--device gpu: " + gpu.error().to_string());
    if (notes) notes->push_back(fmt::format("{}; running on the CPU", gpu.error().to_string()));
  }
  if (options.use_reference) {
    if (options.expert_counts)
      return make_error(ErrorCode::kUnsupported, "expert selection counting needs the CPU path, not --reference");
    auto ref = ReferenceForward::create(model, options.context_length, options.kv_type, options.num_threads);
    if (!ref) return ref.error();
    return std::unique_ptr<ForwardPass>(std::make_unique<ReferenceForward>(std::move(*ref)));
  }
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  CpuForwardOptions cpu_options;
  cpu_options.context_length = options.context_length;
  cpu_options.kv_type = options.kv_type;
  cpu_options.num_threads = options.num_threads;
  cpu_options.max_batch_tokens = options.max_batch_tokens;
  cpu_options.rollback_slots = options.rollback_slots;
  // Pinned workers, one arena per NUMA node; with several nodes, experts are sharded over the nodes' memory and run
  // in their node's arena (runtime/worker_pool.h).
  auto pool = WorkerPool::create_for_machine(options.num_threads, options.thread_layout, /*one_arena=*/false);
  if (!pool) return pool.error();
  std::shared_ptr<WorkerPool> shared_pool = std::move(*pool);
  cpu_options.arena = &shared_pool->arena(0);
  if (shared_pool->num_arenas() > 1) {
    auto expert_node = place_experts_on_nodes(model, shared_pool->layout(), /*bind_memory=*/true);
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

std::string forward_path_name(const ForwardOptions& options, const ForwardPass* forward) {
  if (options.use_reference) return "reference";
  auto isa = cpu::selected_isa();
  const std::string cpu_name = std::string("cpu ") + (isa ? cpu::isa_name(*isa) : "?");
  if (const auto* hybrid = dynamic_cast<const HybridForward*>(forward))
    return hybrid->gpu_only() ? "gpu" : "gpu + " + cpu_name;
  if (forward) return cpu_name;
  switch (options.device) {
    case ForwardOptions::Device::kCpu: return cpu_name;
    case ForwardOptions::Device::kGpu: return "gpu + " + cpu_name;
    case ForwardOptions::Device::kAuto: return "auto (gpu when usable) + " + cpu_name;
  }
  return cpu_name;
}

}  // namespace hetmoe
