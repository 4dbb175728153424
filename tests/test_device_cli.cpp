// The device flags of generate (--device, --vram-budget, --n-gpu-experts, --cpu-moe) through the hetmoe program:
// on a machine without a usable GPU, auto runs on the CPU and says so, gpu is an error; bad values are errors.
#include <gtest/gtest.h>

#include <cstdio>

#include "gpu_kernels/cuda_device.h"
#include "tests/cli_runner.h"
#include "tests/gpu_test_support.h"

namespace hetmoe {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

bool has_gpu() {
  auto devices = gpu::list_devices();
  return devices && !devices->empty();
}

/// Runs a test binary of this build with `env` prepended (e.g. "HETMOE_REQUIRE_GPU=1"); exit code and output.
test::RunResult run_test_binary(const std::string& name, const std::string& env) {
  const std::string cmd = "env " + env + " " + std::string(HETMOE_BINARY_DIR) + "/bin/" + name + " 2>&1";
  test::RunResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// HETMOE_REQUIRE_GPU=1 (tests/gpu_test_support.h) turns the GPU tests' skips into failures, so that gpu_check.sh on a
// machine whose GPU cannot be used (no device, a driver too old for CUDA 13) is not a false green. Proved here, on
// a machine without a usable GPU, with the GPU test binary test_cuda_device: it passes (skipping) without the
// variable and fails with it.
TEST(RequireGpu, WithoutAUsableGpuTheGpuTestsFailInsteadOfSkipping) {
  if (test::gpu_usable()) GTEST_SKIP() << "this machine has a usable GPU: the GPU tests run for real there";
  const test::RunResult skipped = run_test_binary("test_cuda_device", "HETMOE_REQUIRE_GPU=0");
  EXPECT_EQ(skipped.exit_code, 0) << skipped.out;
  EXPECT_NE(skipped.out.find("SKIPPED"), std::string::npos) << skipped.out;
  const test::RunResult required = run_test_binary("test_cuda_device", "HETMOE_REQUIRE_GPU=1");
  EXPECT_NE(required.exit_code, 0) << required.out;
  EXPECT_NE(required.out.find("HETMOE_REQUIRE_GPU=1, but " + test::gpu_unusable_reason()), std::string::npos)
      << required.out;
}

class DeviceCli : public test::CliTest {
 protected:
  test::RunResult generate(const std::string& flags) {
    return run("generate -m " + kTiny + " -p hello -n 2 --raw --seed 1 -t 2 " + flags);
  }
};

TEST_F(DeviceCli, AutoWithoutAGpuRunsOnTheCpuAndSaysWhy) {
  if (has_gpu()) GTEST_SKIP() << "this machine has a GPU";
  const test::RunResult r = generate("--device auto");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("running on the CPU"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(gpu::cuda_built() ? "no GPU found" : "built without CUDA"), std::string::npos) << r.err;
}

TEST_F(DeviceCli, GpuWithoutAGpuIsAClearError) {
  if (has_gpu()) GTEST_SKIP() << "this machine has a GPU";
  const test::RunResult r = generate("--device gpu --n-gpu-experts 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--device gpu"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("running on the CPU"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST_F(DeviceCli, CpuDeviceSaysNothingAboutGpus) {
  const test::RunResult r = generate("--device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("GPU"), std::string::npos) << r.err;
}

TEST_F(DeviceCli, BadDeviceBudgetAndConflictingExpertFlagsAreErrors) {
  struct Case {
    const char* flags;
    const char* message;
    int exit_code;  // 2: the parser refuses the value (docs/cli.md, exit codes)
  };
  for (const Case& c : {Case{"--device tpu", "--device: tpu not in {auto,cpu,gpu}", 2},
                        Case{"--vram-budget 6parsecs", "'6parsecs' has an unknown unit", 2},
                        Case{"--vram-budget 0", "--device cpu", 1},
                        Case{"--cpu-moe --n-gpu-experts 2", "excludes", 2},
                        Case{"--reference --device gpu", "--reference runs on the CPU", 1}}) {
    const test::RunResult r = generate(c.flags);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.flags;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.flags << ": " << r.err;
  }
}

}  // namespace
}  // namespace hetmoe
