#pragma once
// Token sampling from logits. The chain, in llama.cpp's default order: repetition penalty over the last
// repeat_last_n tokens → top-k → softmax at temperature → top-p (nucleus) → min-p → draw. Temperature ≤ 0 is greedy
// (argmax after the penalty). Reproducible: the same seed and the same sequence of calls give the same tokens.
// Scratch buffers are sized on the first call; later calls do not allocate.

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe {

struct SamplerParams {
  float temperature = 0.8f;         // ≤ 0 → greedy (argmax, lowest id on ties)
  int32_t top_k = 40;               // keep the k most likely tokens; 0 = off
  float top_p = 0.95f;              // keep the smallest set whose probability reaches p; 1 = off
  float min_p = 0.05f;              // drop tokens below min_p × the top probability; 0 = off
  float repetition_penalty = 1.0f;  // CTRL-style (Keskar et al. 2019, as llama.cpp): logit > 0 → logit / penalty,
                                    // else logit × penalty, for tokens seen in the last repeat_last_n; 1 = off
  int32_t repeat_last_n = 64;       // tokens of history the penalty looks at
  uint64_t seed = 0;
};

/// Checks ranges: temperature in [0, 100], top_k ≥ 0, top_p in (0, 1], min_p in [0, 1), repetition_penalty in
/// (0, 10], repeat_last_n ≥ 0. Errors: kInvalidArgument naming the parameter, its value and the range.
Status validate(const SamplerParams& params);

class Sampler {
 public:
  explicit Sampler(SamplerParams params);

  /// Picks a token id from logits[vocab_size] (f32, unnormalized). Does not record it: call accept().
  int32_t sample(std::span<const float> logits);
  /// Records a token (prompt or generated) in the repetition-penalty history.
  void accept(int32_t token_id);
  /// Forgets the history (a new conversation).
  void reset_history() { history_.clear(); }

  const SamplerParams& params() const { return params_; }

 private:
  struct Candidate {
    float logit;
    int32_t id;
  };
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> history_;       // last repeat_last_n accepted tokens (ring by erase-front; small)
  std::vector<Candidate> candidates_;  // (vocab_size) scratch
  std::vector<float> penalized_;       // (vocab_size) scratch: logits after the penalty
};

}  // namespace hetmoe
