// The runtime runs from Plans (runtime/cli/plan_options.h, create_forward): `generate --plan FILE` with a plan from
// `hetmoe plan`, a GPU plan with --device cpu, plans of another model, --stats-out files that placement loads and
// merges, the config file's keys (runtime/exec/forward_factory.h apply_runtime_config and the placement keys).
#include <gtest/gtest.h>

#include "gpu_kernels/cuda_device.h"
#include "placement/expert_stats.h"
#include "placement/plan.h"
#include "runtime/app/config.h"
#include "runtime/app/runtime_options.h"
#include "runtime/exec/forward_factory.h"
#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

bool has_gpu() {
  auto devices = gpu::list_devices();
  return devices && !devices->empty();
}

class RunPlanCli : public test::CliTest {
 protected:
  test::RunResult generate(const std::string& flags) {
    return run("generate -m " + kTiny + " -p hello -n 6 --raw --seed 3 -t 2 -c 256 " + flags);
  }
  std::string path(const char* name) const { return (dir_ / name).string(); }
  /// `hetmoe plan` for the tiny model at context 256 into `file`.
  void make_plan(const std::string& vram_budget, const std::string& file) {
    const test::RunResult r = run("plan -m " + kTiny + " --vram-budget " + vram_budget + " -c 256 -o " + file);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
};

TEST_F(RunPlanCli, GenerateRunsAnAllCpuPlanFileAsIsWithTheSameOutput) {
  make_plan("0", path("plan.json"));
  const test::RunResult planned = generate("--device cpu --plan " + path("plan.json"));
  ASSERT_EQ(planned.exit_code, 0) << planned.err;
  EXPECT_NE(planned.err.find("plan: 4 blocks"), std::string::npos) << planned.err;
  EXPECT_NE(planned.err.find("--plan " + path("plan.json")), std::string::npos) << planned.err;
  const test::RunResult unplanned = generate("--device cpu");
  ASSERT_EQ(unplanned.exit_code, 0) << unplanned.err;
  EXPECT_EQ(planned.out, unplanned.out);  // the same all-CPU placement, the same tokens
}

TEST_F(RunPlanCli, GpuPlanWithDeviceCpuIsAnErrorNamingTheConflict) {
  make_plan("1GiB", path("gpu.json"));
  auto plan = placement::plan_load(path("gpu.json"));
  ASSERT_TRUE(plan) << plan.error().to_string();
  ASSERT_TRUE(plan->uses_gpu());
  const test::RunResult r = generate("--device cpu --plan " + path("gpu.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--device cpu conflicts with the plan"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST_F(RunPlanCli, GpuPlanWithAutoAndNoGpuRunsOnTheCpuAndSaysSo) {
  if (has_gpu()) GTEST_SKIP() << "this machine has a GPU";
  make_plan("1GiB", path("gpu.json"));
  const test::RunResult r = generate("--plan " + path("gpu.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("running on the CPU (the plan's GPU placement is not used)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("all 32 experts on the CPU"), std::string::npos) << r.err;
}

TEST_F(RunPlanCli, PlanOfAnotherModelAndPlanWithStaticFlagsAreErrors) {
  ASSERT_TRUE(placement::plan_save(placement::all_cpu_plan(5, 8, 2, 256), path("other.json")));
  test::RunResult r = generate("--plan " + path("other.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the plan is for 5 layers"), std::string::npos) << r.err;
  make_plan("0", path("plan.json"));
  r = generate("--plan " + path("plan.json") + " --n-gpu-experts 2");
  EXPECT_EQ(r.exit_code, 2);  // a usage error: the parser refuses the pair
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
  r = generate("--placement sometimes");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--placement: sometimes not in {static,dynamic}"), std::string::npos) << r.err;
}

TEST_F(RunPlanCli, StatsOutLoadsMergesWithProfileAndFeedsThePlanner) {
  const test::RunResult r = generate("--device cpu --stats-out " + path("run.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto stats = placement::expert_stats_load(path("run.json"));  // checks every row sums to top-k × tokens
  ASSERT_TRUE(stats) << stats.error().to_string();
  EXPECT_EQ(stats->num_layers, 4u);
  EXPECT_EQ(stats->num_experts, 8u);
  EXPECT_GT(stats->num_tokens, 6u);  // the prompt and the decoded tokens fed back
  std::ofstream(path("prompts.txt")) << "hello there\n";
  test::RunResult p = run("profile -m " + kTiny + " -f " + path("prompts.txt") + " -o " + path("profile.json") + " -n 2 -t 1 -c 128");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  p = run("profile --merge " + path("run.json") + "," + path("profile.json") + " -o " + path("merged.json"));
  ASSERT_EQ(p.exit_code, 0) << p.err;
  auto merged = placement::expert_stats_load(path("merged.json"));
  auto profiled = placement::expert_stats_load(path("profile.json"));
  ASSERT_TRUE(merged && profiled);
  EXPECT_EQ(merged->num_tokens, stats->num_tokens + profiled->num_tokens);
  const test::RunResult planned = generate("--device cpu --stats " + path("merged.json"));
  ASSERT_EQ(planned.exit_code, 0) << planned.err;
}

TEST_F(RunPlanCli, StatsOutWithTheReferenceIsAnErrorNotAnEmptyFile) {
  const test::RunResult r = generate("--reference --stats-out " + path("run.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no expert selection was counted"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(path("run.json")));
}

TEST_F(RunPlanCli, ConfigFileKeysTakeEffectAndFlagsOverrideThem) {
  std::ofstream(path("c.toml")) << "[threads]\nper_node = 1\nsmt = false\n[numa]\npolicy = \"none\"\n"
                                   "[placement]\nmode = \"static\"\nprefill_crossover = 32\n"
                                   "overrides = [{layer = 0, expert = 1, device = \"gpu\"}]\n"
                                   "[placement.dynamic]\nreplan_interval = 8\n";
  test::RunResult r = generate("--config " + path("c.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  if (!has_gpu()) {
    EXPECT_NE(r.err.find("the 1 pins are not applied"), std::string::npos) << r.err;
  }
  // per_node with -t on the command line: the flag wins, no conflict.
  r = run("generate -m " + kTiny + " -p hello -n 2 --raw --seed 3 -t 1 -c 256 --config " + path("c.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(path("bad.toml")) << "[threads]\ncount = 2\nper_node = 1\n";
  r = generate("--config " + path("bad.toml"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.toml:3:12: threads.per_node: excludes threads.count"), std::string::npos) << r.err;
  std::ofstream(path("budget.toml")) << "[gpu]\nvram_budget = 0\n";
  r = generate("--device auto --config " + path("budget.toml"));  // as --vram-budget 0
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("gpu.vram_budget = 0"), std::string::npos) << r.err;
  r = generate("--device auto --vram-budget 1GiB --config " + path("budget.toml"));  // the flag overrides the file
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(RunPlanCli, BenchAndEvalTakeTheConfigAndRunFromAPlan) {
  std::ofstream(path("c.toml")) << "[numa]\npolicy = \"local\"\n[placement]\nmode = \"static\"\n";
  test::RunResult r = run("bench -m " + kTiny + " -p 4 -n 2 -r 1 -t 1 --device cpu --config " + path("c.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("plan: 4 blocks"), std::string::npos) << r.err;
  std::ofstream(path("ids.txt")) << "1 2 3\n";
  r = run("eval -m " + kTiny + " --ids " + path("ids.txt") + " --logits-out " + path("l.f32") +
          " -c 64 --device cpu --config " + path("c.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::filesystem::file_size(path("l.f32")), 3u * 4106u * 4u);
}

TEST(RuntimeConfig, ThreadNumaAndGpuKeysMapOntoForwardOptions) {
  RuntimeConfig c;
  c.threads.per_node = 3;
  c.threads.smt = false;
  c.numa.policy = NumaPolicy::kNone;
  c.gpu.id = 1;
  ForwardOptions o;
  o.num_threads = 8;
  ASSERT_TRUE(apply_runtime_config(c, /*threads_given=*/false, o));
  EXPECT_EQ(o.thread_layout.threads_per_node, 3);
  EXPECT_EQ(o.num_threads, 0);  // the count follows from per_node
  EXPECT_EQ(o.thread_layout.smt, placement::SmtUse::kNo);
  EXPECT_EQ(o.numa_policy, NumaPolicy::kNone);
  EXPECT_EQ(o.gpu_idx, 1);

  ForwardOptions given;
  given.num_threads = 8;
  ASSERT_TRUE(apply_runtime_config(c, /*threads_given=*/true, given));  // -t wins over per_node
  EXPECT_EQ(given.thread_layout.threads_per_node, 0);
  EXPECT_EQ(given.num_threads, 8);

  RuntimeConfig cores;
  cores.threads.cores = std::vector<int>{0, 1};
  cores.threads.smt = true;
  ForwardOptions o2;
  o2.num_threads = 8;
  ASSERT_TRUE(apply_runtime_config(cores, false, o2));
  EXPECT_EQ(o2.thread_layout.worker_pus, (std::vector<int>{0, 1}));
  EXPECT_EQ(o2.num_threads, 0);  // one per listed CPU
  EXPECT_EQ(o2.thread_layout.smt, placement::SmtUse::kYes);

  RuntimeConfig both;
  both.threads.count = 2;
  both.threads.per_node = 1;
  ForwardOptions o3;
  auto s = apply_runtime_config(both, true, o3);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("threads.count and threads.per_node"), std::string::npos);
}

// [model] attention_bf16: true turns ForwardOptions::attention_bf16 on; false leaves a flag's true as it is.
TEST(RuntimeConfig, AttentionBf16KeyTurnsTheOptionOnAndFalseKeepsTheFlag) {
  RuntimeConfig on;
  on.model.attention_bf16 = true;
  ForwardOptions o;
  ASSERT_TRUE(apply_runtime_config(on, false, o));
  EXPECT_TRUE(o.attention_bf16);
  RuntimeConfig off;
  off.model.attention_bf16 = false;
  ForwardOptions flagged;
  flagged.attention_bf16 = true;  // --attention-bf16
  ASSERT_TRUE(apply_runtime_config(off, false, flagged));
  EXPECT_TRUE(flagged.attention_bf16);
  ForwardOptions plain;
  ASSERT_TRUE(apply_runtime_config(RuntimeConfig{}, false, plain));
  EXPECT_FALSE(plain.attention_bf16);
}

}  // namespace
}  // namespace hetmoe
