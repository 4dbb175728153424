#include "placement/traffic.h"

#include <fmt/format.h>

#include <algorithm>

namespace hetmoe::placement {
namespace {

uint64_t matrix_bytes(const WeightView& w) { return w.num_rows * w.row_bytes; }
uint64_t matrix_weights(const WeightView& w) { return w.num_rows * w.num_cols; }

}  // namespace

uint64_t ModelBytes::weight_bytes() const {
  uint64_t total = embedding_bytes + output_bytes;
  for (const LayerBytes& l : layers) total += l.dense_bytes() + static_cast<uint64_t>(num_experts) * l.expert_bytes;
  return total;
}

Expected<ModelBytes> model_bytes(const gguf::File& file, const ModelHparams& hp, KvCacheType kv_type) {
  auto tensor = [&](const std::string& name) -> Expected<const gguf::TensorInfo*> {
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (!t) return make_error(ErrorCode::kMissing, fmt::format("{}: tensor '{}' is missing", file.path(), name));
    return t;
  };
  ModelBytes b;
  const gguf::TensorInfo* embd = nullptr;
  HETMOE_ASSIGN_OR_RETURN(embd, tensor("token_embd.weight"));
  b.embedding_bytes = embd->num_bytes;
  b.embedding_row_bytes = embd->ne[1] > 0 ? embd->num_bytes / embd->ne[1] : 0;
  const gguf::TensorInfo* out = file.find_tensor("output.weight");
  if (!out) out = embd;  // tied embeddings
  const gguf::TensorInfo* out_norm = nullptr;
  HETMOE_ASSIGN_OR_RETURN(out_norm, tensor("output_norm.weight"));
  b.output_bytes = out->num_bytes + out_norm->num_bytes;
  b.output_weights = out->num_elements;
  b.kv_bytes_per_position = kv_bytes_per_position(hp, kv_type);
  b.num_experts = hp.num_experts;
  b.layers.resize(hp.num_layers);
  static constexpr const char* kAttention[] = {"attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight",
                                               "attn_k.bias", "attn_v.weight", "attn_v.bias", "attn_output.weight",
                                               "attn_output.bias", "attn_sinks.weight", "post_attention_norm.weight"};
  static constexpr const char* kAttentionMatrices[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight",
                                                       "attn_output.weight"};
  static constexpr const char* kRouter[] = {"ffn_gate_inp.weight", "ffn_gate_inp.bias"};
  static constexpr const char* kExperts[] = {"ffn_gate_exps.weight", "ffn_gate_exps.bias", "ffn_up_exps.weight",
                                             "ffn_up_exps.bias", "ffn_down_exps.weight", "ffn_down_exps.bias"};
  static constexpr const char* kExpertMatrices[] = {"ffn_gate_exps.weight", "ffn_up_exps.weight",
                                                    "ffn_down_exps.weight"};
  const uint64_t num_experts = std::max<uint32_t>(hp.num_experts, 1);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    LayerBytes& lb = b.layers[l];
    const auto name = [l](const char* suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    const gguf::TensorInfo* t = nullptr;
    for (const char* s : kAttention) {
      HETMOE_ASSIGN_OR_RETURN(t, tensor(name(s)));
      lb.attention_bytes += t->num_bytes;
    }
    for (const char* s : kAttentionMatrices) {
      HETMOE_ASSIGN_OR_RETURN(t, tensor(name(s)));
      lb.attention_weights += t->num_elements;
    }
    for (const char* s : kRouter) {
      HETMOE_ASSIGN_OR_RETURN(t, tensor(name(s)));
      lb.router_bytes += t->num_bytes;
    }
    for (const char* s : kExperts) {
      HETMOE_ASSIGN_OR_RETURN(t, tensor(name(s)));
      lb.expert_bytes += t->num_bytes / num_experts;
    }
    for (const char* s : kExpertMatrices) {
      HETMOE_ASSIGN_OR_RETURN(t, tensor(name(s)));
      lb.expert_weights += t->num_elements / num_experts;
    }
  }
  return b;
}

ModelBytes model_bytes(const Model& model, KvCacheType kv_type) {
  const ModelHparams& hp = model.hparams;
  const uint64_t f = sizeof(float);
  ModelBytes b;
  b.embedding_row_bytes = model.token_embd.row_bytes;
  b.embedding_bytes = matrix_bytes(model.token_embd);
  b.output_bytes = matrix_bytes(model.output) + model.output_norm.size() * f;
  b.output_weights = matrix_weights(model.output);
  b.kv_bytes_per_position = kv_bytes_per_position(hp, kv_type);
  b.num_experts = hp.num_experts;
  b.layers.resize(hp.num_layers);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    LayerBytes& lb = b.layers[l];
    lb.attention_bytes = matrix_bytes(w.wq) + matrix_bytes(w.wk) + matrix_bytes(w.wv) + matrix_bytes(w.wo) +
                         (w.attn_norm.size() + w.bq.size() + w.bk.size() + w.bv.size() + w.bo.size() +
                          w.sinks.size() + w.post_attn_norm.size()) * f;
    lb.attention_weights = matrix_weights(w.wq) + matrix_weights(w.wk) + matrix_weights(w.wv) + matrix_weights(w.wo);
    lb.router_bytes = matrix_bytes(w.router) + w.router_bias.size() * f;
    lb.expert_bytes = matrix_bytes(w.gate_exps) + matrix_bytes(w.up_exps) + matrix_bytes(w.down_exps) +
                      (2ull * hp.expert_ffn_dim + hp.hidden_dim) * f;
    lb.expert_weights = matrix_weights(w.gate_exps) + matrix_weights(w.up_exps) + matrix_weights(w.down_exps);
  }
  return b;
}

uint64_t kv_keys_read(const ModelHparams& hp, uint32_t layer_idx, uint32_t depth) {
  return hp.is_sliding(layer_idx) ? std::min<uint64_t>(depth + 1ull, hp.sliding_window) : depth + 1ull;
}

DecodeTraffic decode_traffic(const ModelBytes& b, const ModelHparams& hp, uint32_t depth) {
  DecodeTraffic t;
  t.dense_bytes += b.embedding_row_bytes + b.output_bytes;
  for (uint32_t l = 0; l < b.layers.size(); ++l) {
    t.dense_bytes += b.layers[l].dense_bytes();
    t.expert_bytes += hp.num_experts_used * b.layers[l].expert_bytes;
    t.kv_bytes += kv_keys_read(hp, l, depth) * b.kv_bytes_per_position;
  }
  return t;
}

DecodeTraffic decode_traffic(const Model& model, uint32_t depth, KvCacheType kv_type) {
  return decode_traffic(model_bytes(model, kv_type), model.hparams, depth);
}

}  // namespace hetmoe::placement
