#pragma once
// The hybrid decode step (design.md "One decode step, hybrid"): for each layer ℓ the device computes attention and
// the router, hands the normed hidden state and the top-k (expert, weight) pairs to pinned host memory, computes the
// selected experts that are resident on it while the CPU pool computes the CPU-resident ones, then adds both partial
// sums and the residual. runtime/ talks to the GpuStepDevice interface only; gpu_kernels/cuda_step_device.h
// implements it with CUDA, tests/fake_step_device.h on the host with the reference kernels.
// With every expert resident the same step is the GPU-only forward pass (no host hand-off inside the token).

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include <tbb/task_arena.h>

#include "cpu_kernels/kernels.h"
#include "runtime/cpu_experts.h"
#include "runtime/expected.h"
#include "runtime/forward_pass.h"
#include "runtime/model.h"

namespace hetmoe {

/// A layer's router output for the tokens of the current step in host memory (pinned where the device could get
/// it), valid from wait_router() until the next enqueue_attention_router().
struct RouterStaging {
  const float* hidden = nullptr;        // (num_tokens, hidden_dim) post-attention-normed hidden states, f32
  const int32_t* expert_ids = nullptr;  // (num_tokens, num_experts_used) descending router logit
  const float* weights = nullptr;       // (num_tokens, num_experts_used) softmax over the selected logits
};

/// The device half of one step of num_tokens ≤ max_batch_tokens() consecutive tokens (1 in decode, a prefill chunk
/// otherwise). Calls for a step come in this order:
///   begin_step; per layer: enqueue_attention_router, enqueue_experts, [wait_router], enqueue_combine;
///   finish_step.
/// enqueue_* only enqueue work (asynchronous, no allocation); wait_router and finish_step block.
/// Host staging reuse: the CPU partial of layer ℓ is read by the device before the router output of layer ℓ+1 is
/// ready (stream order: combine ℓ → attention ℓ+1 → copy to host), so after wait_router(ℓ+1) the host may overwrite
/// cpu_partial_staging() again.
class GpuStepDevice {
 public:
  virtual ~GpuStepDevice() = default;

  /// Whether expert `expert_idx` of layer `layer_idx` is resident on the device (fixed at creation).
  virtual bool expert_resident(uint32_t layer_idx, int32_t expert_idx) const = 0;
  /// Whether every expert of the layer is resident: then the step skips the host hand-off for it.
  virtual bool all_experts_resident(uint32_t layer_idx) const = 0;
  /// Positions the device KV cache holds, and the spare sliding-ring slots (positions truncate may go back).
  virtual uint32_t context_length() const = 0;
  virtual uint32_t rollback_slots() const = 0;
  /// Most tokens of one step (activations and KV ring slots are sized for it), ≥ 1.
  virtual uint32_t max_batch_tokens() const = 0;

  /// Host buffer (max_batch_tokens, hidden_dim) f32 the caller fills with the step's embeddings before begin_step().
  virtual float* embedding_staging() = 0;
  /// Enqueues the upload of the embeddings as the residual stream of tokens at positions first_pos ..
  /// first_pos + num_tokens − 1 (< context; 1 ≤ num_tokens ≤ max_batch_tokens()).
  virtual Status begin_step(uint32_t first_pos, uint32_t num_tokens) = 0;
  /// Enqueues layer ℓ's attention block, post-attention norm and router (top-k, softmax); with `stage_to_host`
  /// also the copy of the normed hidden states and the top-k pairs to host staging, with an event.
  virtual Status enqueue_attention_router(uint32_t layer_idx, bool stage_to_host) = 0;
  /// Waits for that copy. Errors: the device's (a failed kernel or copy).
  virtual Expected<RouterStaging> wait_router(uint32_t layer_idx) = 0;
  /// Enqueues the selected experts of layer ℓ that are resident: device partial sums = Σ weight · expert(x) over
  /// them, per token (zero when none is resident).
  virtual Status enqueue_experts(uint32_t layer_idx) = 0;
  /// Host buffer (max_batch_tokens, hidden_dim) f32 for the CPU experts' partial sums of the current layer.
  virtual float* cpu_partial_staging() = 0;
  /// Enqueues x += device partial (+ the CPU partial, uploaded from cpu_partial_staging(), when with_cpu_part).
  virtual Status enqueue_combine(uint32_t layer_idx, bool with_cpu_part) = 0;
  /// Output norm and unembedding of the step's last token into logits_out (vocab_size) f32, then waits for the
  /// step's work; empty logits_out: only waits. Errors: the device's.
  virtual Status finish_step(std::span<float> logits_out) = 0;
};

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
  void reset() override { num_positions_ = 0; }
  /// Allowed when num_positions() − num_positions ≤ the device's rollback_slots().
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
  tbb::task_arena* arena_ = nullptr;
  std::function<void(StepEvent, uint32_t)> on_event_;
  uint32_t num_positions_ = 0;
  std::vector<int32_t> cpu_ids_;     // (max_batch_tokens, num_experts_used) selected experts on the CPU, else −1
};

}  // namespace hetmoe
