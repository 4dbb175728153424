#pragma once
// Expert selection statistics: how often the router of each layer chose each expert, counted over a prompt set
// (`hetmoe profile`) or a run (CpuForwardOptions::expert_counts). The placement optimizer turns them into
// selection probabilities; without statistics the router biases give a prior (router_bias_prior).
//
// JSON file (format "hetmoe-expert-stats", version 1):
//   {"format": "hetmoe-expert-stats", "version": 1, "model": "<general.name>", "num_layers": L, "num_experts": E,
//    "num_experts_used": K, "num_tokens": T, "counts": [[c_00, .., c_0(E-1)], .., [c_(L-1)0, ..]]}
// Invariants checked on load: counts is L rows of E integers, and every row sums to K·T (each token selects K
// distinct experts per layer).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

namespace hetmoe::placement {

struct ExpertStats {
  std::string model_name;          // general.name of the model counted (informational; not checked)
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;
  uint32_t num_experts_used = 0;   // top-k
  uint64_t num_tokens = 0;         // tokens counted
  std::vector<uint64_t> counts;    // (num_layers, num_experts) times expert e was among the top-k of layer l

  /// Zero counts for a model shape.
  static ExpertStats zeros(uint32_t num_layers, uint32_t num_experts, uint32_t num_experts_used);
  uint64_t count(uint32_t layer_idx, uint32_t expert_idx) const {
    return counts[static_cast<size_t>(layer_idx) * num_experts + expert_idx];
  }
  /// (num_layers, num_experts) probability that expert e is among the top-k of layer l for one token:
  /// count / num_tokens (each row sums to num_experts_used). With no tokens: uniform k / E.
  std::vector<double> selection_probabilities() const;
  /// Checks the shape against a model. Errors: kInvalidArgument naming both shapes.
  Status check_model(const ModelHparams& hp) const;
};

nlohmann::json expert_stats_to_json(const ExpertStats& stats);
/// Errors: kFormat naming the key and what was expected (`source` names the file in messages).
Expected<ExpertStats> expert_stats_from_json(const nlohmann::json& j, const std::string& source);
/// Errors: kIo (cannot write, names the path).
Status expert_stats_save(const ExpertStats& stats, const std::string& path);
/// Errors: kIo (cannot read), kFormat (not JSON, or the invariants above fail).
Expected<ExpertStats> expert_stats_load(const std::string& path);
/// Sum of two statistics of the same model shape. Errors: kInvalidArgument if num_layers, num_experts or
/// num_experts_used differ (names both).
Expected<ExpertStats> expert_stats_merge(const ExpertStats& a, const ExpertStats& b);

/// The prior without statistics: selection probabilities from the router biases only, as if the raw router
/// logits of all experts were equal. biases: (num_layers, num_experts). Per layer, q = softmax(bias); the top-k
/// probability of e is approximated by p_e = min(1, c·q_e) with c ≥ k chosen so Σ_e p_e = k (water-filling:
/// experts whose k·q_e would exceed 1 are capped at 1 and the rest rescaled). Zero biases give uniform k/E.
/// Returns (num_layers, num_experts).
std::vector<double> prior_from_router_biases(std::span<const float> biases, uint32_t num_layers,
                                             uint32_t num_experts, uint32_t num_experts_used);

/// Reads the router bias tensors (blk.N.ffn_gate_inp.bias: num_experts F32 values per layer, the only tensor data
/// planning reads) and returns prior_from_router_biases of them; uniform k/E for a layer without a bias.
/// Errors: kShape if a bias tensor is not F32 of num_experts elements.
Expected<std::vector<double>> router_bias_prior(const gguf::File& file, const ModelHparams& hp);

}  // namespace hetmoe::placement
