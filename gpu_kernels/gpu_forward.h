#pragma once
// The GPU forward pass: weights, KV cache and activations in one device arena planned by runtime/device_plan.h under
// a hard VRAM budget, the decode step of runtime/hybrid_step.h run by CudaStepDevice (gpu_kernels/cuda_step_device.h)
// — GPU-only when every expert fits, hybrid (cold experts on the CPU) otherwise. Defined in gpu_forward.cpp with
// CUDA and in gpu_forward_none.cpp without, so runtime/forward_factory.cpp can call it in every build.

#include <memory>
#include <string>
#include <vector>

#include "runtime/expected.h"
#include "runtime/forward_factory.h"
#include "runtime/forward_pass.h"
#include "runtime/model.h"

namespace hetmoe::gpu {

/// Reserve left free when no --vram-budget is given: the budget is the device's free memory minus this (the CUDA
/// context, cuBLAS workspaces, the display).
inline constexpr uint64_t kDefaultVramReserveBytes = 512ull << 20;

/// Creates the GPU (or hybrid) forward pass on options.gpu_idx for `model` (which must outlive it), executing
/// options.plan: the experts it puts on the GPU are resident (runtime/device_plan.h lays them out under the VRAM
/// budget; any that do not fit run on the CPU, with a note), the others run on the CPU. Appends to `notes` (optional)
/// the device, the placement summary and what stays on the CPU and why. The plan's dynamic policy is not executed
/// yet (expert migrations are the device runtime's next step).
/// Errors: kUnsupported "built without CUDA" / "no CUDA GPU found (…)" / a device older than sm_75, a plan that
/// keeps a block's attention or the unembedding on the CPU (gpu_experts_of_plan); kInvalidArgument for no plan, a
/// plan of another model, a VRAM budget the dense part does not fit in (plan_device_memory's message), a bad
/// gpu_idx; kIo for a CUDA error (the message carries cudaGetErrorString and the call).
Expected<std::unique_ptr<ForwardPass>> create_gpu_forward(const Model& model, const ForwardOptions& options,
                                                          std::vector<std::string>* notes);

}  // namespace hetmoe::gpu
