#pragma once
// The hybrid decode step (design.md "One decode step, hybrid"): for each layer ℓ the device computes attention and
// the router, hands the normed hidden state and the top-k (expert, weight) pairs to pinned host memory, computes the
// selected experts that are resident on it while the CPU pool computes the CPU-resident ones, then adds both partial
// sums and the residual. The step talks only to the GpuStepDevice interface (runtime/backend/step_device.h).
// With every expert resident the same step is the GPU-only forward pass (no host hand-off inside the token).

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include <tbb/task_arena.h>

#include "cpu_kernels/kernels.h"
#include "runtime/exec/cpu_experts.h"
#include "runtime/base/expected.h"
#include "runtime/backend/forward_pass.h"
#include "runtime/backend/step_device.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// Points of the step, reported to HybridForwardOptions::on_event (tests check the overlap; traces may use them).
enum class StepEvent {
  kDeviceExpertsEnqueued,
  kRouterReady,        // wait_router returned
  kCpuExpertsBegin,
  kCpuExpertsEnd,
  kCombineEnqueued,
};

struct HybridForwardOptions {
  int num_threads = 0;                 // CPU expert threads; 0 = all cores
  tbb::task_arena* arena = nullptr;    // a caller-configured arena (pinned workers), or nullptr for an own one
  std::shared_ptr<void> arena_owner;   // keeps `arena` alive (the WorkerPool of runtime/exec/worker_pool.h); optional
  /// true: the device's experts are enqueued before the host waits for the router output, so they run while the
  /// CPU computes its experts. false (--no-overlap): enqueued after the CPU experts, one after the other — for
  /// measuring what the overlap gains; the results are the same.
  bool overlap = true;
  /// Expert selection counts (num_layers, num_experts) to increment, one per selected (layer, expert) per token,
  /// from the device's staged ids (GpuStepDevice::set_expert_id_staging); nullptr: not counted. Relaxed atomic adds
  /// (std::atomic_ref), so another thread may read them meanwhile with std::atomic_ref loads.
  uint64_t* expert_counts = nullptr;
  /// Called on the decode thread at each StepEvent with the layer index; nullptr: none.
  std::function<void(StepEvent, uint32_t layer_idx)> on_event;
};

class HybridForward final : public ForwardPass {
 public:
  /// Errors: CpuExperts::create's; kInvalidArgument for a null device.
  static Expected<std::unique_ptr<HybridForward>> create(const Model& model, std::unique_ptr<GpuStepDevice> device,
                                                         const HybridForwardOptions& options,
                                                         const cpu::KernelTable& kernels);

  Status forward(int32_t token_id, std::span<float> logits_out) override;
  /// Prefill in steps of up to the device's max_batch_tokens(): attention, router and resident experts of the whole
  /// step on the device, the CPU-resident experts of the step on the CPU (grouped by expert).
  Status forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) override;
  uint32_t num_positions() const override { return num_positions_; }
  uint32_t context_length() const override { return device_->context_length(); }
  uint32_t vocab_size() const override { return model_->hparams.vocab_size; }
  void reset() override { num_positions_ = furthest_written_ = 0; }
  /// Allowed when (the furthest position count reached since reset) − num_positions ≤ the device's
  /// rollback_slots().
  Status truncate(uint32_t num_positions) override;

  GpuStepDevice& device() { return *device_; }
  /// True when every expert of every layer is resident on the device (no CPU part).
  bool gpu_only() const;

 private:
  HybridForward(const Model& model, std::unique_ptr<GpuStepDevice> device, CpuExperts cpu_experts,
                const HybridForwardOptions& options);
  /// One device step over token_ids (≤ max_batch_tokens, validated) at num_positions_.
  Status run_step(std::span<const int32_t> token_ids, std::span<float> last_logits);
  void emit(StepEvent event, uint32_t layer_idx) {
    if (on_event_) on_event_(event, layer_idx);
  }

  const Model* model_;
  std::unique_ptr<GpuStepDevice> device_;
  CpuExperts cpu_experts_;
  std::unique_ptr<tbb::task_arena> own_arena_;
  std::shared_ptr<void> arena_owner_;
  tbb::task_arena* arena_ = nullptr;
  bool overlap_ = true;
  uint64_t* expert_counts_ = nullptr;  // (num_layers, num_experts) or nullptr
  std::function<void(StepEvent, uint32_t)> on_event_;
  uint32_t num_positions_ = 0;
  uint32_t furthest_written_ = 0;   // most positions processed since reset (updated at truncate)
  std::vector<int32_t> cpu_ids_;     // (max_batch_tokens, num_experts_used) selected experts on the CPU, else −1
};

}  // namespace hetmoe
