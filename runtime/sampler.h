#pragma once
// Token sampling from logits: greedy (temperature 0) or temperature sampling with a seeded generator.
// (top-k, top-p, min-p and the repetition penalty come with the CPU fast-path issue.)

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace hetmoe {

struct SamplerParams {
  float temperature = 0.8f;  // ≤ 0 → greedy (argmax, lowest id on ties)
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams params);
  /// Picks a token id from logits[vocab_size] (f32, unnormalized). Reproducible for a seed and a sequence of calls.
  int32_t sample(std::span<const float> logits);

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<double> probs_;  // (vocab_size) scratch
};

}  // namespace hetmoe
