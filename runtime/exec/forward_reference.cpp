#include "runtime/exec/forward_reference.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cpu_kernels/reference.h"
#include "runtime/model/weights_repack.h"

namespace hetmoe {

Expected<ReferenceForward> ReferenceForward::create(const Model& model, uint32_t context_length,
                                                    KvCacheType k_type, KvCacheType v_type, int num_threads) {
  if (has_repacked_weights(model))
    return make_error(ErrorCode::kUnsupported,
                      "the model's weights are repacked for the CPU kernels (MXFP4_R16, Q8_0_R16); the reference pass "
                      "needs the file's layout: load the model again");
  auto kv = KvCache::create(model.hparams, context_length, k_type, v_type);
  if (!kv) return kv.error();
  return ReferenceForward(model, std::move(*kv), num_threads);
}

ReferenceForward::ReferenceForward(const Model& model, KvCache kv, int num_threads)
    : model_(&model), kv_(std::move(kv)) {
  const ModelHparams& hp = model.hparams;
  arena_ = num_threads > 0 ? std::make_unique<tbb::task_arena>(num_threads) : std::make_unique<tbb::task_arena>();
  last_choices_.resize(hp.num_layers);
  x_.resize(hp.hidden_dim);
  xb_.resize(hp.hidden_dim);
  q_.resize(hp.q_dim());
  k_.resize(hp.kv_dim());
  v_.resize(hp.kv_dim());
  attn_out_.resize(hp.q_dim());
  proj_.resize(hp.hidden_dim);
  rope_cos_.resize(hp.head_dim / 2);
  rope_sin_.resize(hp.head_dim / 2);
  scores_.resize(static_cast<size_t>(hp.num_heads) * kv_.context_length());
  kv_row_.resize(hp.q_dim());
  router_.resize(hp.num_experts);
  router_order_.resize(hp.num_experts);
  gate_.resize(hp.expert_ffn_dim);
  up_.resize(hp.expert_ffn_dim);
  moe_out_.resize(hp.hidden_dim);
}

ReferenceForward::ReferenceForward(ReferenceForward&&) noexcept = default;
ReferenceForward& ReferenceForward::operator=(ReferenceForward&&) noexcept = default;
ReferenceForward::~ReferenceForward() = default;

void ReferenceForward::matvec(const WeightView& w, uint64_t expert_idx, const float* x, const float* bias, float* y) {
  tbb::parallel_for(tbb::blocked_range<uint64_t>(0, w.num_rows, 16), [&](const tbb::blocked_range<uint64_t>& r) {
    for (uint64_t n = r.begin(); n != r.end(); ++n) {
      const float dot = ref::dot_row(w.type, w.row(n, expert_idx), x, static_cast<int64_t>(w.num_cols));
      y[n] = bias ? dot + bias[n] : dot;
    }
  });
}

Status ReferenceForward::forward(int32_t token_id, std::span<float> logits_out) {
  const ModelHparams& hp = model_->hparams;
  if (token_id < 0 || static_cast<uint32_t>(token_id) >= hp.vocab_size)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("token id {} is out of range (vocabulary has {} tokens)", token_id, hp.vocab_size));
  if (num_positions_ >= kv_.context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the context is full ({} positions)", kv_.context_length()));
  if (!logits_out.empty() && logits_out.size() != hp.vocab_size)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("logits buffer has {} floats, expected {}", logits_out.size(), hp.vocab_size));
  const uint32_t pos = num_positions_;

  arena_->execute([&] {
    // Embedding: x = dequant(token_embd)[token]; no scaling.
    ref::dequantize_row(model_->token_embd.type, model_->token_embd.row(static_cast<uint64_t>(token_id)), x_.data(),
                        hp.hidden_dim);
    for (uint32_t l = 0; l < hp.num_layers; ++l) {
      attention_block(l, pos);
      moe_block(l);
    }
    if (!logits_out.empty()) {
      ref::rms_norm(x_.data(), model_->output_norm.data(), xb_.data(), hp.hidden_dim, hp.rms_eps);
      matvec(model_->output, 0, xb_.data(), nullptr, logits_out.data());
    }
  });
  ++num_positions_;
  return {};
}

void ReferenceForward::attention_block(uint32_t l, uint32_t pos) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];

  // 1. h = RMSNorm(x) ⊙ attn_norm
  ref::rms_norm(x_.data(), w.attn_norm.data(), xb_.data(), hp.hidden_dim, hp.rms_eps);

  // 2. q, k, v projections with biases
  matvec(w.wq, 0, xb_.data(), w.bq.data(), q_.data());
  matvec(w.wk, 0, xb_.data(), w.bk.data(), k_.data());
  matvec(w.wv, 0, xb_.data(), w.bv.data(), v_.data());

  // 3. YaRN RoPE, NEOX pairs (i, i + head_dim/2), on every q and k head
  const ref::RopeYarnParams rope = rope_params(hp);
  ref::rope_yarn_cos_sin(rope, pos, rope_cos_.data(), rope_sin_.data());
  for (uint32_t h = 0; h < hp.num_heads; ++h)
    ref::rope_neox_apply(&q_[h * hp.head_dim], rope.num_rot_dims, rope_cos_.data(), rope_sin_.data());
  for (uint32_t g = 0; g < hp.num_kv_heads; ++g)
    ref::rope_neox_apply(&k_[g * hp.head_dim], rope.num_rot_dims, rope_cos_.data(), rope_sin_.data());
  kv_.store(l, pos, k_.data(), v_.data());

  // 4. Attention with sinks over the visible positions [first, pos]: on sliding layers each query sees at most
  //    sliding_window keys including itself; on full layers every earlier position.
  const uint32_t first = kv_.first_visible_position(l, pos);
  const uint32_t num_keys = pos - first + 1;
  const uint32_t group = hp.num_heads / hp.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  tbb::parallel_for(uint32_t{0}, hp.num_heads, [&](uint32_t h) {
    const uint32_t g = h / group;
    const float* qh = &q_[h * hp.head_dim];
    float* kv_row = &kv_row_[h * hp.head_dim];
    float* s = &scores_[static_cast<size_t>(h) * kv_.context_length()];
    const float sink = w.sinks[h];  // a raw logit, not scaled
    float max_s = sink;
    for (uint32_t j = 0; j < num_keys; ++j) {
      kv_.load_k(l, first + j, g, kv_row);
      double dot = 0.0;
      for (uint32_t i = 0; i < hp.head_dim; ++i) dot += static_cast<double>(qh[i]) * kv_row[i];
      s[j] = static_cast<float>(dot) * scale;
      max_s = std::max(max_s, s[j]);
    }
    double z = std::exp(static_cast<double>(sink - max_s));
    for (uint32_t j = 0; j < num_keys; ++j) {
      s[j] = std::exp(s[j] - max_s);
      z += s[j];
    }
    float* out = &attn_out_[h * hp.head_dim];
    std::fill(out, out + hp.head_dim, 0.0f);
    for (uint32_t j = 0; j < num_keys; ++j) {
      kv_.load_v(l, first + j, g, kv_row);
      const float p = static_cast<float>(s[j] / z);
      for (uint32_t i = 0; i < hp.head_dim; ++i) out[i] += p * kv_row[i];
    }
  });

  // 5. Output projection with bias, residual add
  matvec(w.wo, 0, attn_out_.data(), w.bo.data(), proj_.data());
  for (uint32_t i = 0; i < hp.hidden_dim; ++i) x_[i] += proj_[i];
}

void ReferenceForward::moe_block(uint32_t l) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];

  // 6. u = RMSNorm(x) ⊙ post_attention_norm (the residual keeps un-normalized x)
  ref::rms_norm(x_.data(), w.post_attn_norm.data(), xb_.data(), hp.hidden_dim, hp.rms_eps);

  // 7. Router: logits = Wr·u + br; top-k by raw logit (ties: lower expert index first); softmax over the k.
  matvec(w.router, 0, xb_.data(), w.router_bias.data(), router_.data());
  std::vector<int32_t>& order = router_order_;
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return router_[a] > router_[b]; });
  ExpertChoice& choice = last_choices_[l];
  choice.expert_idx.assign(order.begin(), order.begin() + hp.num_experts_used);
  choice.weight.resize(hp.num_experts_used);
  for (uint32_t k = 0; k < hp.num_experts_used; ++k) choice.weight[k] = router_[choice.expert_idx[k]];
  ref::softmax(choice.weight.data(), hp.num_experts_used);

  // 8.–9. Each selected expert: SwiGLU-OAI(gate, up) → down, weighted sum into the residual.
  std::fill(moe_out_.begin(), moe_out_.end(), 0.0f);
  for (uint32_t k = 0; k < hp.num_experts_used; ++k) {
    const auto e = static_cast<uint64_t>(choice.expert_idx[k]);
    matvec(w.gate_exps, e, xb_.data(), &w.gate_bias[e * hp.expert_ffn_dim], gate_.data());
    matvec(w.up_exps, e, xb_.data(), &w.up_bias[e * hp.expert_ffn_dim], up_.data());
    ref::swiglu_oai(gate_.data(), up_.data(), gate_.data(), hp.expert_ffn_dim);
    matvec(w.down_exps, e, gate_.data(), &w.down_bias[e * hp.hidden_dim], proj_.data());
    for (uint32_t i = 0; i < hp.hidden_dim; ++i) moe_out_[i] += choice.weight[k] * proj_[i];
  }
  for (uint32_t i = 0; i < hp.hidden_dim; ++i) x_[i] += moe_out_[i];
}

}  // namespace hetmoe
