#include <cuda_runtime.h>

#include "gpu_kernels/cuda_device.h"

namespace hetmoe::gpu {

bool cuda_built() { return true; }

Expected<std::vector<DeviceInfo>> list_devices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();  // clear the sticky error
    return std::vector<DeviceInfo>{};
  }
  if (err != cudaSuccess)
    return make_error(ErrorCode::kIo, std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err));
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (const cudaError_t e = cudaGetDeviceProperties(&prop, i); e != cudaSuccess)
      return make_error(ErrorCode::kIo, "cudaGetDeviceProperties(" + std::to_string(i) + "): " + cudaGetErrorString(e));
    DeviceInfo info;
    info.device_idx = i;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.total_bytes = prop.totalGlobalMem;
    info.num_sms = prop.multiProcessorCount;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) info.free_bytes = free_b;
    }
    devices.push_back(std::move(info));
  }
  return devices;
}

}  // namespace hetmoe::gpu
