#pragma once
// Test helpers for the placement tests: cost-model inputs with gpt-oss-20b's shapes (no file needed), and a
// header-only gpt-oss GGUF (valid header, sparse data section) for planning without 13-65 GB on disk.

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "placement/cost_model.h"
#include "placement/expert_stats.h"
#include "runtime/model/gguf_writer.h"

namespace hetmoe::test {

/// Router biases with a Zipf skew (as `hetmoe synth --router-skew`): per layer, a random permutation ranks the
/// experts; bias of rank r = −skew·ln(1 + r). Returns (num_layers, num_experts).
inline std::vector<float> zipf_biases(uint32_t num_layers, uint32_t num_experts, double skew, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> b(static_cast<size_t>(num_layers) * num_experts);
  for (uint32_t l = 0; l < num_layers; ++l) {
    std::vector<uint32_t> perm(num_experts);
    std::iota(perm.begin(), perm.end(), 0u);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (uint32_t r = 0; r < num_experts; ++r)
      b[static_cast<size_t>(l) * num_experts + perm[r]] = static_cast<float>(-skew * std::log(1.0 + r));
  }
  return b;
}

/// gpt-oss-20b's hyperparameters and byte accounting (MXFP4 experts, Q8_0 matrices: gpt-oss-spec.md §7), with
/// selection probabilities from Zipf-skewed router biases, laptop rates, context 8192 at depth 4096.
inline placement::CostInputs gpt20b_inputs(double skew, uint32_t num_layers = 24, uint32_t num_experts = 32) {
  placement::CostInputs in;
  ModelHparams& hp = in.hp;
  hp.num_layers = num_layers;
  hp.hidden_dim = 2880;
  hp.num_heads = 64;
  hp.num_kv_heads = 8;
  hp.head_dim = 64;
  hp.num_experts = num_experts;
  hp.num_experts_used = 4;
  hp.expert_ffn_dim = 2880;
  hp.vocab_size = 201088;
  hp.context_length = 131072;
  const uint64_t q8_row = 2880 / 32 * 34, mx_row = 2880 / 32 * 17;
  in.bytes.layers.resize(num_layers);
  for (auto& l : in.bytes.layers) {
    l.attention_bytes = (4096 + 512 + 512) * q8_row + 2880 * (4096 / 32 * 34) + (4096 + 1024 + 2880 * 3 + 64) * 4;
    l.router_bytes = 2880ull * num_experts * 4 + num_experts * 4;
    l.expert_bytes = 3 * 2880 * mx_row + (2 * 2880 + 2880) * 4;
    l.attention_weights = 2880ull * (4096 + 1024) + 4096ull * 2880;
    l.expert_weights = 3ull * 2880 * 2880;
  }
  in.bytes.embedding_bytes = 201088 * q8_row;
  in.bytes.embedding_row_bytes = q8_row;
  in.bytes.output_bytes = 201088 * q8_row + 2880 * 4;
  in.bytes.output_weights = 201088ull * 2880;
  in.bytes.kv_bytes_per_position = kv_bytes_per_position(hp, KvCacheType::kF16);
  in.bytes.num_experts = num_experts;
  in.probabilities = placement::prior_from_router_biases(zipf_biases(num_layers, num_experts, skew, 7), num_layers,
                                                         num_experts, 4);
  in.rates = placement::DeviceRates::laptop();
  in.context_length = 8192;
  in.depth = 4096;
  return in;
}

/// Writes a gpt-oss GGUF header (tensor infos of the real layout: num_layers blocks, num_experts experts, D 2880)
/// and extends the file to its full size without writing data (a sparse file: no disk used, data reads as zeros).
inline bool write_header_only_gguf(const std::string& path, uint32_t num_layers, uint32_t num_experts) {
  uint64_t total = 0;
  {
    gguf::Writer w;
    w.add_string("general.architecture", "gpt-oss");
    w.add_string("general.name", fmt::format("header-only gpt-oss {}x{}", num_layers, num_experts));
    w.add_u32("gpt-oss.block_count", num_layers);
    w.add_u32("gpt-oss.context_length", 131072);
    w.add_u32("gpt-oss.embedding_length", 2880);
    w.add_u32("gpt-oss.attention.head_count", 64);
    w.add_u32("gpt-oss.attention.head_count_kv", 8);
    w.add_u32("gpt-oss.attention.key_length", 64);
    w.add_u32("gpt-oss.attention.value_length", 64);
    w.add_u32("gpt-oss.expert_count", num_experts);
    w.add_u32("gpt-oss.expert_used_count", 4);
    w.add_u32("gpt-oss.expert_feed_forward_length", 2880);
    w.add_u32("gpt-oss.attention.sliding_window", 128);
    const uint64_t D = 2880, Q = 4096, KV = 512, V = 201088, E = num_experts;
    using T = TensorType;
    auto add = [&](const std::string& name, T type, std::vector<uint64_t> shape) { w.add_tensor(name, type, shape); };
    add("token_embd.weight", T::kQ8_0, {D, V});
    for (uint32_t l = 0; l < num_layers; ++l) {
      const auto n = [l](const char* s) { return fmt::format("blk.{}.{}", l, s); };
      add(n("attn_norm.weight"), T::kF32, {D});
      add(n("attn_q.weight"), T::kQ8_0, {D, Q});
      add(n("attn_q.bias"), T::kF32, {Q});
      add(n("attn_k.weight"), T::kQ8_0, {D, KV});
      add(n("attn_k.bias"), T::kF32, {KV});
      add(n("attn_v.weight"), T::kQ8_0, {D, KV});
      add(n("attn_v.bias"), T::kF32, {KV});
      add(n("attn_output.weight"), T::kQ8_0, {Q, D});
      add(n("attn_output.bias"), T::kF32, {D});
      add(n("attn_sinks.weight"), T::kF32, {64});
      add(n("post_attention_norm.weight"), T::kF32, {D});
      add(n("ffn_gate_inp.weight"), T::kF32, {D, E});
      add(n("ffn_gate_inp.bias"), T::kF32, {E});
      add(n("ffn_gate_exps.weight"), T::kMXFP4, {D, D, E});
      add(n("ffn_gate_exps.bias"), T::kF32, {D, E});
      add(n("ffn_up_exps.weight"), T::kMXFP4, {D, D, E});
      add(n("ffn_up_exps.bias"), T::kF32, {D, E});
      add(n("ffn_down_exps.weight"), T::kMXFP4, {D, D, E});
      add(n("ffn_down_exps.bias"), T::kF32, {D, E});
    }
    add("output_norm.weight", T::kF32, {D});
    add("output.weight", T::kQ8_0, {D, V});
    if (!w.open_file(path) || !w.write_header()) return false;
    total = w.total_bytes();
  }  // the writer closes the file (header flushed) before it is extended
  return ::truncate(path.c_str(), static_cast<off_t>(total)) == 0;
}

}  // namespace hetmoe::test
