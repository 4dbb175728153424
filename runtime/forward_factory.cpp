#include "runtime/forward_factory.h"

#include <fmt/format.h>

#include "runtime/forward_cpu.h"
#include "runtime/forward_reference.h"

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

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options) {
  if (options.plan) HETMOE_RETURN_IF_ERROR(check_plan(model, *options.plan));
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
  cpu_options.expert_counts = options.expert_counts;
  auto cpu_forward = CpuForward::create(model, cpu_options, cpu::kernel_table(*isa));
  if (!cpu_forward) return cpu_forward.error();
  return std::unique_ptr<ForwardPass>(std::move(*cpu_forward));
}

std::string forward_path_name(const ForwardOptions& options) {
  if (options.use_reference) return "reference";
  auto isa = cpu::selected_isa();
  return std::string("cpu ") + (isa ? cpu::isa_name(*isa) : "?");
}

}  // namespace hetmoe
