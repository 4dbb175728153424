#include <cuda_runtime.h>
#include <fmt/format.h>

#include <utility>

#include "gpu_kernels/cuda_device.h"

namespace hetmoe::gpu {

bool cuda_built() { return true; }

Expected<std::vector<DeviceInfo>> list_devices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice) {
    (void)cudaGetLastError();  // clear the error
    return std::vector<DeviceInfo>{};
  }
  if (err == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    int driver = 0, runtime = 0;
    (void)cudaDriverGetVersion(&driver);
    (void)cudaRuntimeGetVersion(&runtime);
    if (driver == 0) return std::vector<DeviceInfo>{};  // no NVIDIA driver loaded
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the NVIDIA driver supports CUDA {}.{}, older than this build's CUDA runtime {}.{} "
                                  "(cudaErrorInsufficientDriver): update the driver",
                                  driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10));
  }
  if (err != cudaSuccess)
    return make_error(ErrorCode::kIo, fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(err),
                                                  cudaGetErrorName(err)));
  // Attributes only: no cudaSetDevice, no context is created and the current device stays as it was.
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    DeviceInfo info;
    info.device_idx = i;
    cudaDeviceProp prop{};
    if (const cudaError_t e = cudaGetDeviceProperties(&prop, i); e != cudaSuccess) {
      (void)cudaGetLastError();
      return make_error(ErrorCode::kIo, fmt::format("cudaGetDeviceProperties({}): {}", i, cudaGetErrorString(e)));
    }
    info.name = prop.name;
    info.total_bytes = prop.totalGlobalMem;
    const std::pair<cudaDeviceAttr, int*> attrs[] = {{cudaDevAttrComputeCapabilityMajor, &info.compute_major},
                                                     {cudaDevAttrComputeCapabilityMinor, &info.compute_minor},
                                                     {cudaDevAttrMultiProcessorCount, &info.num_sms}};
    for (const auto& [attr, out] : attrs)
      if (const cudaError_t e = cudaDeviceGetAttribute(out, attr, i); e != cudaSuccess) {
        (void)cudaGetLastError();
        return make_error(ErrorCode::kIo, fmt::format("cudaDeviceGetAttribute({}): {}", i, cudaGetErrorString(e)));
      }
    devices.push_back(std::move(info));
  }
  return devices;
}

Expected<uint64_t> device_free_bytes(int device_idx) {
  int previous = 0;
  const bool had_current = cudaGetDevice(&previous) == cudaSuccess;
  if (const cudaError_t e = cudaSetDevice(device_idx); e != cudaSuccess) {
    (void)cudaGetLastError();
    return make_error(ErrorCode::kIo, fmt::format("cudaSetDevice({}): {}", device_idx, cudaGetErrorString(e)));
  }
  size_t free_b = 0, total_b = 0;
  const cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  if (had_current) (void)cudaSetDevice(previous);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return make_error(ErrorCode::kIo, fmt::format("cudaMemGetInfo (GPU {}): {}", device_idx, cudaGetErrorString(e)));
  }
  return static_cast<uint64_t>(free_b);
}

}  // namespace hetmoe::gpu
