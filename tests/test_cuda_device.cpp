// CUDA device discovery. Runs everywhere: without a usable GPU (or without a CUDA build) the GPU part skips, or fails
// under HETMOE_REQUIRE_GPU=1 (tests/gpu_test_support.h).
#include <gtest/gtest.h>

#include "gpu_kernels/cuda_device.h"
#include "tests/gpu_test_support.h"

namespace hetmoe {
namespace {

TEST(CudaDevice, ListDevicesAnswersWithoutCrashingOnAnyMachine) {
  auto devices = gpu::list_devices();
  if (!gpu::cuda_built()) {
    ASSERT_FALSE(devices.has_value());
    EXPECT_EQ(devices.error().code, ErrorCode::kUnsupported);
    return;
  }
  // With CUDA built: either a list (possibly empty: no GPU or no driver) or a driver error with a message.
  if (!devices) {
    EXPECT_FALSE(devices.error().message.empty());
  }
}

TEST(CudaDevice, GpuReportsNameMemoryAndComputeCapability) {
  HETMOE_SKIP_WITHOUT_GPU();
  auto devices = gpu::list_devices();
  ASSERT_TRUE(devices.has_value());
  for (const auto& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.compute_major, 7);  // the oldest architecture we build for is sm_75
    EXPECT_GT(d.total_bytes, 0u);
    EXPECT_GT(d.num_sms, 0);
    auto free_bytes = gpu::device_free_bytes(d.device_idx);
    ASSERT_TRUE(free_bytes.has_value()) << free_bytes.error().to_string();
    EXPECT_LE(*free_bytes, d.total_bytes);
  }
}

}  // namespace
}  // namespace hetmoe
