// Plans by rule and the config file's edits (placement/static_plans.h), the optimizer's GPU-runtime constraint
// (dense_on_gpu), the prefill crossover in the Plan's JSON, and the probe profile → DeviceRates glue
// (placement/profile_rates.h). Pure host code on gpt-oss-20b shapes and synthetic profiles.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "placement/optimizer.h"
#include "placement/profile_rates.h"
#include "placement/static_plans.h"
#include "runtime/app/config.h"
#include "tests/placement_fixture.h"

namespace hetmoe::placement {
namespace {

CostModel make_model(double skew) {
  auto m = CostModel::create(test::gpt20b_inputs(skew));
  EXPECT_TRUE(m.has_value());
  return std::move(*m);
}

/// Router biases (num_layers rows): expert e of layer l has bias (e·7 + l) % 32, so layers rank differently.
std::vector<std::vector<float>> biases_20b() {
  std::vector<std::vector<float>> b(24, std::vector<float>(32));
  for (uint32_t l = 0; l < 24; ++l)
    for (uint32_t e = 0; e < 32; ++e) b[l][e] = static_cast<float>((e * 7 + l) % 32);
  return b;
}

uint32_t num_gpu_experts(const Plan& p) {
  uint32_t n = 0;
  for (const LayerPlan& l : p.layers)
    for (Device d : l.experts) n += d == Device::kGpu;
  return n;
}

TEST(StaticPlan, KeepsTheKLargestRouterBiasesOfEachLayerWithDenseOnTheGpu) {
  const ModelHparams hp = test::gpt20b_inputs(0).hp;
  const auto bias = biases_20b();
  auto p = static_gpu_experts_plan(hp, bias, 5, 4096);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->output, Device::kGpu);
  EXPECT_EQ(p->embedding, Device::kCpu);
  for (uint32_t l = 0; l < 24; ++l) {
    EXPECT_EQ(p->layers[l].attention, Device::kGpu);
    for (uint32_t e = 0; e < 32; ++e)  // biases 27..31 are the five largest
      EXPECT_EQ(p->layers[l].experts[e] == Device::kGpu, bias[l][e] >= 27.0f) << l << "," << e;
  }
  ASSERT_EQ(p->notes.size(), 1u);
  EXPECT_NE(p->notes[0].find("other 27"), std::string::npos) << p->notes[0];
}

TEST(StaticPlan, EqualBiasesTieToTheLowerIdAndEmptyRowsCountAsZero) {
  const ModelHparams hp = test::gpt20b_inputs(0).hp;
  std::vector<std::vector<float>> bias(24);  // empty rows
  bias[3].assign(32, 0.5f);
  auto p = static_gpu_experts_plan(hp, bias, 3, 4096);
  ASSERT_TRUE(p.has_value());
  for (const LayerPlan& l : p->layers)
    for (uint32_t e = 0; e < 32; ++e) EXPECT_EQ(l.experts[e] == Device::kGpu, e < 3);
}

TEST(StaticPlan, ZeroIsCpuMoeAndAboveTheExpertCountIsAnError) {
  const ModelHparams hp = test::gpt20b_inputs(0).hp;
  auto cpu_moe = static_gpu_experts_plan(hp, biases_20b(), 0, 4096);
  ASSERT_TRUE(cpu_moe.has_value());
  EXPECT_TRUE(cpu_moe->uses_gpu());  // attention, router and unembedding
  EXPECT_EQ(num_gpu_experts(*cpu_moe), 0u);
  EXPECT_NE(cpu_moe->notes[0].find("--cpu-moe"), std::string::npos);
  auto too_many = static_gpu_experts_plan(hp, biases_20b(), 33, 4096);
  ASSERT_FALSE(too_many.has_value());
  EXPECT_NE(too_many.error().message.find("--n-gpu-experts 33"), std::string::npos);
  EXPECT_NE(too_many.error().message.find("32 experts"), std::string::npos);
  std::vector<std::vector<float>> short_rows(24, std::vector<float>(31));
  EXPECT_FALSE(static_gpu_experts_plan(hp, short_rows, 2, 4096).has_value());
}

/// An optimizer plan that uses part of a budget: dense on the GPU and some experts there.
Plan optimized(const CostModel& m, uint64_t budget) {
  PlanRequest r;
  r.vram_budget_bytes = budget;
  r.dense_on_gpu = true;
  auto p = optimize_plan(m, r);
  EXPECT_TRUE(p.has_value());
  return std::move(*p);
}

TEST(PlacementOptimizer, DenseOnGpuKeepsEveryAttentionAndTheOutputOnTheGpuOrNothing) {
  const CostModel m = make_model(1.0);
  for (uint64_t gib : {3ull, 5ull, 8ull, 40ull}) {
    const Plan p = optimized(m, gib << 30);
    ASSERT_TRUE(p.uses_gpu()) << gib;
    EXPECT_EQ(p.output, Device::kGpu);
    for (const LayerPlan& l : p.layers) EXPECT_EQ(l.attention, Device::kGpu) << gib << " GiB";
    EXPECT_LE(p.totals.gpu_bytes, gib << 30);
  }
  const Plan tiny_budget = optimized(m, 1ull << 30);  // 1 GiB: the unembedding and workspace alone do not fit
  EXPECT_FALSE(tiny_budget.uses_gpu());
  bool noted = false;
  for (const std::string& n : tiny_budget.notes) noted |= n.find("GPU runtime keeps on the GPU") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(ExpertOverrides, PinToGpuEvictsTheLeastProbableUnpinnedExpertToStayInBudget) {
  const CostModel m = make_model(1.0);
  Plan p = optimized(m, 5ull << 30);
  ASSERT_GT(num_gpu_experts(p), 0u);
  p.vram_budget_bytes = p.totals.gpu_bytes;  // a full budget: a pinned expert needs an eviction
  const uint32_t before = num_gpu_experts(p);
  // The least probable CPU expert of layer 2 goes to the GPU; the least probable GPU expert (all experts have the
  // same size) must leave.
  const std::vector<double>& prob = m.inputs().probabilities;
  uint32_t pin = 0, evict_l = 0, evict_e = 0;
  double lowest_cpu = 2, lowest_gpu = 2;
  for (uint32_t e = 0; e < 32; ++e)
    if (p.layers[2].experts[e] == Device::kCpu && prob[2 * 32 + e] < lowest_cpu) lowest_cpu = prob[2 * 32 + e], pin = e;
  for (uint32_t l = 0; l < 24; ++l)
    for (uint32_t e = 0; e < 32; ++e)
      if (p.layers[l].experts[e] == Device::kGpu && prob[l * 32 + e] < lowest_gpu)
        lowest_gpu = prob[l * 32 + e], evict_l = l, evict_e = e;
  const ExpertOverride o{2, pin, DeviceKind::kGpu};
  ASSERT_TRUE(apply_expert_overrides(p, std::span(&o, 1), m).has_value());
  EXPECT_EQ(p.layers[2].experts[pin], Device::kGpu);
  EXPECT_EQ(p.layers[evict_l].experts[evict_e], Device::kCpu);
  EXPECT_LE(p.totals.gpu_bytes, p.vram_budget_bytes);
  EXPECT_EQ(num_gpu_experts(p), before);  // one in, one out
  EXPECT_NE(p.notes.back().find("1 least probable"), std::string::npos) << p.notes.back();
}

TEST(ExpertOverrides, PinToCpuMovesOnlyThatExpert) {
  const CostModel m = make_model(1.0);
  Plan p = optimized(m, 5ull << 30);
  uint32_t l = 0, e = 0;
  while (p.layers[l].experts[e] != Device::kGpu) (++e == 32) ? (e = 0, ++l) : 0;
  const uint32_t before = num_gpu_experts(p);
  const ExpertOverride o{l, e, DeviceKind::kCpu};
  ASSERT_TRUE(apply_expert_overrides(p, std::span(&o, 1), m).has_value());
  EXPECT_EQ(p.layers[l].experts[e], Device::kCpu);
  EXPECT_EQ(num_gpu_experts(p), before - 1);
}

TEST(ExpertOverrides, OutOfRangeBothDevicesNoGpuAndTooManyPinsAreErrors) {
  const CostModel m = make_model(1.0);
  Plan p = optimized(m, 5ull << 30);
  const ExpertOverride out_of_range{24, 0, DeviceKind::kGpu};
  auto s = apply_expert_overrides(p, std::span(&out_of_range, 1), m);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("layer = 24"), std::string::npos) << s.error().message;
  const ExpertOverride both[] = {{1, 1, DeviceKind::kGpu}, {1, 1, DeviceKind::kCpu}};
  s = apply_expert_overrides(p, both, m);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("both"), std::string::npos);

  Plan cpu = all_cpu_plan(24, 32, 4, 8192);
  const ExpertOverride gpu_pin{0, 0, DeviceKind::kGpu};
  s = apply_expert_overrides(cpu, std::span(&gpu_pin, 1), m);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("does not use the GPU"), std::string::npos);

  // Every expert pinned to the GPU in a budget that holds a fraction of them.
  std::vector<ExpertOverride> all;
  for (uint32_t l = 0; l < 24; ++l)
    for (uint32_t e = 0; e < 32; ++e) all.push_back({l, e, DeviceKind::kGpu});
  s = apply_expert_overrides(p, all, m);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("do not fit in the VRAM budget"), std::string::npos) << s.error().message;
}

TEST(PlacementSettings, ConfigKeysSetTheDynamicPolicyAndThePrefillCrossover) {
  Plan p = *static_gpu_experts_plan(test::gpt20b_inputs(0).hp, biases_20b(), 4, 4096);
  RuntimeConfig::Placement s;
  s.dynamic.decay = 0.5;
  s.dynamic.replan_interval = 16;
  s.dynamic.max_migrations_per_step = 2;
  s.dynamic.hysteresis = 0.1;
  s.prefill_crossover = 48;
  apply_placement_settings(p, s, /*dynamic=*/true);
  EXPECT_TRUE(p.dynamic.enabled);
  EXPECT_DOUBLE_EQ(p.dynamic.half_life_tokens, 1.0);  // 0.5 per token: half after one token
  EXPECT_EQ(p.dynamic.replan_interval_tokens, 16u);
  EXPECT_EQ(p.dynamic.max_migrations_per_step, 2u);
  EXPECT_DOUBLE_EQ(p.dynamic.hysteresis, 0.1);
  EXPECT_EQ(p.prefill_crossover_tokens, 48u);
  apply_placement_settings(p, {}, /*dynamic=*/false);  // mode = "static"; unset keys keep the values
  EXPECT_FALSE(p.dynamic.enabled);
  EXPECT_EQ(p.dynamic.replan_interval_tokens, 16u);
}

TEST(PlacementSettings, DynamicNeedsExpertsOnBothDevices) {
  const ModelHparams hp = test::gpt20b_inputs(0).hp;
  for (uint32_t k : {0u, 32u}) {
    Plan p = *static_gpu_experts_plan(hp, biases_20b(), k, 4096);
    apply_placement_settings(p, {}, true);
    EXPECT_FALSE(p.dynamic.enabled) << k;
  }
  Plan cpu = all_cpu_plan(24, 32, 4, 8192);
  apply_placement_settings(cpu, {}, true);
  EXPECT_FALSE(cpu.dynamic.enabled);
}

TEST(PlacementSettings, DecayMapsToHalfLife) {
  EXPECT_DOUBLE_EQ(half_life_from_decay(0.5), 1.0);
  EXPECT_NEAR(half_life_from_decay(0.99), 68.97, 0.01);  // ln 2 / −ln 0.99
  EXPECT_EQ(half_life_from_decay(1.0), kNoDecayHalfLifeTokens);
}

TEST(PlanJson, PrefillCrossoverRoundTripsAndDefaultsToZeroWhenAbsent) {
  Plan p = all_cpu_plan(2, 4, 2, 64);
  p.prefill_crossover_tokens = 96;
  nlohmann::json j = plan_to_json(p);
  auto back = plan_from_json(j, "mem");
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(back->prefill_crossover_tokens, 96u);
  EXPECT_TRUE(back->same_placement(p));
  j.erase("prefill_crossover_tokens");
  back = plan_from_json(j, "mem");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->prefill_crossover_tokens, 0u);
}

HardwareProfile two_node_profile() {
  HardwareProfile p;
  p.num_numa_nodes = 2;
  for (int node : {0, 1}) {
    NodeBandwidth nb;
    nb.numa_node = node;
    nb.read = {{1, 10e9}, {2, 18e9}, {4, 30e9}, {8, 40e9}};
    if (node == 1)
      for (auto& b : nb.read) b.bytes_per_s /= 2;  // a slower node
    p.node_read_bandwidth.push_back(nb);
  }
  p.gemv_numa_node = 0;
  p.expert_gemv = {{1, 8e9, 0}, {2, 14.4e9, 0}, {4, 24e9, 0}, {8, 30e9, 0}};
  return p;
}

TEST(ProfileRates, ThreadsSpreadOverNodesAndBandwidthInterpolates) {
  const HardwareProfile p = two_node_profile();
  // 6 threads: 3 per node; node 0 at 3 threads = 24 GB/s (between 18 and 30), node 1 half of that.
  DeviceRates r = rates_from_profile(p, 6);
  ASSERT_EQ(r.numa_node_read_bytes_per_s.size(), 2u);
  EXPECT_DOUBLE_EQ(r.numa_node_read_bytes_per_s[0], 24e9);
  EXPECT_DOUBLE_EQ(r.numa_node_read_bytes_per_s[1], 12e9);
  EXPECT_DOUBLE_EQ(r.cpu_read_bytes_per_s, 36e9);
  // GEMV on node 0 at 3 threads: 19.2 GB/s of 24 GB/s read.
  EXPECT_NEAR(r.cpu_expert_efficiency, 0.8, 1e-12);
  // One thread in all: node 0 only. More threads than measured: capped at the nodes' maxima.
  r = rates_from_profile(p, 1);
  EXPECT_DOUBLE_EQ(r.cpu_read_bytes_per_s, 10e9);
  r = rates_from_profile(p, 100);
  EXPECT_DOUBLE_EQ(r.cpu_read_bytes_per_s, 60e9);
  r = rates_from_profile(p, 0);  // 0: every core
  EXPECT_DOUBLE_EQ(r.cpu_read_bytes_per_s, 60e9);
}

TEST(ProfileRates, OneNodeHasNoNodeListAndGpuFiguresFillTheGpuRates) {
  HardwareProfile p = two_node_profile();
  p.node_read_bandwidth.pop_back();
  DeviceRates base;
  base.has_gpu = false;
  DeviceRates r = rates_from_profile(p, 2, base);
  EXPECT_TRUE(r.numa_node_read_bytes_per_s.empty());
  EXPECT_DOUBLE_EQ(r.cpu_read_bytes_per_s, 18e9);
  EXPECT_FALSE(r.has_gpu);
  EXPECT_DOUBLE_EQ(r.gpu_read_bytes_per_s, DeviceRates{}.gpu_read_bytes_per_s);
  GpuFigures g;
  g.memory_read_bytes_per_s = 400e9;
  g.h2d_bytes_per_s = 25e9;
  g.h2d_latency_s = 5e-6;
  g.expert_gemv_bytes_per_s = 300e9;
  p.gpu = g;
  r = rates_from_profile(p, 2, base);
  EXPECT_TRUE(r.has_gpu);
  EXPECT_DOUBLE_EQ(r.gpu_read_bytes_per_s, 400e9);
  EXPECT_DOUBLE_EQ(r.pcie_bytes_per_s, 25e9);
  EXPECT_DOUBLE_EQ(r.pcie_latency_s, 5e-6);
  EXPECT_DOUBLE_EQ(r.gpu_efficiency, 0.75);
}

TEST(ProfileRates, EmptyProfileKeepsTheBaseRates) {
  const DeviceRates r = rates_from_profile(HardwareProfile{}, 4);
  const DeviceRates d;
  EXPECT_EQ(r.cpu_read_bytes_per_s, d.cpu_read_bytes_per_s);
  EXPECT_EQ(r.cpu_expert_efficiency, d.cpu_expert_efficiency);
  EXPECT_EQ(r.has_gpu, d.has_gpu);
}

TEST(ProfileRates, NoCachedProfileInAnEmptyDirectorySaysToRunProbe) {
  const auto dir = std::filesystem::temp_directory_path() / ("hetmoe-rates-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string reason;
  EXPECT_FALSE(cached_profile_for_this_machine(dir, &reason).has_value());
  EXPECT_NE(reason.find("hetmoe probe"), std::string::npos) << reason;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hetmoe::placement
