// Expert statistics: counting in the CPU path, JSON save/load with validation, merge and its shape check, the
// router-bias prior; byte accounting from the header equals the loaded model's.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "placement/expert_stats.h"
#include "placement/traffic.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"
#include "tests/placement_fixture.h"

namespace hetmoe::placement {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

ExpertStats sample_stats(uint32_t L, uint32_t E, uint32_t K, uint64_t tokens, uint64_t seed) {
  ExpertStats s = ExpertStats::zeros(L, E, K);
  s.num_tokens = tokens;
  std::mt19937_64 rng(seed);
  for (uint32_t l = 0; l < L; ++l)
    for (uint64_t t = 0; t < tokens; ++t) {
      std::vector<uint32_t> ids(E);
      std::iota(ids.begin(), ids.end(), 0u);
      std::shuffle(ids.begin(), ids.end(), rng);
      for (uint32_t k = 0; k < K; ++k) ++s.counts[static_cast<size_t>(l) * E + ids[k]];
    }
  return s;
}

TEST(ExpertStats, CpuPathCountsTopKPerTokenAndLayer) {
  auto model = Model::load(kTiny);
  ASSERT_TRUE(model) << model.error().to_string();
  const ModelHparams& hp = model->hparams;
  ExpertStats stats = ExpertStats::zeros(hp.num_layers, hp.num_experts, hp.num_experts_used);
  ForwardOptions options;
  options.context_length = 64;
  options.num_threads = 1;
  options.expert_counts = stats.counts.data();
  auto forward = create_forward(*model, options);
  ASSERT_TRUE(forward) << forward.error().to_string();
  const std::vector<int32_t> prompt = {1, 50, 300, 7, 9, 1000, 42, 3};  // a batched prefill
  ASSERT_TRUE((*forward)->forward_batch(prompt, {}));
  ASSERT_TRUE((*forward)->forward(5, {}));  // and one decode step
  stats.num_tokens = prompt.size() + 1;
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    uint64_t sum = 0;
    for (uint32_t e = 0; e < hp.num_experts; ++e) {
      EXPECT_LE(stats.count(l, e), stats.num_tokens);
      sum += stats.count(l, e);
    }
    EXPECT_EQ(sum, stats.num_tokens * hp.num_experts_used) << "layer " << l;
  }
  // What the CPU path counted is a valid statistics file.
  EXPECT_TRUE(expert_stats_from_json(expert_stats_to_json(stats), "counted"));
  // The reference does not count: asking it to is refused, not silently ignored.
  options.use_reference = true;
  EXPECT_FALSE(create_forward(*model, options));
}

TEST(ExpertStats, JsonRoundTripThroughAFile) {
  ExpertStats s = sample_stats(3, 8, 2, 50, 1);
  s.model_name = "m";
  const auto path = std::filesystem::temp_directory_path() / "hetmoe-stats-roundtrip.json";
  ASSERT_TRUE(expert_stats_save(s, path.string()));
  auto back = expert_stats_load(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(back->counts, s.counts);
  EXPECT_EQ(back->num_tokens, 50u);
  EXPECT_EQ(back->model_name, "m");
  const auto p = back->selection_probabilities();
  for (uint32_t l = 0; l < 3; ++l) EXPECT_NEAR(std::accumulate(p.begin() + l * 8, p.begin() + (l + 1) * 8, 0.0), 2.0, 1e-12);
}

TEST(ExpertStats, LoadRejectsInconsistentCounts) {
  const nlohmann::json good = expert_stats_to_json(sample_stats(2, 4, 2, 10, 2));
  auto expect_error = [](nlohmann::json j, const std::string& needle) {
    auto s = expert_stats_from_json(j, "stats.json");
    ASSERT_FALSE(s) << needle;
    EXPECT_EQ(s.error().code, ErrorCode::kFormat);
    EXPECT_NE(s.error().message.find(needle), std::string::npos) << s.error().message;
  };
  nlohmann::json j = good;
  j["counts"][1][0] = j["counts"][1][0].get<uint64_t>() + 1;
  expect_error(j, "sums to");
  j = good;
  j["counts"].erase(1);
  expect_error(j, "num_layers = 2");
  j = good;
  j["counts"][0].push_back(0);
  expect_error(j, "counts[0]");
  j = good;
  j["num_tokens"] = -3;
  expect_error(j, "num_tokens");
  j = good;
  j["format"] = "other";
  expect_error(j, "format");
  EXPECT_FALSE(expert_stats_load("/nonexistent/stats.json"));
}

TEST(ExpertStats, MergeAddsAndRefusesShapeMismatch) {
  const ExpertStats a = sample_stats(2, 4, 2, 10, 3), b = sample_stats(2, 4, 2, 7, 4);
  auto m = expert_stats_merge(a, b);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->num_tokens, 17u);
  for (size_t i = 0; i < m->counts.size(); ++i) EXPECT_EQ(m->counts[i], a.counts[i] + b.counts[i]);
  EXPECT_TRUE(expert_stats_from_json(expert_stats_to_json(*m), "merged"));
  for (const ExpertStats& other : {sample_stats(3, 4, 2, 5, 5), sample_stats(2, 8, 2, 5, 5), sample_stats(2, 4, 3, 5, 5)}) {
    auto bad = expert_stats_merge(a, other);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(bad.error().message.find("different shapes"), std::string::npos);
  }
  ModelHparams hp;
  hp.num_layers = 2, hp.num_experts = 4, hp.num_experts_used = 2;
  EXPECT_TRUE(a.check_model(hp));
  hp.num_experts = 5;
  EXPECT_FALSE(a.check_model(hp));
}

TEST(ExpertStats, PriorFromBiases) {
  // Zero biases: uniform k/E.
  const std::vector<float> zero(2 * 8, 0.0f);
  for (double p : prior_from_router_biases(zero, 2, 8, 2)) EXPECT_NEAR(p, 0.25, 1e-12);
  // Zipf-skewed biases: rows sum to k, every p in [0, 1], order follows the bias.
  const auto biases = test::zipf_biases(3, 32, 1.5, 11);
  const auto p = prior_from_router_biases(biases, 3, 32, 4);
  for (uint32_t l = 0; l < 3; ++l) {
    double sum = 0;
    for (uint32_t e = 0; e < 32; ++e) {
      const size_t i = l * 32 + e;
      EXPECT_GE(p[i], 0.0);
      EXPECT_LE(p[i], 1.0);
      sum += p[i];
      for (uint32_t f = 0; f < 32; ++f) {
        if (biases[i] > biases[l * 32 + f]) {
          EXPECT_GE(p[i], p[l * 32 + f]);
        }
      }
    }
    EXPECT_NEAR(sum, 4.0, 1e-9);
  }
  // One dominant expert is capped at 1 and the rest share k − 1.
  std::vector<float> dominant(4, 0.0f);
  dominant[2] = 30.0f;
  const auto q = prior_from_router_biases(dominant, 1, 4, 2);
  EXPECT_DOUBLE_EQ(q[2], 1.0);
  EXPECT_NEAR(q[0], 1.0 / 3.0, 1e-9);
}

TEST(ExpertStats, RouterBiasPriorReadsTheFile) {
  auto file = gguf::File::open(kTiny);
  ASSERT_TRUE(file);
  auto hp = read_hparams(*file);
  ASSERT_TRUE(hp);
  auto prior = router_bias_prior(*file, *hp);
  ASSERT_TRUE(prior) << prior.error().to_string();
  ASSERT_EQ(prior->size(), static_cast<size_t>(hp->num_layers) * hp->num_experts);
  for (uint32_t l = 0; l < hp->num_layers; ++l)
    EXPECT_NEAR(std::accumulate(prior->begin() + l * hp->num_experts, prior->begin() + (l + 1) * hp->num_experts, 0.0),
                hp->num_experts_used, 1e-9);
}

TEST(ByteAccounting, HeaderAndLoadedModelAgree) {
  auto model = Model::load(kTiny);
  ASSERT_TRUE(model);
  auto from_header = model_bytes(*model->file, model->hparams, KvCacheType::kF16);
  ASSERT_TRUE(from_header) << from_header.error().to_string();
  const ModelBytes from_model = model_bytes(*model, KvCacheType::kF16);
  ASSERT_EQ(from_header->layers.size(), from_model.layers.size());
  for (size_t l = 0; l < from_model.layers.size(); ++l) {
    EXPECT_EQ(from_header->layers[l].attention_bytes, from_model.layers[l].attention_bytes);
    EXPECT_EQ(from_header->layers[l].router_bytes, from_model.layers[l].router_bytes);
    EXPECT_EQ(from_header->layers[l].expert_bytes, from_model.layers[l].expert_bytes);
    EXPECT_EQ(from_header->layers[l].attention_weights, from_model.layers[l].attention_weights);
    EXPECT_EQ(from_header->layers[l].expert_weights, from_model.layers[l].expert_weights);
  }
  EXPECT_EQ(from_header->output_bytes, from_model.output_bytes);
  EXPECT_EQ(from_header->embedding_bytes, from_model.embedding_bytes);
  // Every tensor byte of the file is accounted for exactly once.
  uint64_t file_bytes = 0;
  for (const auto& t : model->file->tensors()) file_bytes += t.num_bytes;
  EXPECT_EQ(from_header->weight_bytes(), file_bytes);
  EXPECT_EQ(decode_traffic(*model, 10, KvCacheType::kF16).total(),
            decode_traffic(*from_header, model->hparams, 10).total());
}

}  // namespace
}  // namespace hetmoe::placement
