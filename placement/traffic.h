#pragma once
// Bytes a forward pass reads, the numerator of the memory roofline (design.md "Where the time goes"):
// decode tok/s ≤ bandwidth / bytes_read_per_token. One byte accounting (ModelBytes) serves the roofline of
// `hetmoe bench` and the cost model of the placement optimizer (placement/cost_model.h).

#include <cstdint>
#include <vector>

#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"

namespace hetmoe::placement {

/// Bytes (and weights, for FLOP counts) of one transformer block, as stored in the file.
struct LayerBytes {
  uint64_t attention_bytes = 0;   // attn_{q,k,v,output} weights and biases, sinks, attn_norm, post_attention_norm
  uint64_t router_bytes = 0;      // ffn_gate_inp weight and bias
  uint64_t expert_bytes = 0;      // ONE expert: its gate, up and down rows and their biases
  uint64_t attention_weights = 0; // elements of the four attention matrices (2 FLOP each per token)
  uint64_t expert_weights = 0;    // elements of one expert's three matrices (2 FLOP each per routed token)
  uint64_t dense_bytes() const { return attention_bytes + router_bytes; }
};

/// The byte accounting of a whole model; built from the file header alone (model_bytes(file, hp)) or from a
/// loaded Model (model_bytes(model), which counts the small vectors as the f32 it holds them in); both give the same
/// figures for files whose norms, biases and sinks are F32, as gpt-oss's are.
struct ModelBytes {
  std::vector<LayerBytes> layers;    // (num_layers)
  uint64_t embedding_row_bytes = 0;  // one row of token_embd (read once per token)
  uint64_t embedding_bytes = 0;      // the whole token_embd table
  uint64_t output_bytes = 0;         // output.weight (or token_embd when tied) plus output_norm
  uint64_t output_weights = 0;       // elements of the output matrix
  uint64_t kv_bytes_per_position = 0;  // K and V of one position in one layer (kv_bytes_per_position)
  uint32_t num_experts = 0;            // experts per layer
  /// All weight bytes the model uses: embedding, output, and per layer attention, router and every expert.
  uint64_t weight_bytes() const;
};

/// From tensor infos only (no tensor data is read). Errors: kMissing naming a tensor the model needs.
Expected<ModelBytes> model_bytes(const gguf::File& file, const ModelHparams& hp, KvCacheType kv_type);
/// From a loaded model (its weight views).
ModelBytes model_bytes(const Model& model, KvCacheType kv_type);

/// KV-cache keys (positions) one decode step of layer `layer_idx` reads at context depth `depth`: depth + 1,
/// capped at the sliding window on sliding layers.
uint64_t kv_keys_read(const ModelHparams& hp, uint32_t layer_idx, uint32_t depth);

struct DecodeTraffic {
  uint64_t dense_bytes = 0;    // attention, router, norms, biases, sinks, output matrix, one embedding row
  uint64_t expert_bytes = 0;   // num_experts_used experts per layer (gate + up + down rows and biases)
  uint64_t kv_bytes = 0;       // K and V rows attended to at this depth, all layers
  uint64_t total() const { return dense_bytes + expert_bytes + kv_bytes; }
};

/// Bytes read to decode one token at context depth `depth` (tokens already in the KV cache). Expert bytes assume
/// every selected expert is distinct (top-k of one token always is). For gpt-oss-20b MXFP4/Q8_0 at depth 0:
/// about 1.27 GB of experts and 1.3 GB dense (gpt-oss-spec.md §7).
DecodeTraffic decode_traffic(const ModelBytes& bytes, const ModelHparams& hp, uint32_t depth);
DecodeTraffic decode_traffic(const Model& model, uint32_t depth, KvCacheType kv_type);

}  // namespace hetmoe::placement
