#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace hetmoe {

Sampler::Sampler(SamplerParams params) : params_(params), rng_(params.seed) {}

int32_t Sampler::sample(std::span<const float> logits) {
  const auto argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  if (params_.temperature <= 0.0f) return argmax;
  // softmax(logits / T) in double, then inverse-CDF sampling with a uniform draw.
  const double inv_t = 1.0 / params_.temperature;
  const double max_logit = logits[argmax];
  probs_.resize(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs_[i] = std::exp((logits[i] - max_logit) * inv_t);
    sum += probs_[i];
  }
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double acc = 0.0;
  for (size_t i = 0; i < probs_.size(); ++i) {
    acc += probs_[i];
    if (u < acc) return static_cast<int32_t>(i);
  }
  return argmax;  // u == sum within rounding
}

}  // namespace hetmoe
