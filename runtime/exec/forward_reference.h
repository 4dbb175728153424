#pragma once
// The reference forward pass: plain, scalar, f32 activations, readable top to bottom like llama2.c's run.c.
// Exactly the math of gpt-oss-spec.md §3 (llama.cpp src/models/openai-moe-iswa.cpp): YaRN NEOX RoPE with
// llama.cpp's rounded ramp bounds, attention sinks, sliding window on even layers, router top-k then softmax,
// SwiGLU-OAI (clamp 7, alpha 1.702, +1), all biases. It is the oracle every fast path is checked against.
// The only concession to speed: rows of a matrix-vector product and heads of attention are split over
// oneTBB threads (the per-row math is unchanged).

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <tbb/task_arena.h>

#include "runtime/base/expected.h"
#include "runtime/backend/forward_pass.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// Experts chosen for one token in one layer (router output), kept for tests and statistics.
struct ExpertChoice {
  std::vector<int32_t> expert_idx;  // (num_experts_used) in descending router logit order
  std::vector<float> weight;        // (num_experts_used) softmax over the selected logits
};

class ReferenceForward final : public ForwardPass {
 public:
  /// Plans buffers and the KV cache for `context_length` positions. num_threads ≥ 1 (0 = all cores).
  /// Errors: KvCache::create's (context out of range).
  static Expected<ReferenceForward> create(const Model& model, uint32_t context_length, KvCacheType k_type,
                                           KvCacheType v_type, int num_threads);
  /// K and V of one type.
  static Expected<ReferenceForward> create(const Model& model, uint32_t context_length, KvCacheType kv_type,
                                           int num_threads) {
    return create(model, context_length, kv_type, kv_type, num_threads);
  }
  ReferenceForward(ReferenceForward&&) noexcept;
  ReferenceForward& operator=(ReferenceForward&&) noexcept;
  ~ReferenceForward();

  /// Runs one token at the next position (num_positions()) and writes logits_out[vocab_size] (f32, unnormalized
  /// log-probabilities). Pass an empty span to skip the output layer (prefill tokens whose logits are unused).
  /// Errors: kInvalidArgument if token_id is not in [0, vocab_size), the context is full, or logits_out has
  /// the wrong size.
  Status forward(int32_t token_id, std::span<float> logits_out) override;

  /// Tokens processed so far = the position of the next token.
  uint32_t num_positions() const override { return num_positions_; }
  uint32_t context_length() const override { return kv_.context_length(); }
  uint32_t vocab_size() const override { return model_->hparams.vocab_size; }
  /// Forgets all positions (the KV cache is overwritten from position 0).
  void reset() override { num_positions_ = 0; }
  /// Router decisions of the last token, per layer (num_layers).
  const std::vector<ExpertChoice>& last_expert_choices() const { return last_choices_; }
  const KvCache& kv_cache() const { return kv_; }

 private:
  ReferenceForward(const Model& model, KvCache kv, int num_threads);
  void attention_block(uint32_t layer_idx, uint32_t pos);
  void moe_block(uint32_t layer_idx);
  /// y[num_rows] = W·x (+ bias): W a matrix view (expert_idx for stacks), x[num_cols].
  void matvec(const WeightView& w, uint64_t expert_idx, const float* x, const float* bias, float* y);

  const Model* model_;
  KvCache kv_;
  std::unique_ptr<tbb::task_arena> arena_;
  uint32_t num_positions_ = 0;
  std::vector<ExpertChoice> last_choices_;  // (num_layers)

  // Activation buffers, allocated once.
  std::vector<float> x_;          // (hidden_dim) residual stream
  std::vector<float> xb_;         // (hidden_dim) normed input of a block
  std::vector<float> q_;          // (num_heads, head_dim)
  std::vector<float> k_;          // (num_kv_heads, head_dim)
  std::vector<float> v_;          // (num_kv_heads, head_dim)
  std::vector<float> attn_out_;   // (num_heads, head_dim)
  std::vector<float> proj_;       // (hidden_dim) output projection / expert output
  std::vector<float> rope_cos_;   // (head_dim / 2)
  std::vector<float> rope_sin_;   // (head_dim / 2)
  std::vector<float> scores_;     // (num_heads, context_length) attention logits, one row per head
  std::vector<float> kv_row_;     // (num_heads, head_dim) scratch for one K or V row, per head
  std::vector<float> router_;     // (num_experts)
  std::vector<int32_t> router_order_;  // (num_experts) expert indices sorted by router logit
  std::vector<float> gate_;       // (expert_ffn_dim)
  std::vector<float> up_;         // (expert_ffn_dim)
  std::vector<float> moe_out_;    // (hidden_dim) weighted sum of expert outputs
};

}  // namespace hetmoe
