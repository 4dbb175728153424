#pragma once
// The GPU backend as the executor sees it: the executor (runtime/exec/forward_factory.h) creates the device half of
// the GPU pass through this declaration and runs it with the hybrid step; gpu_kernels/ defines it (cuda_backend.cpp
// with CUDA, cuda_backend_none.cpp without), so neither folder includes the other.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "placement/plan.h"
#include "runtime/backend/step_device.h"
#include "runtime/base/expected.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"

namespace hetmoe::gpu {

/// Reserve left free when no --vram-budget is given: the budget is the device's free memory minus this (the CUDA
/// context, cuBLAS workspaces, the display).
inline constexpr uint64_t kDefaultVramReserveBytes = 512ull << 20;

struct StepDeviceOptions {
  const placement::Plan* plan = nullptr;  // required; its GPU experts become resident
  uint32_t context_length = 8192;         // tokens (1..model context_length)
  uint32_t max_batch_tokens = 64;         // prefill tokens per step (clamped to 1..min(512, context_length))
  uint32_t rollback_slots = 0;            // how far truncate() may go back
  KvCacheType k_type = KvCacheType::kF16;  // KV cache types (kv_type.h): f16, q8_0 or q4_0 (the CUDA attention
  KvCacheType v_type = KvCacheType::kF16;  // kernels have no f32 reader)
  uint64_t vram_budget_bytes = 0;         // hard device memory limit; 0: free device memory minus the reserve
  int gpu_idx = 0;                        // CUDA device
};

/// Creates the device half of the GPU pass on options.gpu_idx for `model` (which must outlive it), executing
/// options.plan: the experts it puts on the GPU are resident (runtime/backend/device_plan.h lays them out under the
/// VRAM budget; any that do not fit run on the CPU, with a note). Appends to `notes` (optional) the device, the
/// placement summary and what stays on the CPU and why. The plan's dynamic policy is not executed yet.
/// Errors: kUnsupported "built without CUDA" / "no CUDA GPU found (…)" / a device older than sm_75 / shapes the
/// kernels do not support / an f32 KV cache, a plan that keeps a block's attention or the unembedding on the CPU
/// (gpu_experts_of_plan); kInvalidArgument for no plan, a plan of another model, a context out of range, a VRAM
/// budget the dense part does not fit in (plan_device_memory's message), a bad gpu_idx; kIo for a CUDA error (the
/// message carries cudaGetErrorString and the call).
Expected<std::unique_ptr<GpuStepDevice>> create_step_device(const Model& model, const StepDeviceOptions& options,
                                                            std::vector<std::string>* notes);

}  // namespace hetmoe::gpu
