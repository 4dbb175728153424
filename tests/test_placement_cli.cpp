// hetmoe plan and hetmoe profile as a user runs them, on the tiny fixture and on a header-only gpt-oss-120b file
// (sparse: a valid header, no data on disk); and the runtime's refusal of a plan it cannot execute.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "placement/expert_stats.h"
#include "placement/plan.h"
#include "runtime/exec/forward_factory.h"
#include "tests/cli_runner.h"
#include "tests/placement_fixture.h"

namespace hetmoe::test {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

class PlacementCli : public CliTest {};

TEST_F(PlacementCli, PlanJsonIsAValidPlan) {
  const RunResult r = run("plan -m " + kTiny + " --vram-budget 0 -c 256 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* key : {"layers", "totals", "prediction"}) EXPECT_TRUE(j.contains(key)) << key;
  auto plan = placement::plan_from_json(j, "stdout");
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_FALSE(plan->uses_gpu());
  EXPECT_EQ(plan->num_layers, 4u);
  EXPECT_GT(plan->prediction.decode_tok_s, 0.0);
}

TEST_F(PlacementCli, PlanTableShowsBlocksTotalsAndPerLayerComparison) {
  const RunResult r = run("plan -m " + kTiny + " --vram-budget 1GiB --ram-budget 1GiB -c 256");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text : {"block", "totals:", "prediction: decode", "tok/s", "best per-layer split"})
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
}

TEST_F(PlacementCli, PlanOnAHeaderOnlyGpt120bFile) {
  const std::string path = (dir_ / "gpt-oss-120b-header.gguf").string();
  ASSERT_TRUE(write_header_only_gguf(path, 36, 128));
  const RunResult r = run("plan -m " + path + " --vram-budget 24GiB -c 32768 -o " + (dir_ / "plan.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("best per-layer split"), std::string::npos);
  auto plan = placement::plan_load((dir_ / "plan.json").string());
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_EQ(plan->num_layers, 36u);
  EXPECT_EQ(plan->num_experts, 128u);
  EXPECT_LE(plan->totals.gpu_bytes, 24ull << 30);
  EXPECT_GT(plan->totals.num_gpu_experts, 0u);
  EXPECT_GT(plan->totals.num_cpu_experts, 0u);
}

// The RAM tier and the memory lines on a header-only gpt-oss-20b (24 × 32 experts, 12 GB sparse): at a 10 GiB
// budget the file is mapped and the coldest experts are paged; with room to spare nothing is; when even the dense
// weights, KV cache and buffers exceed the budget the plan says so and names a context that fits.
TEST_F(PlacementCli, PlanPagesColdExpertsWhenRamIsShortAndSaysWhatFits) {
  const std::string path = (dir_ / "gpt-oss-20b-header.gguf").string();
  ASSERT_TRUE(write_header_only_gguf(path, 24, 32));
  const std::string json_path = (dir_ / "plan.json").string();
  RunResult r = run("plan -m " + path + " --ram-budget 10GiB -c 8192 -o " + json_path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("memory: needs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("paged from disk"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("cannot fit"), std::string::npos) << r.out;
  auto plan = placement::plan_load(json_path);
  ASSERT_TRUE(plan) << plan.error().to_string();
  ASSERT_TRUE(plan->ram_tier.enabled);
  EXPECT_GT(plan->ram_tier.num_paged_experts, 0u);
  EXPECT_LT(plan->ram_tier.resident_bytes, 10ull << 30);

  r = run("plan -m " + path + " --ram-budget 64GiB -c 8192");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("memory: needs"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("paged from disk"), std::string::npos) << r.out;

  r = run("plan -m " + path + " --ram-budget 3GiB -c 131072");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("this run cannot fit"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-c "), std::string::npos) << r.out;
}

// With the attention on the GPU the KV cache is in VRAM, in the chosen type: the memory line says how much of the
// VRAM it takes and in which type, and q8_0 takes 34 / 64 of f16's bytes (head_dim 64: 68-byte rows against 128).
TEST_F(PlacementCli, PlanMemoryLineShowsTheGpuKvCacheInItsType) {
  const std::string path = (dir_ / "gpt-oss-20b-header.gguf").string();
  ASSERT_TRUE(write_header_only_gguf(path, 24, 32));
  const auto gpu_kv = [&](const char* type) -> double {
    const RunResult r = run("plan -m " + path + " --vram-budget 24GiB -c 32768 --kv-type " + type);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string key = " in VRAM (KV cache ";
    const size_t at = r.out.find(key);
    EXPECT_NE(at, std::string::npos) << r.out;
    if (at == std::string::npos) return 0.0;
    EXPECT_NE(r.out.find(std::string(" of it, ") + type + ")", at), std::string::npos) << r.out;
    return std::stod(r.out.substr(at + key.size()));
  };
  const double f16 = gpu_kv("f16"), q8_0 = gpu_kv("q8_0");
  // The plan's header line names the type too (it said "f32" for every type but f16).
  const RunResult r = run("plan -m " + path + " --vram-budget 24GiB -c 32768 --kv-type q4_0");
  EXPECT_NE(r.out.find("(q4_0 KV cache)"), std::string::npos) << r.out;
  ASSERT_GT(f16, 0.0);
  EXPECT_NEAR(q8_0 / f16, 68.0 / 128.0, 0.02);  // the GiB figures are printed to two decimals
}

TEST_F(PlacementCli, PlanRefusesBadArguments) {
  RunResult r = run("plan -m " + kTiny + " --vram-budget 8XB");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--vram-budget"), std::string::npos) << r.err;
  r = run("plan -m " + kTiny + " -c 999999999");
  EXPECT_NE(r.exit_code, 0);
  r = run("plan -m " + kTiny + " --vram-budget 1GiB --ram-budget 1KiB -c 256");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("RAM budget"), std::string::npos) << r.err;
}

TEST_F(PlacementCli, ProfileCountsMergesAndFeedsPlan) {
  const std::string prompts = (dir_ / "prompts.txt").string();
  std::ofstream(prompts) << "the quick brown fox\n\n{\"prompt\": \"jumps over the lazy dog\"}\nhello world\n";
  const std::string a = (dir_ / "a.json").string(), b = (dir_ / "b.json").string(), m = (dir_ / "m.json").string();
  RunResult r = run("profile -m " + kTiny + " -f " + prompts + " -o " + a + " -n 3 -t 1 -c 128");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto stats = placement::expert_stats_load(a);  // validates: every row sums to top-k × tokens
  ASSERT_TRUE(stats) << stats.error().to_string();
  EXPECT_GT(stats->num_tokens, 9u);  // three prompts and 3 decoded tokens each
  r = run("profile --merge " + a + "," + a + " -o " + m);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto merged = placement::expert_stats_load(m);
  ASSERT_TRUE(merged);
  EXPECT_EQ(merged->num_tokens, 2 * stats->num_tokens);
  r = run("plan -m " + kTiny + " --vram-budget 0 -c 128 --stats " + m);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(m), std::string::npos);
  // Statistics of another shape: refused by merge and by plan.
  ASSERT_TRUE(placement::expert_stats_save(placement::ExpertStats::zeros(5, 8, 2), b));
  r = run("profile --merge " + a + "," + b + " -o " + m);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("different shapes"), std::string::npos) << r.err;
  r = run("plan -m " + kTiny + " --stats " + b);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("5 layers"), std::string::npos) << r.err;
  // A prompt file with a bad JSON line names the line.
  std::ofstream(prompts) << "fine\n{\"text\": 1}\n";
  r = run("profile -m " + kTiny + " -f " + prompts + " -o " + a);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(":2:"), std::string::npos) << r.err;
}

TEST(ForwardFactoryPlan, CpuPathRunsAllCpuPlansAndDeviceCpuRefusesGpuPlacements) {
  auto model = Model::load(kTiny);
  ASSERT_TRUE(model);
  const ModelHparams& hp = model->hparams;
  placement::Plan plan = placement::all_cpu_plan(hp.num_layers, hp.num_experts, hp.num_experts_used, 64);
  ForwardOptions options;
  options.context_length = 64;
  options.num_threads = 1;
  options.plan = &plan;
  EXPECT_TRUE(create_forward(*model, options));
  plan.layers[1].experts[3] = placement::Device::kGpu;
  auto refused = create_forward(*model, options);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("--device cpu conflicts with the plan"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("1 expert and"), std::string::npos) << refused.error().message;
  options.use_reference = true;
  auto reference = create_forward(*model, options);
  ASSERT_FALSE(reference);
  EXPECT_NE(reference.error().message.find("--reference"), std::string::npos);
  options.use_reference = false;
  placement::Plan wrong_shape = placement::all_cpu_plan(hp.num_layers + 1, hp.num_experts, hp.num_experts_used, 64);
  options.plan = &wrong_shape;
  auto mismatch = create_forward(*model, options);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace hetmoe::test
