#include "runtime/backend/gpu_backend.h"

#include <fmt/format.h>

#include <algorithm>

#include "gpu_kernels/cuda_device.h"
#include "gpu_kernels/cuda_step_device.h"
#include "gpu_kernels/device_runtime.h"
#include "gpu_kernels/ops.h"
#include "runtime/backend/device_plan.h"

namespace hetmoe::gpu {

Expected<std::unique_ptr<GpuStepDevice>> create_step_device(const Model& model, const StepDeviceOptions& options,
                                                            std::vector<std::string>* notes) {
  auto devices = list_devices();
  if (!devices) return make_error(ErrorCode::kUnsupported, "no usable GPU (" + devices.error().message + ")");
  if (devices->empty())
    return make_error(ErrorCode::kUnsupported, "no GPU found (no CUDA device or no NVIDIA driver)");
  if (options.gpu_idx < 0 || static_cast<size_t>(options.gpu_idx) >= devices->size())
    return make_error(ErrorCode::kInvalidArgument, fmt::format("GPU {} does not exist ({} CUDA device(s) found)",
                                                               options.gpu_idx, devices->size()));
  const DeviceInfo& info = (*devices)[static_cast<size_t>(options.gpu_idx)];
  if (info.compute_major * 10 + info.compute_minor < 75)
    return make_error(ErrorCode::kUnsupported, fmt::format("GPU {} ({}) has compute capability {}.{}; hetmoe needs 7.5 "
                                                           "or newer", info.device_idx, info.name, info.compute_major,
                                                           info.compute_minor));
  if (!options.plan)
    return make_error(ErrorCode::kInvalidArgument,
                      "the GPU pass runs a placement Plan (ForwardOptions::plan); none was given");
  auto gpu_experts = gpu_experts_of_plan(*options.plan, model.hparams);
  if (!gpu_experts) return gpu_experts.error();
  HETMOE_RETURN_IF_ERROR(cuda_status(cudaSetDevice(options.gpu_idx), "cudaSetDevice"));
  uint64_t budget = options.vram_budget_bytes;
  if (budget == 0) {
    auto free_budget = default_vram_budget(options.gpu_idx, kDefaultVramReserveBytes);
    if (!free_budget) return free_budget.error();
    budget = *free_budget;
  }

  const ModelHparams& hp = model.hparams;
  if (options.context_length == 0 || options.context_length > hp.context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("context length {} is out of range (expected 1..{}, the model's context_length)",
                                  options.context_length, hp.context_length));
  DevicePlanOptions plan_options;
  plan_options.vram_budget_bytes = budget;
  plan_options.context_length = options.context_length;
  // Prefill steps of up to max_batch_tokens (the sliding rings get as many extra slots, as the CPU path's).
  const uint32_t max_batch = std::clamp<uint32_t>(options.max_batch_tokens, 1, std::min(512u, options.context_length));
  plan_options.max_batch_tokens = max_batch;
  plan_options.extra_sliding_slots = max_batch - 1 + options.rollback_slots;
  plan_options.k_type = options.k_type;
  plan_options.v_type = options.v_type;
  plan_options.gpu_experts = std::move(*gpu_experts);
  plan_options.attention_scratch_floats =
      attention_scratch_floats(1, hp.num_heads, hp.head_dim, options.context_length);
  plan_options.moe_scratch_floats = moe_scratch_floats(max_batch, hp.num_experts_used, hp.expert_ffn_dim, hp.hidden_dim);
  plan_options.gemm_scratch_bytes = prefill_gemm_scratch_bytes(hp, max_batch);
  auto plan = plan_device_memory(describe_for_device(model), plan_options);
  if (!plan) return plan.error();
  // ops.h limits, checked before anything is allocated: an unsupported model is one clear error (and --device auto
  // falls back to the CPU).
  if (hp.head_dim != 32 && hp.head_dim != 64 && hp.head_dim != 128)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the CUDA attention kernels support head sizes 32, 64 and 128; this model has {}",
                                  hp.head_dim));
  if (hp.hidden_dim % 32 != 0 || hp.q_dim() % 32 != 0 || hp.expert_ffn_dim % 32 != 0 || hp.num_experts > 256)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the CUDA kernels need hidden ({}), q ({}) and expert FFN ({}) sizes that are "
                                  "multiples of 32 and at most 256 experts ({})",
                                  hp.hidden_dim, hp.q_dim(), hp.expert_ffn_dim, hp.num_experts));
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    if (w.up_exps.type != w.gate_exps.type || w.down_exps.type != w.gate_exps.type ||
        w.gate_exps.type != model.layers[0].gate_exps.type)
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("layer {}: the CUDA expert kernels need gate, up and down experts of one type in "
                                    "every layer (found {}, {}, {})",
                                    l, tensor_type_name(static_cast<uint32_t>(w.gate_exps.type)),
                                    tensor_type_name(static_cast<uint32_t>(w.up_exps.type)),
                                    tensor_type_name(static_cast<uint32_t>(w.down_exps.type))));
  }
  const bool gpu_only = plan->num_gpu_experts_total() == static_cast<uint64_t>(hp.num_layers) * hp.num_experts;
  if (notes) {
    auto free_bytes = device_free_bytes(options.gpu_idx);
    notes->push_back(fmt::format("GPU {}: {} (compute {}.{}, {} free); {} pass: {}", info.device_idx, info.name,
                                 info.compute_major, info.compute_minor,
                                 free_bytes ? format_byte_size(*free_bytes) : std::string("?"),
                                 gpu_only ? "GPU-only" : "hybrid", plan->summary()));
    for (const std::string& n : plan->notes) notes->push_back(n);
    if (options.plan->dynamic.enabled)
      notes->push_back(fmt::format("dynamic placement (re-plan every {} tokens) is in the plan but not executed yet: "
                                   "the GPU experts stay where the plan put them",
                                   options.plan->dynamic.replan_interval_tokens));
  }
  auto device = CudaStepDevice::create(model, std::move(*plan), options.gpu_idx, options.context_length,
                                       options.rollback_slots, max_batch, notes);
  if (!device) return device.error();
  return std::unique_ptr<GpuStepDevice>(std::move(*device));
}

}  // namespace hetmoe::gpu
