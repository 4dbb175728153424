#pragma once
// Whether the GPU tests can run here, and what they do when they cannot: skip — or, with HETMOE_REQUIRE_GPU=1
// (scripts/gpu_check.sh sets it), fail, so that a missing or unusable GPU (no device, a driver too old for this
// CUDA build, a device older than sm_75, a build without code for the device) is never a false green.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "gpu_kernels/cuda_device.h"
#if HETMOE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "gpu_kernels/ops.h"
#endif

namespace hetmoe::test {

/// True when the environment has HETMOE_REQUIRE_GPU=1.
inline bool gpu_required() {
  const char* v = std::getenv("HETMOE_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

/// Empty when GPU 0 can run this build's kernels, else why not (computed once per process: lists the devices,
/// checks the compute capability, then launches one kernel and waits for it).
inline const std::string& gpu_unusable_reason() {
  static const std::string reason = []() -> std::string {
    if (!gpu::cuda_built()) return "hetmoe was built without CUDA";
    auto devices = gpu::list_devices();
    if (!devices) return "no usable GPU: " + devices.error().message;
    if (devices->empty()) return "no CUDA GPU on this machine";
    const gpu::DeviceInfo& d = devices->front();
    if (d.compute_major * 10 + d.compute_minor < 75)
      return "GPU 0 (" + d.name + ") has compute capability " + std::to_string(d.compute_major) + "." +
             std::to_string(d.compute_minor) + "; hetmoe needs 7.5";
#if HETMOE_HAVE_CUDA
    float* buf = nullptr;
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&buf), 4 * sizeof(float));
    if (e == cudaSuccess) {
      e = gpu::add_vectors(buf, buf, nullptr, 4, buf, nullptr);
      if (e == cudaSuccess) e = cudaDeviceSynchronize();
      cudaFree(buf);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("a test kernel did not run on GPU 0: ") + cudaGetErrorName(e) + " (" +
             cudaGetErrorString(e) + ")";
    }
#endif
    return std::string();
  }();
  return reason;
}

inline bool gpu_usable() { return gpu_unusable_reason().empty(); }

}  // namespace hetmoe::test

/// First line of a GPU test (or its fixture's SetUp): skips when GPU 0 is not usable, fails instead under
/// HETMOE_REQUIRE_GPU=1.
#define HETMOE_SKIP_WITHOUT_GPU()                                                           \
  do {                                                                                     \
    if (const std::string& why_ = ::hetmoe::test::gpu_unusable_reason(); !why_.empty()) {  \
      if (::hetmoe::test::gpu_required()) GTEST_FAIL() << "HETMOE_REQUIRE_GPU=1, but " << why_; \
      GTEST_SKIP() << why_;                                                                \
    }                                                                                      \
  } while (0)
