// CUDA device discovery. Runs everywhere: without a GPU (or without a CUDA build) the GPU part skips cleanly.
#include <gtest/gtest.h>

#include "gpu_kernels/cuda_device.h"

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
  auto devices = gpu::list_devices();
  if (!devices || devices->empty()) GTEST_SKIP() << "no CUDA GPU on this machine";
  for (const auto& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.compute_major, 7);  // the oldest architecture we build for is sm_75
    EXPECT_GT(d.total_bytes, 0u);
    EXPECT_LE(d.free_bytes, d.total_bytes);
    EXPECT_GT(d.num_sms, 0);
  }
}

}  // namespace
}  // namespace hetmoe
