// Dynamic placement policy (host side, no GPU): stable statistics → no migrations; shifted statistics →
// migrations bounded per step that converge to the new hot set; no ping-pong; VRAM use (GPU experts per block)
// never changes.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "placement/dynamic_placement.h"

namespace hetmoe::placement {
namespace {

constexpr uint32_t L = 4, E = 16, K = 4;

/// Per block, `hot` lists the experts that take the selections, in equal shares: (L, E) probabilities.
std::vector<double> probabilities_with_hot(const std::vector<uint32_t>& hot) {
  std::vector<double> p(L * E, 0.0);
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t e : hot) p[l * E + e] = static_cast<double>(K) / hot.size();
  return p;
}

/// Experts [0, 6) on the GPU in every block.
Plan initial_plan() {
  Plan p = all_cpu_plan(L, E, K, 1024);
  for (LayerPlan& l : p.layers)
    for (uint32_t e = 0; e < 6; ++e) l.experts[e] = Device::kGpu;
  return p;
}

/// Feeds one token's selections drawn from `hot` (K distinct of them, at random) to the policy and steps it.
std::vector<Migration> feed_token(DynamicPlacement& d, const std::vector<uint32_t>& hot, std::mt19937& rng) {
  std::vector<int32_t> chosen(L * K);
  for (uint32_t l = 0; l < L; ++l) {
    std::vector<uint32_t> pool = hot;
    std::shuffle(pool.begin(), pool.end(), rng);
    for (uint32_t k = 0; k < K; ++k) chosen[l * K + k] = static_cast<int32_t>(pool[k]);
  }
  d.observe_token(chosen);
  return d.step();
}

uint32_t gpu_count(const Plan& p, uint32_t l) {
  uint32_t n = 0;
  for (Device d : p.layers[l].experts) n += d == Device::kGpu;
  return n;
}

TEST(DynamicPlacement, StableStatisticsGiveNoMigrations) {
  const std::vector<uint32_t> hot = {0, 1, 2, 3, 4, 5, 6, 7};  // the 6 GPU experts are among the hot ones
  auto d = DynamicPlacement::create(initial_plan(), probabilities_with_hot(hot));
  ASSERT_TRUE(d);
  std::mt19937 rng(1);
  for (int t = 0; t < 4000; ++t) EXPECT_TRUE(feed_token(*d, hot, rng).empty()) << "token " << t;
  EXPECT_TRUE(d->plan().same_placement(initial_plan()));
}

TEST(DynamicPlacement, ShiftedStatisticsConvergeWithBoundedStepsAndNoPingPong) {
  DynamicPlacementOptions options;
  options.max_migrations_per_step = 3;
  options.replan_interval_tokens = 16;
  auto d = DynamicPlacement::create(initial_plan(), probabilities_with_hot({0, 1, 2, 3, 4, 5}), options);
  ASSERT_TRUE(d);
  const std::vector<uint32_t> new_hot = {10, 11, 12, 13, 14, 15};  // the conversation moves to other experts
  std::mt19937 rng(2);
  std::map<std::pair<uint32_t, uint32_t>, int> loads, evictions;  // (layer, expert) → times
  int last_migration_token = -1;
  for (int t = 0; t < 6000; ++t) {
    const std::vector<Migration> m = feed_token(*d, new_hot, rng);
    EXPECT_LE(m.size(), options.max_migrations_per_step);
    if ((t + 1) % options.replan_interval_tokens != 0) {
      EXPECT_TRUE(m.empty());
    }
    for (const Migration& x : m) {
      EXPECT_GT(x.score_gain, 0.0);
      ++loads[{x.layer_idx, x.load_expert_idx}];
      ++evictions[{x.layer_idx, x.evict_expert_idx}];
      last_migration_token = t;
    }
    for (uint32_t l = 0; l < L; ++l) ASSERT_EQ(gpu_count(d->plan(), l), 6u) << "VRAM use must not change";
  }
  // Converged: every block's GPU experts are exactly the new hot set, and migrations stopped early.
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t e = 0; e < E; ++e)
      EXPECT_EQ(d->plan().layers[l].experts[e] == Device::kGpu, e >= 10) << "layer " << l << " expert " << e;
  EXPECT_GE(last_migration_token, 0);
  EXPECT_LT(last_migration_token, 3000);
  // No ping-pong: nothing loaded was evicted again, nothing evicted was loaded again.
  for (const auto& [key, n] : loads) {
    EXPECT_EQ(n, 1);
    EXPECT_EQ(evictions.count(key), 0u);
  }
}

TEST(DynamicPlacement, HysteresisKeepsResidentsAgainstNearTies) {
  // Two experts of equal probability just across the GPU/CPU boundary: sampling noise must not swap them back and
  // forth.
  std::vector<uint32_t> hot = {0, 1, 2, 3, 4, 5, 6};  // 7 equally hot experts, 6 GPU slots
  auto d = DynamicPlacement::create(initial_plan(), probabilities_with_hot(hot));
  ASSERT_TRUE(d);
  std::mt19937 rng(3);
  size_t num_migrations = 0;
  for (int t = 0; t < 8000; ++t) num_migrations += feed_token(*d, hot, rng).size();
  EXPECT_EQ(num_migrations, 0u);
}

TEST(DynamicPlacement, RejectsBadShapesAndOptions) {
  EXPECT_FALSE(DynamicPlacement::create(initial_plan(), std::vector<double>(3, 0.0)));
  DynamicPlacementOptions bad;
  bad.replan_interval_tokens = 0;
  EXPECT_FALSE(DynamicPlacement::create(initial_plan(), probabilities_with_hot({0}), bad));
  bad = {};
  bad.half_life_tokens = 0;
  EXPECT_FALSE(DynamicPlacement::create(initial_plan(), probabilities_with_hot({0}), bad));
}

}  // namespace
}  // namespace hetmoe::placement
