#include "placement/traffic.h"

#include <algorithm>

namespace hetmoe::placement {
namespace {

uint64_t matrix_bytes(const WeightView& w) { return w.num_rows * w.row_bytes; }

}  // namespace

DecodeTraffic decode_traffic(const Model& model, uint32_t depth, KvCacheType kv_type) {
  const ModelHparams& hp = model.hparams;
  DecodeTraffic t;
  const uint64_t f = sizeof(float);
  t.dense_bytes += model.token_embd.row_bytes + matrix_bytes(model.output) + hp.hidden_dim * f;
  const uint64_t kv_row_bytes = KvCache::bytes_per_position(hp, kv_type);  // K and V of one position, one layer
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    t.dense_bytes += matrix_bytes(w.wq) + matrix_bytes(w.wk) + matrix_bytes(w.wv) + matrix_bytes(w.wo) +
                     matrix_bytes(w.router);
    t.dense_bytes += (w.attn_norm.size() + w.bq.size() + w.bk.size() + w.bv.size() + w.bo.size() + w.sinks.size() +
                      w.post_attn_norm.size() + w.router_bias.size()) * f;
    const uint64_t one_expert = matrix_bytes(w.gate_exps) + matrix_bytes(w.up_exps) + matrix_bytes(w.down_exps) +
                                (2ull * hp.expert_ffn_dim + hp.hidden_dim) * f;
    t.expert_bytes += hp.num_experts_used * one_expert;
    const uint64_t keys = hp.is_sliding(l) ? std::min<uint64_t>(depth + 1, hp.sliding_window) : depth + 1ull;
    t.kv_bytes += keys * kv_row_bytes;
  }
  return t;
}

}  // namespace hetmoe::placement
