#include "runtime/app/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace hetmoe {

Status validate(const SamplerParams& p) {
  const auto bad = [](std::string_view name, double value, std::string_view range) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("sampler parameter {} = {} is out of range (expected {})", name, value, range));
  };
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f)) return bad("temperature", p.temperature, "0..100");
  if (p.top_k < 0) return bad("top_k", p.top_k, ">= 0");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p", p.top_p, "(0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p < 1.0f)) return bad("min_p", p.min_p, "[0, 1)");
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f))
    return bad("repetition_penalty", p.repetition_penalty, "(0, 10]");
  if (p.repeat_last_n < 0) return bad("repeat_last_n", p.repeat_last_n, ">= 0");
  return {};
}

Sampler::Sampler(SamplerParams params) : params_(params), rng_(params.seed) {
  history_.reserve(static_cast<size_t>(std::max(params_.repeat_last_n, 0)) + 1);
}

void Sampler::accept(int32_t token_id) {
  if (params_.repeat_last_n <= 0) return;
  if (history_.size() == static_cast<size_t>(params_.repeat_last_n)) history_.erase(history_.begin());
  history_.push_back(token_id);
}

int32_t Sampler::sample(std::span<const float> logits) {
  const auto vocab = static_cast<int32_t>(logits.size());
  penalized_.assign(logits.begin(), logits.end());
  if (params_.repetition_penalty != 1.0f) {
    // Each distinct token is penalized once, however often it occurs.
    for (size_t i = 0; i < history_.size(); ++i) {
      const int32_t id = history_[i];
      if (id < 0 || id >= vocab || std::find(history_.begin(), history_.begin() + i, id) != history_.begin() + i)
        continue;
      float& l = penalized_[id];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(penalized_.begin(), penalized_.end()) - penalized_.begin());

  candidates_.resize(logits.size());
  for (int32_t i = 0; i < vocab; ++i) candidates_[i] = {penalized_[i], i};
  const auto by_logit = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  // Top-k (k = vocab when off), sorted descending.
  size_t num_kept = params_.top_k > 0 ? std::min<size_t>(params_.top_k, candidates_.size()) : candidates_.size();
  std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(num_kept), candidates_.end(),
                    by_logit);
  // Softmax at temperature over the kept candidates (probabilities stored in .logit from here on).
  const double inv_t = 1.0 / params_.temperature;
  const double max_logit = candidates_[0].logit;
  double sum = 0.0;
  for (size_t i = 0; i < num_kept; ++i) {
    const auto p = static_cast<float>(std::exp((candidates_[i].logit - max_logit) * inv_t));
    candidates_[i].logit = p;
    sum += p;
  }
  for (size_t i = 0; i < num_kept; ++i) candidates_[i].logit = static_cast<float>(candidates_[i].logit / sum);
  // Top-p: the smallest prefix whose mass reaches p (at least one token).
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    size_t n = 0;
    while (n < num_kept) {
      mass += candidates_[n++].logit;
      if (mass >= params_.top_p) break;
    }
    num_kept = n;
  }
  // Min-p: drop tokens below min_p × the most likely one.
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p * candidates_[0].logit;
    size_t n = 1;
    while (n < num_kept && candidates_[n].logit >= threshold) ++n;
    num_kept = n;
  }
  double kept_mass = 0.0;
  for (size_t i = 0; i < num_kept; ++i) kept_mass += candidates_[i].logit;
  const double u = std::uniform_real_distribution<double>(0.0, kept_mass)(rng_);
  double acc = 0.0;
  for (size_t i = 0; i < num_kept; ++i) {
    acc += candidates_[i].logit;
    if (u < acc) return candidates_[i].id;
  }
  return candidates_[num_kept - 1].id;  // u == kept_mass within rounding
}

}  // namespace hetmoe
