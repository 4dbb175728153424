#include "gpu_kernels/device_probe.h"

namespace hetmoe::gpu {

Expected<DeviceProbe> probe_device(int) {
  return make_error(ErrorCode::kUnsupported, "hetmoe was built without CUDA (HETMOE_CUDA=OFF or no nvcc)");
}

}  // namespace hetmoe::gpu
