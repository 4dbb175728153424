#include "runtime/forward_factory.h"

#include <fmt/format.h>

#include "gpu_kernels/gpu_forward.h"
#include "runtime/forward_cpu.h"
#include "runtime/forward_reference.h"
#include "runtime/hybrid_step.h"

namespace hetmoe {

Expected<ForwardOptions::Device> parse_device(std::string_view text) {
  if (text == "cpu") return ForwardOptions::Device::kCpu;
  if (text == "gpu") return ForwardOptions::Device::kGpu;
  if (text == "auto") return ForwardOptions::Device::kAuto;
  return make_error(ErrorCode::kInvalidArgument, fmt::format("--device {}: expected cpu, gpu or auto", text));
}

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options,
                                                      std::vector<std::string>* notes) {
  if (!options.use_reference && options.device != ForwardOptions::Device::kCpu) {
    auto gpu = gpu::create_gpu_forward(model, options, notes);
    if (gpu) return gpu;
    if (options.device == ForwardOptions::Device::kGpu)
      return make_error(gpu.error().code, "--device gpu: " + gpu.error().to_string());
    if (notes) notes->push_back(fmt::format("{}; running on the CPU", gpu.error().to_string()));
  }
  if (options.use_reference) {
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
