#pragma once
// Dynamic placement: the host-side policy that adapts the GPU-resident experts to the experts a conversation
// actually uses. It keeps exponentially decayed selection counts, re-plans every N tokens and returns a bounded
// list of migrations (evict one GPU expert, load one CPU expert of the same block: VRAM use never changes), with
// hysteresis so experts do not ping-pong. It runs no GPU code: executing a migration (copy on the copy stream into
// a spare slot, switch when the copy's event has completed, so no token waits — double-buffered) is the GPU
// runtime's job; it reports completion by calling the policy's next step() only after applying the previous list.
//
// Scores: score[l][e] ← score[l][e]·d^n + (selections of e in layer l during those n tokens), d = 2^(−1/half_life).
// The steady-state score of an expert selected with probability p per token is p / (1 − d); scores start there
// from the initial probabilities. At a re-plan, per block, the CPU experts by descending score are paired with the
// GPU experts by ascending score; a pair is a candidate while score(cpu) > score(gpu)·(1 + hysteresis) + min_gap.
// The candidates of all blocks are ranked by score(cpu) − score(gpu) and at most max_migrations_per_step taken.
// After a swap the reverse swap needs the opposite strict inequality, so it cannot follow unless the statistics
// themselves change by more than the margin.

#include <cstdint>
#include <span>
#include <vector>

#include "placement/plan.h"
#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// The policy's parameters are the plan's (placement/plan.h DynamicPolicy; `enabled` is the runtime's switch).
using DynamicPlacementOptions = DynamicPolicy;

struct Migration {
  uint32_t layer_idx = 0;
  uint32_t evict_expert_idx = 0;  // GPU-resident now, moves to the CPU
  uint32_t load_expert_idx = 0;   // CPU-resident now, moves to the GPU
  double score_gain = 0;          // score(load) − score(evict)
};

class DynamicPlacement {
 public:
  /// Starts from `initial` (its experts' devices) with scores from `probabilities` (num_layers, num_experts).
  /// Errors: kInvalidArgument for a probabilities size that is not the plan's shape, or bad options (half-life
  /// ≤ 0, interval 0, negative margins).
  static Expected<DynamicPlacement> create(const Plan& initial, std::span<const double> probabilities,
                                           const DynamicPlacementOptions& options = {});

  /// Records one token: chosen (num_layers, num_experts_used) expert ids (out-of-range ids are ignored).
  void observe_token(std::span<const int32_t> chosen);
  /// Records num_tokens tokens at once: counts (num_layers, num_experts) selections in them.
  void observe_counts(std::span<const uint64_t> counts, uint32_t num_tokens);

  /// Call once per decoded token, after observing it. Every replan_interval_tokens-th call returns the migrations
  /// to start (possibly none) and applies them to plan(); other calls return nothing.
  std::vector<Migration> step();

  /// The current residency (the initial plan with migrations applied; predictions are the initial plan's).
  const Plan& plan() const { return plan_; }
  double score(uint32_t layer_idx, uint32_t expert_idx) const {
    return scores_[static_cast<size_t>(layer_idx) * plan_.num_experts + expert_idx];
  }

 private:
  DynamicPlacement() = default;
  std::vector<Migration> replan();
  Plan plan_;
  DynamicPlacementOptions options_;
  double decay_ = 1.0;            // d per token
  std::vector<double> scores_;    // (num_layers, num_experts)
  uint64_t num_steps_ = 0;
};

}  // namespace hetmoe::placement
