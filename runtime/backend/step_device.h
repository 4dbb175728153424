#pragma once
// The device half of the hybrid step (runtime/exec/hybrid_step.h), declared below both the executor and
// gpu_kernels/: gpu_kernels/cuda_step_device.h implements it with CUDA, tests/fake_step_device.h on the host with
// the reference kernels, and runtime/backend/gpu_backend.h creates the CUDA one.

#include <cstdint>
#include <span>

#include "runtime/base/expected.h"

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

  /// Expert selection counting: while on, every layer's top-k ids of a step are copied to host staging (with the
  /// router output where the layer has CPU experts, else on their own), readable after finish_step. Off by default.
  virtual void set_expert_id_staging(bool on) = 0;
  /// After finish_step, with staging on: the ids (num_tokens, num_experts_used) int32 layer ℓ's router chose in the
  /// last step (as RouterStaging::expert_ids), valid until the next begin_step.
  virtual const int32_t* step_expert_ids(uint32_t layer_idx) const = 0;
};

}  // namespace hetmoe
