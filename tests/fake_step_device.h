#pragma once
// A GpuStepDevice that runs on the host with the scalar reference kernels (f32 activations, an f16 or quantized KV
// cache), for testing the hybrid step's orchestration without a GPU. The expert part runs on its own thread, like
// work on a CUDA stream: enqueue_experts() returns at once and enqueue_combine() waits for it. Tests only.

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "cpu_kernels/reference.h"
#include "runtime/backend/device_plan.h"
#include "runtime/exec/hybrid_step.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe::test {

class FakeStepDevice final : public GpuStepDevice {
 public:
  /// Resident experts from plan.slot_of_expert. KV cache of kv_type (f16 by default; q8_0 / q4_0 as the GPU keeps
  /// them) of `context` positions plus `rollback` ring slots; steps of up to max_batch tokens (their tokens are run
  /// one after the other inside each call).
  FakeStepDevice(const Model& model, const DevicePlan& plan, uint32_t context, uint32_t rollback = 0,
                 uint32_t max_batch = 1, KvCacheType kv_type = KvCacheType::kF16)
      : model_(&model), hp_(model.hparams), slot_of_expert_(plan.slot_of_expert), rollback_(rollback),
        max_batch_(max_batch), kv_(std::move(*KvCache::create(model.hparams, context, kv_type, rollback))) {
    const size_t D = hp_.hidden_dim, B = max_batch, K = hp_.num_experts_used;
    x_.resize(B * D);
    xb_.resize(B * D);
    q_.resize(hp_.q_dim());
    k_.resize(hp_.kv_dim());
    v_.resize(hp_.kv_dim());
    attn_out_.resize(hp_.q_dim());
    proj_.resize(D);
    expert_out_.resize(D);
    scores_.resize(context + rollback + 1);
    kv_row_.resize(hp_.head_dim);
    router_.resize(hp_.num_experts);
    order_.resize(hp_.num_experts);
    ids_.resize(B * K);
    layer_ids_.resize(static_cast<size_t>(hp_.num_layers) * B * K);
    weights_.resize(B * K);
    staged_hidden_.resize(B * D);
    staged_ids_.resize(B * K);
    staged_weights_.resize(B * K);
    embedding_.resize(B * D);
    cpu_partial_.resize(B * D);
    device_partial_.resize(B * D);
    gate_.resize(hp_.expert_ffn_dim);
    up_.resize(hp_.expert_ffn_dim);
  }
  ~FakeStepDevice() override {
    if (experts_thread_.joinable()) experts_thread_.join();
  }

  /// Called on the expert thread when the layer's device experts start and just before they end (with whether the
  /// step's selection has CPU experts); a test may block in before_experts_end to check that the CPU experts start
  /// while the device's are still running.
  std::function<void(uint32_t)> on_experts_begin;
  std::function<void(uint32_t, bool)> before_experts_end;
  int num_router_waits = 0;
  int fail_at_layer = -1;  // enqueue_attention_router of this layer answers a kIo error (a failed kernel)
  std::vector<uint32_t> step_sizes;  // num_tokens of every begin_step

  bool expert_resident(uint32_t l, int32_t e) const override { return slot_of_expert_[l][static_cast<size_t>(e)] >= 0; }
  bool all_experts_resident(uint32_t l) const override {
    return std::all_of(slot_of_expert_[l].begin(), slot_of_expert_[l].end(), [](int32_t s) { return s >= 0; });
  }
  uint32_t context_length() const override { return kv_.context_length(); }
  uint32_t rollback_slots() const override { return rollback_; }
  uint32_t max_batch_tokens() const override { return max_batch_; }
  float* embedding_staging() override { return embedding_.data(); }
  float* cpu_partial_staging() override { return cpu_partial_.data(); }

  Status begin_step(uint32_t first_pos, uint32_t num_tokens) override {
    first_pos_ = first_pos;
    num_tokens_ = num_tokens;
    step_sizes.push_back(num_tokens);
    std::copy(embedding_.begin(), embedding_.begin() + static_cast<long>(num_tokens) * hp_.hidden_dim, x_.begin());
    return {};
  }

  Status enqueue_attention_router(uint32_t l, bool stage_to_host) override {
    if (static_cast<int>(l) == fail_at_layer)
      return make_error(ErrorCode::kIo, "layer " + std::to_string(l) + ": attention_decode: an illegal memory access");
    const LayerWeights& w = model_->layers[l];
    const uint32_t D = hp_.hidden_dim, K = hp_.num_experts_used;
    for (uint32_t t = 0; t < num_tokens_; ++t) attention(l, t);
    for (uint32_t t = 0; t < num_tokens_; ++t) {
      float* xb = &xb_[static_cast<size_t>(t) * D];
      ref::rms_norm(&x_[static_cast<size_t>(t) * D], w.post_attn_norm.data(), xb, D, hp_.rms_eps);
      matvec(w.router, 0, xb, w.router_bias.data(), router_.data());
      std::iota(order_.begin(), order_.end(), 0);
      std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) { return router_[a] > router_[b]; });
      for (uint32_t j = 0; j < K; ++j) {
        ids_[t * K + j] = order_[j];
        weights_[t * K + j] = router_[static_cast<size_t>(order_[j])];
      }
      ref::softmax(&weights_[t * K], K);
    }
    std::copy(ids_.begin(), ids_.end(), layer_ids_.begin() + static_cast<long>(l) * static_cast<long>(ids_.size()));
    if (stage_to_host) {
      staged_hidden_ = xb_;
      staged_ids_ = ids_;
      staged_weights_ = weights_;
    }
    return {};
  }

  Expected<RouterStaging> wait_router(uint32_t) override {
    ++num_router_waits;
    return RouterStaging{staged_hidden_.data(), staged_ids_.data(), staged_weights_.data()};
  }

  Status enqueue_experts(uint32_t l) override {
    experts_thread_ = std::thread([this, l] {
      if (on_experts_begin) on_experts_begin(l);
      const LayerWeights& w = model_->layers[l];
      const uint32_t D = hp_.hidden_dim, F = hp_.expert_ffn_dim, K = hp_.num_experts_used;
      std::fill(device_partial_.begin(), device_partial_.end(), 0.0f);
      bool cpu_part = false;
      for (uint32_t t = 0; t < num_tokens_; ++t) {
        const float* xb = &xb_[static_cast<size_t>(t) * D];
        float* out = &device_partial_[static_cast<size_t>(t) * D];
        for (uint32_t j = 0; j < K; ++j) {
          if (!expert_resident(l, ids_[t * K + j])) {
            cpu_part = true;
            continue;
          }
          const auto e = static_cast<uint64_t>(ids_[t * K + j]);
          matvec(w.gate_exps, e, xb, &w.gate_bias[e * F], gate_.data());
          matvec(w.up_exps, e, xb, &w.up_bias[e * F], up_.data());
          ref::swiglu_oai(gate_.data(), up_.data(), gate_.data(), F);
          matvec(w.down_exps, e, gate_.data(), &w.down_bias[e * D], expert_out_.data());
          for (uint32_t i = 0; i < D; ++i) out[i] += weights_[t * K + j] * expert_out_[i];
        }
      }
      if (before_experts_end) before_experts_end(l, cpu_part);
    });
    return {};
  }

  Status enqueue_combine(uint32_t, bool with_cpu_part) override {
    experts_thread_.join();
    for (size_t i = 0; i < static_cast<size_t>(num_tokens_) * hp_.hidden_dim; ++i)
      x_[i] += device_partial_[i] + (with_cpu_part ? cpu_partial_[i] : 0.0f);
    return {};
  }

  void set_expert_id_staging(bool on) override { expert_id_staging = on; }
  const int32_t* step_expert_ids(uint32_t l) const override { return &layer_ids_[static_cast<size_t>(l) * ids_.size()]; }
  bool expert_id_staging = false;

  Status finish_step(std::span<float> logits_out) override {
    if (logits_out.empty()) return {};
    const float* x_last = &x_[static_cast<size_t>(num_tokens_ - 1) * hp_.hidden_dim];
    ref::rms_norm(x_last, model_->output_norm.data(), xb_.data(), hp_.hidden_dim, hp_.rms_eps);
    matvec(model_->output, 0, xb_.data(), nullptr, logits_out.data());
    return {};
  }

 private:
  void matvec(const WeightView& w, uint64_t expert_idx, const float* x, const float* bias, float* y) {
    for (uint64_t n = 0; n < w.num_rows; ++n) {
      const float dot = ref::dot_row(w.type, w.row(n, expert_idx), x, static_cast<int64_t>(w.num_cols));
      y[n] = bias ? dot + bias[n] : dot;
    }
  }

  // gpt-oss-spec.md §3 steps 1–5 for token t of the step, as runtime/exec/forward_reference.cpp.
  void attention(uint32_t l, uint32_t t) {
    const LayerWeights& w = model_->layers[l];
    const uint32_t HD = hp_.head_dim, D = hp_.hidden_dim;
    const uint32_t pos = first_pos_ + t;
    float* x = &x_[static_cast<size_t>(t) * D];
    float* xb = &xb_[static_cast<size_t>(t) * D];
    ref::rms_norm(x, w.attn_norm.data(), xb, D, hp_.rms_eps);
    matvec(w.wq, 0, xb, w.bq.data(), q_.data());
    matvec(w.wk, 0, xb, w.bk.data(), k_.data());
    matvec(w.wv, 0, xb, w.bv.data(), v_.data());
    const ref::RopeYarnParams rope = rope_params(hp_);
    std::vector<float> cos_tab(HD / 2), sin_tab(HD / 2);
    ref::rope_yarn_cos_sin(rope, pos, cos_tab.data(), sin_tab.data());
    for (uint32_t h = 0; h < hp_.num_heads; ++h) ref::rope_neox_apply(&q_[h * HD], rope.num_rot_dims, cos_tab.data(), sin_tab.data());
    for (uint32_t g = 0; g < hp_.num_kv_heads; ++g) ref::rope_neox_apply(&k_[g * HD], rope.num_rot_dims, cos_tab.data(), sin_tab.data());
    kv_.store(l, pos, k_.data(), v_.data());
    const uint32_t first = kv_.first_visible_position(l, pos);
    const uint32_t num_keys = pos - first + 1;
    const uint32_t group = hp_.num_heads / hp_.num_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
    for (uint32_t h = 0; h < hp_.num_heads; ++h) {
      const float* qh = &q_[h * HD];
      const float sink = w.sinks[h];
      float max_s = sink;
      for (uint32_t j = 0; j < num_keys; ++j) {
        kv_.load_k(l, first + j, h / group, kv_row_.data());
        double dot = 0.0;
        for (uint32_t i = 0; i < HD; ++i) dot += static_cast<double>(qh[i]) * kv_row_[i];
        scores_[j] = static_cast<float>(dot) * scale;
        max_s = std::max(max_s, scores_[j]);
      }
      double z = std::exp(static_cast<double>(sink - max_s));
      for (uint32_t j = 0; j < num_keys; ++j) {
        scores_[j] = std::exp(scores_[j] - max_s);
        z += scores_[j];
      }
      float* out = &attn_out_[h * HD];
      std::fill(out, out + HD, 0.0f);
      for (uint32_t j = 0; j < num_keys; ++j) {
        kv_.load_v(l, first + j, h / group, kv_row_.data());
        const auto p = static_cast<float>(scores_[j] / z);
        for (uint32_t i = 0; i < HD; ++i) out[i] += p * kv_row_[i];
      }
    }
    matvec(w.wo, 0, attn_out_.data(), w.bo.data(), proj_.data());
    for (uint32_t i = 0; i < D; ++i) x[i] += proj_[i];
  }

  const Model* model_;
  ModelHparams hp_;
  std::vector<std::vector<int32_t>> slot_of_expert_;  // (num_layers, num_experts)
  uint32_t rollback_ = 0;
  uint32_t max_batch_ = 1;
  KvCache kv_;
  uint32_t first_pos_ = 0;
  uint32_t num_tokens_ = 0;
  std::thread experts_thread_;
  std::vector<float> x_, xb_;                 // (B, hidden_dim) residual stream, normed input
  std::vector<float> q_, k_, v_, attn_out_;   // (q_dim), (kv_dim), (kv_dim), (q_dim) one token
  std::vector<float> proj_;                   // (hidden_dim) attention projection (main thread)
  std::vector<float> expert_out_;             // (hidden_dim) one expert's output (expert thread)
  std::vector<float> scores_;                 // (keys)
  std::vector<float> kv_row_;                 // (head_dim)
  std::vector<float> router_;                 // (num_experts)
  std::vector<int32_t> order_;                // (num_experts)
  std::vector<int32_t> ids_;                  // (B, top_k)
  std::vector<int32_t> layer_ids_;            // (num_layers, B, top_k) every layer's ids of the step
  std::vector<float> weights_;                // (B, top_k)
  std::vector<float> staged_hidden_;          // (B, hidden_dim) "pinned" copies
  std::vector<int32_t> staged_ids_;           // (B, top_k)
  std::vector<float> staged_weights_;         // (B, top_k)
  std::vector<float> embedding_;              // (B, hidden_dim)
  std::vector<float> cpu_partial_;            // (B, hidden_dim)
  std::vector<float> device_partial_;         // (B, hidden_dim)
  std::vector<float> gate_, up_;              // (expert_ffn_dim)
};

}  // namespace hetmoe::test
