// Optimizer and cost-model invariants on gpt-oss-20b's shapes (no file, no GPU): never over budget, more VRAM never
// predicts slower, hot experts on the GPU first, per-expert placement at least as good as the best per-layer split,
// budget edge cases, RAM budget, and the Plan JSON round trip.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "placement/kernel_rates.h"
#include "placement/optimizer.h"
#include "placement/plan.h"
#include "tests/placement_fixture.h"

namespace hetmoe::placement {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

CostModel make_model(double skew, uint32_t num_layers = 24, uint32_t num_experts = 32) {
  auto m = CostModel::create(test::gpt20b_inputs(skew, num_layers, num_experts));
  EXPECT_TRUE(m) << m.error().to_string();
  return std::move(*m);
}

Plan optimize(const CostModel& m, uint64_t vram, PlanStrategy strategy = PlanStrategy::kPerExpert,
              uint64_t ram = 0) {
  PlanRequest r;
  r.vram_budget_bytes = vram;
  r.ram_budget_bytes = ram;
  auto p = optimize_plan(m, r, strategy);
  EXPECT_TRUE(p) << p.error().to_string();
  return p ? std::move(*p) : Plan{};
}

/// Budgets from 0 to past the whole model, in uneven steps (so unit rounding is exercised).
std::vector<uint64_t> budget_sweep(const CostModel& m) {
  std::vector<uint64_t> b;
  for (uint64_t x = 0; x <= m.all_gpu_bytes() + kGiB; x += 437ull << 20) b.push_back(x);
  b.push_back(m.all_gpu_bytes());
  b.push_back(m.all_gpu_bytes() - 1);
  std::sort(b.begin(), b.end());
  return b;
}

TEST(PlacementOptimizer, NeverOverVramBudgetAcrossASweep) {
  const CostModel m = make_model(1.0);
  for (uint64_t budget : budget_sweep(m)) {
    for (PlanStrategy s : {PlanStrategy::kPerExpert, PlanStrategy::kPerLayer}) {
      const Plan p = optimize(m, budget, s);
      EXPECT_LE(p.totals.gpu_bytes, budget) << "budget " << budget;
      if (!p.uses_gpu()) {
        EXPECT_EQ(p.totals.gpu_bytes, 0u);
      }
    }
  }
}

TEST(PlacementOptimizer, MoreVramNeverPredictsSlower) {
  for (double skew : {0.0, 1.0}) {
    const CostModel m = make_model(skew);
    double previous = 1e30, previous_layer = 1e30;
    for (uint64_t budget : budget_sweep(m)) {
      const double t = optimize(m, budget).prediction.decode_time_s;
      const double tl = optimize(m, budget, PlanStrategy::kPerLayer).prediction.decode_time_s;
      EXPECT_LE(t, previous * (1 + 1e-12)) << "skew " << skew << " budget " << budget;
      EXPECT_LE(tl, previous_layer * (1 + 1e-12)) << "skew " << skew << " budget " << budget;
      previous = t;
      previous_layer = tl;
    }
  }
}

TEST(PlacementOptimizer, SkewedStatisticsPutHotExpertsOnTheGpuFirst) {
  const CostModel m = make_model(1.2);
  const auto& p = m.inputs().probabilities;
  const uint32_t E = m.inputs().hp.num_experts;
  for (uint64_t budget : {3 * kGiB, 5 * kGiB, 8 * kGiB}) {
    const Plan plan = optimize(m, budget);
    ASSERT_GT(plan.totals.num_gpu_experts, 0u);
    ASSERT_GT(plan.totals.num_cpu_experts, 0u);
    for (uint32_t l = 0; l < plan.num_layers; ++l) {
      double min_gpu = 2, max_cpu = -1;
      for (uint32_t e = 0; e < E; ++e) {
        const double pe = p[static_cast<size_t>(l) * E + e];
        if (plan.layers[l].experts[e] == Device::kGpu) min_gpu = std::min(min_gpu, pe);
        else max_cpu = std::max(max_cpu, pe);
      }
      EXPECT_GE(min_gpu, max_cpu) << "block " << l << " budget " << budget;
    }
  }
}

TEST(PlacementOptimizer, PerExpertPlanIsNeverSlowerThanPerLayerSplit) {
  const CostModel m = make_model(1.0);
  bool strictly_better_somewhere = false;
  for (uint64_t budget : budget_sweep(m)) {
    const Plan pe = optimize(m, budget), pl = optimize(m, budget, PlanStrategy::kPerLayer);
    EXPECT_LE(pe.prediction.decode_time_s, pl.prediction.decode_time_s * (1 + 1e-12)) << budget;
    for (const LayerPlan& l : pl.layers) {
      const auto num_gpu = std::count(l.experts.begin(), l.experts.end(), Device::kGpu);
      EXPECT_TRUE(num_gpu == 0 || num_gpu == static_cast<long>(l.experts.size()));
    }
    strictly_better_somewhere |= pe.prediction.decode_time_s < 0.97 * pl.prediction.decode_time_s;
  }
  EXPECT_TRUE(strictly_better_somewhere) << "skewed statistics should make per-expert placement visibly better";
}

TEST(PlacementOptimizer, ZeroBudgetOrNoGpuPutsEverythingOnTheCpu) {
  const CostModel m = make_model(1.0);
  const Plan zero = optimize(m, 0);
  EXPECT_FALSE(zero.uses_gpu());
  EXPECT_EQ(zero.totals.num_cpu_experts, 24u * 32u);
  EXPECT_FALSE(zero.notes.empty());
  CostInputs in = test::gpt20b_inputs(1.0);
  in.rates.has_gpu = false;
  auto cpu_only = CostModel::create(in);
  ASSERT_TRUE(cpu_only);
  const Plan p = optimize(*cpu_only, 64 * kGiB);
  EXPECT_FALSE(p.uses_gpu());
  EXPECT_EQ(p.prediction.prefill_crossover_batch, 0u);
  // A budget below the GPU workspace: nothing fits, and the note says why.
  const Plan tiny = optimize(m, 1ull << 20);
  EXPECT_FALSE(tiny.uses_gpu());
  ASSERT_FALSE(tiny.notes.empty());
  EXPECT_NE(tiny.notes[0].find("workspace"), std::string::npos) << tiny.notes[0];
}

TEST(PlacementOptimizer, BudgetBiggerThanTheModelPutsEverythingOnTheGpu) {
  const CostModel m = make_model(1.0);
  for (uint64_t budget : {m.all_gpu_bytes(), 80 * kGiB}) {
    const Plan p = optimize(m, budget);
    EXPECT_EQ(p.totals.num_cpu_experts, 0u);
    EXPECT_EQ(p.output, Device::kGpu);
    for (const LayerPlan& l : p.layers) EXPECT_EQ(l.attention, Device::kGpu);
    EXPECT_EQ(p.totals.gpu_bytes, m.all_gpu_bytes());
    EXPECT_EQ(p.totals.cpu_bytes, m.inputs().bytes.embedding_bytes);  // only the embedding table stays in RAM
  }
}

TEST(PlacementOptimizer, RamBudgetIsMetOrRefused) {
  // Experts 0..7 of every block take all selections, 8..31 none, and CPU↔GPU hand-offs cost nothing: moving a
  // cold expert to the GPU gains nothing, so the fastest plan leaves VRAM free and only the RAM budget moves them.
  CostInputs in = test::gpt20b_inputs(0.0);
  for (size_t i = 0; i < in.probabilities.size(); ++i) in.probabilities[i] = i % 32 < 8 ? 0.5 : 0.0;
  in.rates.sync_latency_s = in.rates.pcie_latency_s = in.rates.cpu_block_overhead_s = 0;
  auto m = CostModel::create(in);
  ASSERT_TRUE(m);
  const Plan free_ram = optimize(*m, 8 * kGiB);
  ASSERT_LT(free_ram.totals.gpu_bytes + 2 * kGiB, 8 * kGiB) << "the test needs VRAM left over";
  const uint64_t ram = free_ram.totals.cpu_bytes - kGiB;
  const Plan p = optimize(*m, 8 * kGiB, PlanStrategy::kPerExpert, ram);
  EXPECT_LE(p.totals.cpu_bytes, ram);
  EXPECT_LE(p.totals.gpu_bytes, 8 * kGiB);
  EXPECT_GT(p.totals.gpu_bytes, free_ram.totals.gpu_bytes);
  // Far too little RAM for what the GPU cannot hold: an error that names the budget.
  PlanRequest r;
  r.vram_budget_bytes = 2 * kGiB;
  r.ram_budget_bytes = 1 * kGiB;
  auto refused = optimize_plan(*m, r);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("RAM budget"), std::string::npos) << refused.error().message;
}

TEST(PlacementOptimizer, DynamicPlacementOnWithAGpuUnlessStatic) {
  const CostModel m = make_model(1.0);
  EXPECT_TRUE(optimize(m, 5 * kGiB).dynamic.enabled);
  EXPECT_FALSE(optimize(m, 0).dynamic.enabled);                 // no GPU: nothing to migrate
  EXPECT_FALSE(optimize(m, m.all_gpu_bytes()).dynamic.enabled);  // everything already on the GPU
  PlanRequest r;
  r.vram_budget_bytes = 5 * kGiB;
  r.dynamic_placement = false;  // --placement static
  auto p = optimize_plan(m, r);
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->dynamic.enabled);
}

TEST(PlacementOptimizer, NumaNodesShareEachBlocksCpuExperts) {
  CostInputs in = test::gpt20b_inputs(1.0);
  in.rates.numa_node_read_bytes_per_s = {in.rates.cpu_read_bytes_per_s / 2, in.rates.cpu_read_bytes_per_s / 2};
  auto m = CostModel::create(in);
  ASSERT_TRUE(m);
  const Plan p = optimize(*m, 4 * kGiB);
  const uint32_t E = in.hp.num_experts;
  for (uint32_t l = 0; l < in.hp.num_layers; ++l) {
    const LayerPlan& lp = p.layers[l];
    ASSERT_EQ(lp.expert_numa_nodes.size(), E);
    double mass[2] = {0, 0}, max_p = 0;
    for (uint32_t e = 0; e < E; ++e) {
      if (lp.experts[e] == Device::kGpu) {
        EXPECT_EQ(lp.expert_numa_nodes[e], -1);
        continue;
      }
      ASSERT_TRUE(lp.expert_numa_nodes[e] == 0 || lp.expert_numa_nodes[e] == 1);
      const double pe = in.probabilities[l * E + e];
      mass[lp.expert_numa_nodes[e]] += pe;
      max_p = std::max(max_p, pe);
    }
    EXPECT_LE(std::abs(mass[0] - mass[1]), max_p + 1e-12) << "block " << l;
  }
}

TEST(PlacementCostModel, AllCpuDecodeIsBytesOverBandwidthPlusOverheads) {
  CostInputs in = test::gpt20b_inputs(0.0);
  in.rates.has_gpu = false;
  in.rates.cpu_attention_flops = 1e18;  // attention's FLOPs free: bytes only (CpuAttentionAtDepthCostsItsFlops)
  in.depth = 0;
  auto m = CostModel::create(in);
  ASSERT_TRUE(m);
  Plan p = all_cpu_plan(24, 32, 4, in.context_length);
  ASSERT_TRUE(m->evaluate(p));
  const DecodeTraffic t = decode_traffic(in.bytes, in.hp, 0);
  // Uniform probabilities k/E: expected expert bytes = k experts per block, the roofline traffic exactly.
  const double bw = in.rates.cpu_read_bytes_per_s * in.rates.cpu_expert_efficiency;
  ASSERT_EQ(in.rates.cpu_expert_efficiency, in.rates.cpu_dense_efficiency);
  const double expected = static_cast<double>(t.total()) / bw + 24 * in.rates.cpu_block_overhead_s;
  EXPECT_NEAR(p.prediction.decode_time_s, expected, expected * 1e-9);
  EXPECT_NEAR(p.prediction.decode_tok_s * p.prediction.decode_time_s, 1.0, 1e-12);
}

// At depth a CPU block's attention costs its scores and values, 4 · heads · head_dim FLOP per key read, at
// cpu_attention_flops, or its K/V bytes at the bandwidth if that is longer; with a slow FLOP rate the difference
// between depth 4096 and depth 0 is exactly the FLOP term's (less the K/V bytes' time at depth 0).
TEST(PlacementCostModel, CpuAttentionAtDepthCostsItsFlops) {
  CostInputs in = test::gpt20b_inputs(0.0);
  in.rates.has_gpu = false;
  in.rates.cpu_attention_flops = 1e9;  // slow enough that FLOPs, not K/V bytes, bound every block at both depths
  const auto predict = [&](uint32_t depth) {
    CostInputs d = in;
    d.depth = depth;
    auto m = CostModel::create(d);
    EXPECT_TRUE(m);
    Plan p = all_cpu_plan(24, 32, 4, d.context_length);
    EXPECT_TRUE(m->evaluate(p));
    return p.prediction.decode_time_s;
  };
  double flops_0 = 0, flops_4096 = 0;
  for (uint32_t l = 0; l < in.hp.num_layers; ++l) {
    flops_0 += 4.0 * in.hp.num_heads * in.hp.head_dim * static_cast<double>(kv_keys_read(in.hp, l, 0));
    flops_4096 += 4.0 * in.hp.num_heads * in.hp.head_dim * static_cast<double>(kv_keys_read(in.hp, l, 4096));
  }
  const double expected = (flops_4096 - flops_0) / in.rates.cpu_attention_flops;
  EXPECT_NEAR(predict(4096) - predict(0), expected, expected * 1e-9);
  EXPECT_GT(expected, 0.1);  // the term is there: 0.1 s and more at this rate
}

// The attention rate probe runs the tiled kernels (f32, and bf16 where the CPU has them) and returns a finite positive
// FLOP rate; bad arguments are errors.
TEST(PlacementCostModel, AttentionRateProbeMeasuresAndRefusesBadArguments) {
  for (const bool bf16 : {false, true}) {
    auto rate = measure_cpu_attention_flops(1, 1, bf16);
    ASSERT_TRUE(rate) << rate.error().to_string();
    EXPECT_TRUE(std::isfinite(*rate)) << bf16;
    EXPECT_GT(*rate, 0.0) << bf16;
  }
  EXPECT_FALSE(measure_cpu_attention_flops(0, 1));
  EXPECT_FALSE(measure_cpu_attention_flops(1, 0));
}

TEST(PlacementCostModel, PrefillStreamingCrossoverDependsOnPcie) {
  const CostModel m = make_model(1.0);
  const Plan p = optimize(m, 5 * kGiB);
  ASSERT_GT(p.totals.num_cpu_experts, 0u);
  // Streaming a used expert costs its bytes over PCIe once per batch; CPU compute grows with the batch: streaming
  // wins from some batch on.
  EXPECT_GT(p.prediction.prefill_crossover_batch, 1u);
  EXPECT_GT(p.prediction.prefill_tok_s, 0.0);
  CostInputs slow = test::gpt20b_inputs(1.0);
  slow.rates.pcie_bytes_per_s = 1e6;  // 1 MB/s: streaming never pays
  auto ms = CostModel::create(slow);
  ASSERT_TRUE(ms);
  Plan q = p;
  ASSERT_TRUE(ms->evaluate(q));
  EXPECT_EQ(q.prediction.prefill_crossover_batch, 0u);
  EXPECT_LE(q.prediction.prefill_tok_s, p.prediction.prefill_tok_s);
}

TEST(PlacementCostModel, NumaPredictionTakesTheSlowestNode) {
  CostInputs in = test::gpt20b_inputs(0.0);
  in.rates.has_gpu = false;
  in.rates.numa_node_read_bytes_per_s = {in.rates.cpu_read_bytes_per_s / 2, in.rates.cpu_read_bytes_per_s / 2};
  auto m = CostModel::create(in);
  ASSERT_TRUE(m);
  Plan balanced = all_cpu_plan(24, 32, 4, in.context_length), one_node = balanced, unknown = balanced;
  for (LayerPlan& l : balanced.layers)
    for (uint32_t e = 0; e < 32; ++e) l.expert_numa_nodes.push_back(static_cast<int32_t>(e % 2));
  for (LayerPlan& l : one_node.layers) l.expert_numa_nodes.assign(32, 0);
  ASSERT_TRUE(m->evaluate(balanced));
  ASSERT_TRUE(m->evaluate(one_node));
  ASSERT_TRUE(m->evaluate(unknown));
  // Uniform probabilities split evenly over two half-bandwidth nodes = one node at the sum; all on one node of
  // half the bandwidth takes twice the expert time.
  EXPECT_NEAR(balanced.prediction.decode_time_s, unknown.prediction.decode_time_s, 1e-12);
  EXPECT_LT(balanced.layers[0].cpu_time_s, one_node.layers[0].cpu_time_s);
  EXPECT_GT(one_node.prediction.decode_time_s, balanced.prediction.decode_time_s);
}

TEST(PlacementCostModel, RejectsMismatchedShapesAndBadRates) {
  CostInputs in = test::gpt20b_inputs(0.0);
  in.probabilities.pop_back();
  EXPECT_FALSE(CostModel::create(in));
  in = test::gpt20b_inputs(0.0);
  in.rates.cpu_read_bytes_per_s = 0;
  EXPECT_FALSE(CostModel::create(in));
  in = test::gpt20b_inputs(0.0);
  in.rates.cpu_attention_flops = 0;
  EXPECT_FALSE(CostModel::create(in));
  auto m = CostModel::create(test::gpt20b_inputs(0.0));
  ASSERT_TRUE(m);
  Plan wrong = all_cpu_plan(23, 32, 4, 8192);
  EXPECT_FALSE(m->evaluate(wrong));
}

TEST(PlanJson, RoundTripKeepsPlacementTotalsAndPrediction) {
  const CostModel m = make_model(1.0);
  Plan p = optimize(m, 5 * kGiB);
  p.model_name = "round \"trip\"";
  p.layers[3].expert_numa_nodes.assign(32, 1);
  p.layers[3].expert_numa_nodes[0] = -1;
  const nlohmann::json j = plan_to_json(p);
  for (const char* key : {"layers", "totals", "prediction"}) EXPECT_TRUE(j.contains(key)) << key;
  auto back = plan_from_json(nlohmann::json::parse(j.dump()), "test");
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_TRUE(back->same_placement(p));
  EXPECT_EQ(back->model_name, p.model_name);
  EXPECT_EQ(back->totals.gpu_bytes, p.totals.gpu_bytes);
  EXPECT_EQ(back->totals.cpu_bytes, p.totals.cpu_bytes);
  EXPECT_EQ(back->totals.num_gpu_experts, p.totals.num_gpu_experts);
  EXPECT_EQ(back->vram_budget_bytes, p.vram_budget_bytes);
  EXPECT_EQ(back->notes, p.notes);
  EXPECT_NEAR(back->prediction.decode_time_s, p.prediction.decode_time_s, 1e-15);
  EXPECT_NEAR(back->layers[5].step_time_s, p.layers[5].step_time_s, 1e-15);
  EXPECT_EQ(plan_to_json(*back).dump(), j.dump());
}

TEST(PlanJson, LoadNamesWhatIsWrong) {
  const CostModel m = make_model(1.0);
  const nlohmann::json good = plan_to_json(optimize(m, 4 * kGiB));
  auto expect_error = [](nlohmann::json j, const std::string& needle) {
    auto p = plan_from_json(j, "plan.json");
    ASSERT_FALSE(p) << needle;
    EXPECT_EQ(p.error().code, ErrorCode::kFormat);
    EXPECT_NE(p.error().message.find(needle), std::string::npos) << p.error().message;
  };
  nlohmann::json j = good;
  j.erase("totals");
  expect_error(j, "'totals'");
  j = good;
  j["layers"][2]["gpu_experts"] = nlohmann::json::array({0});
  j["layers"][2]["cpu_experts"] = nlohmann::json::array();
  for (int e = 0; e < 32; ++e) j["layers"][2]["cpu_experts"].push_back(e);  // expert 0 listed twice
  expect_error(j, "layers[2]");
  j = good;
  j["layers"][1]["gpu_experts"] = nlohmann::json::array({99});
  expect_error(j, "layers[1].gpu_experts");
  j = good;
  j["layers"].erase(0);
  expect_error(j, "num_layers");
  j = good;
  j["layers"][0]["attention"] = "tpu";
  expect_error(j, "\"cpu\" or \"gpu\"");
  j = good;
  j["format"] = "something-else";
  expect_error(j, "format");
  EXPECT_FALSE(plan_from_json(nlohmann::json::array(), "x"));
  j = good;
  j["kv_type"] = "q5_1";  // not a KV cache type hetmoe has
  expect_error(j, "'kv_type' is 'q5_1'");
  j = good;
  j["kv_type"] = "q8_0/q5_1";
  expect_error(j, "'kv_type' is 'q8_0/q5_1'");
}

TEST(PlacementOptimizer, PlanFileKeepsQuantizedAndSplitKvTypes) {
  const CostModel m = make_model(1.0);
  for (const char* kv_type : {"q8_0", "q4_0", "q8_0/q4_0", "f32"}) {
    nlohmann::json j = plan_to_json(optimize(m, 4 * kGiB));
    j["kv_type"] = kv_type;
    auto back = plan_from_json(j, "plan.json");
    ASSERT_TRUE(back) << kv_type << ": " << back.error().to_string();
    EXPECT_EQ(back->kv_type, kv_type);
  }
}

TEST(PlacementOptimizer, Gpt120bShapePlansAndStaysInBudget) {
  const CostModel m = make_model(1.0, 36, 128);
  const Plan p = optimize(m, 24 * kGiB);
  EXPECT_LE(p.totals.gpu_bytes, 24 * kGiB);
  EXPECT_GT(p.totals.num_gpu_experts, 0u);
  EXPECT_GT(p.totals.num_cpu_experts, 0u);
  EXPECT_LE(p.prediction.decode_time_s, optimize(m, 24 * kGiB, PlanStrategy::kPerLayer).prediction.decode_time_s);
}

}  // namespace
}  // namespace hetmoe::placement
