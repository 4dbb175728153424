#include "placement/dynamic_placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hetmoe::placement {

Expected<DynamicPlacement> DynamicPlacement::create(const Plan& initial, std::span<const double> probabilities,
                                                    const DynamicPlacementOptions& options) {
  const size_t n = static_cast<size_t>(initial.num_layers) * initial.num_experts;
  if (probabilities.size() != n || initial.layers.size() != initial.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("dynamic placement: {} probabilities for a plan of {} layers × {} experts",
                                  probabilities.size(), initial.num_layers, initial.num_experts));
  if (!(options.half_life_tokens > 0) || options.replan_interval_tokens == 0 || !(options.hysteresis >= 0) ||
      !(options.min_score_gap >= 0))
    return make_error(ErrorCode::kInvalidArgument,
                      "dynamic placement: half-life and re-plan interval must be > 0, margins >= 0");
  DynamicPlacement d;
  d.plan_ = initial;
  d.options_ = options;
  d.decay_ = std::exp2(-1.0 / options.half_life_tokens);
  d.scores_.resize(n);
  for (size_t i = 0; i < n; ++i) d.scores_[i] = probabilities[i] / (1.0 - d.decay_);
  return d;
}

void DynamicPlacement::observe_token(std::span<const int32_t> chosen) {
  for (double& s : scores_) s *= decay_;
  const uint32_t E = plan_.num_experts, K = plan_.num_experts_used;
  for (size_t i = 0; i < chosen.size() && i < static_cast<size_t>(plan_.num_layers) * K; ++i) {
    const int32_t e = chosen[i];
    if (e >= 0 && static_cast<uint32_t>(e) < E) scores_[(i / K) * E + static_cast<uint32_t>(e)] += 1.0;
  }
}

void DynamicPlacement::observe_counts(std::span<const uint64_t> counts, uint32_t num_tokens) {
  const double f = std::pow(decay_, num_tokens);
  for (size_t i = 0; i < scores_.size(); ++i)
    scores_[i] = scores_[i] * f + (i < counts.size() ? static_cast<double>(counts[i]) : 0.0);
}

std::vector<Migration> DynamicPlacement::step() {
  ++num_steps_;
  if (num_steps_ % options_.replan_interval_tokens != 0) return {};
  return replan();
}

std::vector<Migration> DynamicPlacement::replan() {
  const uint32_t E = plan_.num_experts;
  std::vector<Migration> candidates;
  for (uint32_t l = 0; l < plan_.num_layers; ++l) {
    const double* s = &scores_[static_cast<size_t>(l) * E];
    std::vector<uint32_t> gpu, cpu;
    for (uint32_t e = 0; e < E; ++e) (plan_.layers[l].experts[e] == Device::kGpu ? gpu : cpu).push_back(e);
    std::stable_sort(gpu.begin(), gpu.end(), [s](uint32_t a, uint32_t b) { return s[a] < s[b]; });
    std::stable_sort(cpu.begin(), cpu.end(), [s](uint32_t a, uint32_t b) { return s[a] > s[b]; });
    for (size_t i = 0; i < std::min(gpu.size(), cpu.size()); ++i) {
      if (!(s[cpu[i]] > s[gpu[i]] * (1.0 + options_.hysteresis) + options_.min_score_gap)) break;
      candidates.push_back(Migration{l, gpu[i], cpu[i], s[cpu[i]] - s[gpu[i]]});
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Migration& a, const Migration& b) { return a.score_gain > b.score_gain; });
  if (candidates.size() > options_.max_migrations_per_step) candidates.resize(options_.max_migrations_per_step);
  for (const Migration& m : candidates) {
    plan_.layers[m.layer_idx].experts[m.evict_expert_idx] = Device::kCpu;
    plan_.layers[m.layer_idx].experts[m.load_expert_idx] = Device::kGpu;
  }
  return candidates;
}

}  // namespace hetmoe::placement
