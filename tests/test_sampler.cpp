// Sampler chain: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeds.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "runtime/app/sampler.h"

namespace hetmoe {
namespace {

SamplerParams plain(float temperature, uint64_t seed = 1) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::map<int32_t, int> histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int32_t, int> h;
  for (int i = 0; i < n; ++i) ++h[s.sample(logits)];
  return h;
}

TEST(Sampler, GreedyTakesTheArgmaxAndTheLowestIdOnTies) {
  Sampler s(plain(0.0f));
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f}), 1);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37) % 101) / 25.0f;
  Sampler a(plain(1.0f, 7)), b(plain(1.0f, 7)), c(plain(1.0f, 8));
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.sample(logits));
    tb.push_back(b.sample(logits));
    tc.push_back(c.sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, TemperatureOneFollowsTheSoftmax) {
  // logits ln(1), ln(2), ln(7): probabilities 0.1, 0.2, 0.7.
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(7.0f)};
  Sampler s(plain(1.0f, 3));
  auto h = histogram(s, logits, 20000);
  EXPECT_NEAR(h[0] / 20000.0, 0.1, 0.01);  // ±5 sigma of a binomial(20000, 0.1) is about ±0.011
  EXPECT_NEAR(h[2] / 20000.0, 0.7, 0.016);
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  SamplerParams p = plain(5.0f);  // high temperature: without top-k every token would appear
  p.top_k = 2;
  Sampler s(p);
  auto h = histogram(s, {1.0f, 5.0f, 4.0f, 0.0f, 3.9f}, 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[1], 0);
  EXPECT_GT(h[2], 0);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplerParams p = plain(1.0f);
  p.top_p = 0.75f;  // probabilities 0.7, 0.2, 0.1: nucleus {0.7, 0.2}
  Sampler s(p);
  auto h = histogram(s, {std::log(7.0f), std::log(2.0f), 0.0f}, 5000);
  EXPECT_EQ(h.count(2), 0u);
  EXPECT_GT(h[1], 0);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheTop) {
  SamplerParams p = plain(1.0f);
  p.min_p = 0.25f;  // top 0.7 → threshold 0.175: keeps 0.7 and 0.2, drops 0.1
  Sampler s(p);
  auto h = histogram(s, {std::log(7.0f), std::log(2.0f), 0.0f}, 5000);
  EXPECT_EQ(h.count(2), 0u);
  EXPECT_GT(h[1], 0);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplerParams p = plain(0.0f);
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // token 0 wins unpenalized (3 > 2); penalized to 1.5 it loses to token 1.
  const std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(logits), 0);
  s.accept(0);
  s.accept(0);  // counted once
  EXPECT_EQ(s.sample(logits), 1);
  // A negative logit gets more negative.
  SamplerParams q = plain(0.0f);
  q.repetition_penalty = 2.0f;
  Sampler t(q);
  t.accept(2);
  // −1 × 2 = −2 falls below −1.5 (dividing would have raised it to −0.5 and kept token 2 first).
  EXPECT_EQ(t.sample(std::vector<float>{-3.0f, -1.5f, -1.0f}), 1);
}

TEST(Sampler, PenaltyHistoryForgetsBeyondRepeatLastN) {
  SamplerParams p = plain(0.0f);
  p.repetition_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  s.accept(0);
  s.accept(5);
  s.accept(6);  // token 0 leaves the window
  EXPECT_EQ(s.sample(std::vector<float>{3.0f, 2.0f}), 0);
}

TEST(Sampler, ValidateNamesTheBadParameter) {
  SamplerParams p;
  p.top_p = 0.0f;
  auto s = validate(p);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("top_p"), std::string::npos);
  p = SamplerParams{};
  p.temperature = -1.0f;
  EXPECT_FALSE(validate(p).has_value());
  EXPECT_TRUE(validate(SamplerParams{}).has_value());
}

}  // namespace
}  // namespace hetmoe
