// The reference forward pass against the fixture logits (tests/data/README.md): f32 reference and llama.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/exec/forward_reference.h"
#include "runtime/model/model.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

const std::string kData = HETMOE_TEST_DATA_DIR;

struct Fixture {
  std::vector<int32_t> ids;
  std::vector<float> reference_logits;  // [200][4106]
  std::vector<float> llama_logits;      // [200][4106]
  std::vector<double> router_margin;    // [200]
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    x.ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
    x.reference_logits = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
    x.llama_logits = test::read_f32_file(kData + "/gpt-oss-tiny.llama-cpp.logits.f32");
    x.router_margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
    return x;
  }();
  return f;
}

Model load_tiny() {
  auto m = Model::load(kData + "/gpt-oss-tiny.gguf");
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().to_string());
  return std::move(*m);
}

/// Teacher-forced logits [num_ids][vocab] for the fixture ids.
std::vector<float> run_reference(const Model& model, KvCacheType kv_type, int num_threads = 2) {
  const auto& ids = fixture().ids;
  auto fwd = ReferenceForward::create(model, 256, kv_type, num_threads);
  EXPECT_TRUE(fwd.has_value());
  const size_t vocab = model.hparams.vocab_size;
  std::vector<float> logits(ids.size() * vocab);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto s = fwd->forward(ids[i], std::span<float>(&logits[i * vocab], vocab));
    EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().to_string());
  }
  return logits;
}

TEST(ForwardFixture, FixtureFilesHaveTheDocumentedShapes) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.ids.size(), 200u);
  ASSERT_EQ(f.reference_logits.size(), 200u * 4106u);
  ASSERT_EQ(f.llama_logits.size(), 200u * 4106u);
  ASSERT_EQ(f.router_margin.size(), 200u);
}

TEST(ForwardFixture, TinyModelHparamsMatchTheFixtureReadme) {
  const Model m = load_tiny();
  const ModelHparams& hp = m.hparams;
  EXPECT_EQ(hp.num_layers, 4u);
  EXPECT_EQ(hp.hidden_dim, 256u);
  EXPECT_EQ(hp.num_heads, 8u);
  EXPECT_EQ(hp.head_dim, 32u);
  EXPECT_EQ(hp.num_kv_heads, 2u);
  EXPECT_EQ(hp.num_experts, 8u);
  EXPECT_EQ(hp.num_experts_used, 2u);
  EXPECT_EQ(hp.expert_ffn_dim, 256u);
  EXPECT_EQ(hp.vocab_size, 4106u);
  EXPECT_EQ(hp.sliding_window, 128u);
  EXPECT_FLOAT_EQ(hp.yarn_factor, 32.0f);
  EXPECT_TRUE(hp.is_sliding(0));
  EXPECT_FALSE(hp.is_sliding(1));
}

void expect_agreement_bar(const test::Agreement& a, const char* what) {
  // Bar from the issue and tests/data/README.md: llama.cpp itself lands at p50 4.3e-4, p99 2.6e-3.
  EXPECT_LE(a.p50_all, 1e-3) << what;
  EXPECT_LE(a.p99_confident, 5e-3) << what;
  std::printf("[ agreement ] %s: KL p50 (all) %.3g, p99 (margin >= 0.15) %.3g, top-1 %.1f %%\n", what, a.p50_all,
              a.p99_confident, 100.0 * a.top1);
}

TEST(ForwardFixture, F16KvCacheMatchesReferenceAndLlamaCppLogits) {
  const Model m = load_tiny();
  const Fixture& f = fixture();
  const std::vector<float> ours = run_reference(m, KvCacheType::kF16);
  for (float x : ours) ASSERT_TRUE(std::isfinite(x));
  expect_agreement_bar(test::agreement(f.reference_logits, ours, 4106, f.router_margin), "f16 KV vs f32 reference");
  expect_agreement_bar(test::agreement(f.llama_logits, ours, 4106, f.router_margin), "f16 KV vs llama.cpp");
}

TEST(ForwardFixture, F32KvCacheMatchesReferenceLogits) {
  const Model m = load_tiny();
  const Fixture& f = fixture();
  const std::vector<float> ours = run_reference(m, KvCacheType::kF32, 1);
  expect_agreement_bar(test::agreement(f.reference_logits, ours, 4106, f.router_margin), "f32 KV vs f32 reference");
}

// The reference pass reads the cache through KvCache::load_k/load_v (scalar dequantization): with q8_0 K and V it
// holds the bar too; q4_0 is printed (no bar; the CPU pass's kernels give the same figures, tests/test_forward_cpu.cpp).
TEST(ForwardFixture, QuantizedKvCacheOnTheReferencePass) {
  const Model m = load_tiny();
  const Fixture& f = fixture();
  expect_agreement_bar(test::agreement(f.reference_logits, run_reference(m, KvCacheType::kQ8_0), 4106, f.router_margin),
                       "reference pass, q8_0 KV vs f32 reference");
  const auto a = test::agreement(f.reference_logits, run_reference(m, KvCacheType::kQ4_0), 4106, f.router_margin);
  std::printf("[ agreement ] reference pass, q4_0 KV vs f32 reference: KL p50 (all) %.3g, p99 (margin >= 0.15) %.3g, "
              "top-1 %.1f %%\n",
              a.p50_all, a.p99_confident, 100.0 * a.top1);
  EXPECT_LE(a.p50_all, 0.05);  // only catches a broken cache (see test_forward_cpu.cpp)
}

// The measure catches real bugs: removing a piece of the math must break the bar.
TEST(ForwardFixture, DroppingAttentionSinksBreaksTheAgreementBar) {
  Model m = load_tiny();
  for (auto& layer : m.layers)
    for (float& s : layer.sinks) s = -std::numeric_limits<float>::infinity();
  const Fixture& f = fixture();
  const auto a = test::agreement(f.reference_logits, run_reference(m, KvCacheType::kF32), 4106, f.router_margin);
  EXPECT_GT(a.p99_confident, 5e-3);
}

TEST(ForwardFixture, DroppingYarnScalingBreaksTheAgreementBar) {
  Model m = load_tiny();
  m.hparams.yarn_factor = 1.0f;
  const Fixture& f = fixture();
  const auto a = test::agreement(f.reference_logits, run_reference(m, KvCacheType::kF32), 4106, f.router_margin);
  EXPECT_GT(a.p50_all, 1e-3);
}

TEST(ForwardFixture, TokenOutOfVocabularyAndFullContextAreErrors) {
  const Model m = load_tiny();
  auto fwd = ReferenceForward::create(m, 2, KvCacheType::kF16, 1);
  ASSERT_TRUE(fwd.has_value());
  std::vector<float> logits(m.hparams.vocab_size);
  auto bad = fwd->forward(4106, logits);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("4106"), std::string::npos);
  ASSERT_TRUE(fwd->forward(1, logits).has_value());
  ASSERT_TRUE(fwd->forward(2, {}).has_value());
  auto full = fwd->forward(3, logits);
  ASSERT_FALSE(full.has_value());
  EXPECT_NE(full.error().message.find("context is full"), std::string::npos);
}

}  // namespace
}  // namespace hetmoe
