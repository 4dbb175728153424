// The shared generation loop, driven by a scripted forward pass.
#include <gtest/gtest.h>

#include <vector>

#include "runtime/app/generation.h"

namespace hetmoe {
namespace {

/// A forward pass whose logits always favour (last token + 1) mod vocab; counts calls.
class CountingForward final : public ForwardPass {
 public:
  CountingForward(uint32_t vocab, uint32_t ctx) : vocab_(vocab), ctx_(ctx) {}
  Status forward(int32_t token_id, std::span<float> logits_out) override {
    if (num_positions_ >= ctx_) return make_error(ErrorCode::kInvalidArgument, "full");
    ++num_positions_;
    ++num_calls;
    if (!logits_out.empty()) {
      std::fill(logits_out.begin(), logits_out.end(), 0.0f);
      logits_out[(static_cast<uint32_t>(token_id) + 1) % vocab_] = 10.0f;
    }
    return {};
  }
  uint32_t num_positions() const override { return num_positions_; }
  uint32_t context_length() const override { return ctx_; }
  uint32_t vocab_size() const override { return vocab_; }
  void reset() override { num_positions_ = 0; }
  int num_calls = 0;

 private:
  uint32_t vocab_, ctx_, num_positions_ = 0;
};

Sampler greedy() {
  SamplerParams p;
  p.temperature = 0.0f;
  return Sampler(p);
}

TEST(Generation, GeneratesUntilTheBudgetWithoutFeedingTheLastToken) {
  CountingForward fwd(10, 64);
  Sampler s = greedy();
  std::vector<float> logits(10);
  std::vector<int32_t> got;
  const int32_t prompt[] = {1, 2};
  auto stats = generate_tokens(fwd, s, prompt, 4, {}, logits, [&](int32_t t) {
    got.push_back(t);
    return true;
  });
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(got, (std::vector<int32_t>{3, 4, 5, 6}));
  EXPECT_EQ(fwd.num_calls, 2 + 3);  // prompt + all generated tokens but the last
  EXPECT_EQ(stats->num_generated, 4u);
  EXPECT_FALSE(stats->stop_token.has_value());
}

TEST(Generation, StopTokenEndsTheTurnAndIsNotEmitted) {
  CountingForward fwd(10, 64);
  Sampler s = greedy();
  std::vector<float> logits(10);
  std::vector<int32_t> got;
  const int32_t prompt[] = {1};
  const int32_t stop[] = {4};
  auto stats = generate_tokens(fwd, s, prompt, 10, stop, logits, [&](int32_t t) {
    got.push_back(t);
    return true;
  });
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(got, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(stats->stop_token, 4);
}

TEST(Generation, CallerCanStopMidTurn) {
  CountingForward fwd(10, 64);
  Sampler s = greedy();
  std::vector<float> logits(10);
  const int32_t prompt[] = {1};
  auto stats = generate_tokens(fwd, s, prompt, 10, {}, logits, [&](int32_t t) { return t < 3; });
  ASSERT_TRUE(stats.has_value());
  EXPECT_TRUE(stats->stopped_by_caller);
  EXPECT_EQ(stats->num_generated, 2u);
}

TEST(Generation, PromptPlusBudgetBeyondTheContextIsRefusedBeforeAnyWork) {
  CountingForward fwd(10, 8);
  Sampler s = greedy();
  std::vector<float> logits(10);
  const int32_t prompt[] = {1, 2, 3};
  auto stats = generate_tokens(fwd, s, prompt, 6, {}, logits, [](int32_t) { return true; });
  ASSERT_FALSE(stats.has_value());
  EXPECT_NE(stats.error().message.find("need 9 positions but the context is 8"), std::string::npos)
      << stats.error().message;
  EXPECT_EQ(fwd.num_calls, 0);
}

TEST(Generation, ContinuesAConversationFromTheCurrentPosition) {
  CountingForward fwd(10, 64);
  Sampler s = greedy();
  std::vector<float> logits(10);
  const int32_t first[] = {1}, second[] = {7};
  ASSERT_TRUE(generate_tokens(fwd, s, first, 2, {}, logits, [](int32_t) { return true; }).has_value());
  EXPECT_EQ(fwd.num_positions(), 2u);
  ASSERT_TRUE(generate_tokens(fwd, s, second, 1, {}, logits, [](int32_t) { return true; }).has_value());
  EXPECT_EQ(fwd.num_positions(), 3u);
}

TEST(Generation, BatchWithAnOutOfVocabularyIdIsRefusedBeforeAnyWork) {
  CountingForward fwd(10, 64);
  std::vector<float> logits(10);
  const int32_t batch[] = {1, 2, 10};
  auto s = fwd.forward_batch(batch, logits);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("token 2 of the batch is id 10"), std::string::npos);
  EXPECT_EQ(fwd.num_calls, 0);
}

}  // namespace
}  // namespace hetmoe
