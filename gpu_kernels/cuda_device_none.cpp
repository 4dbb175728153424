#include "gpu_kernels/cuda_device.h"

namespace hetmoe::gpu {

bool cuda_built() { return false; }

Expected<std::vector<DeviceInfo>> list_devices() {
  return make_error(ErrorCode::kUnsupported, "hetmoe was built without CUDA (HETMOE_CUDA=OFF or no nvcc)");
}

Expected<uint64_t> device_free_bytes(int) {
  return make_error(ErrorCode::kUnsupported, "hetmoe was built without CUDA (HETMOE_CUDA=OFF or no nvcc)");
}

}  // namespace hetmoe::gpu
