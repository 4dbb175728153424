#include "runtime/backend/gpu_backend.h"

namespace hetmoe::gpu {

Expected<std::unique_ptr<GpuStepDevice>> create_step_device(const Model&, const StepDeviceOptions&,
                                                            std::vector<std::string>*) {
  return make_error(ErrorCode::kUnsupported, "no GPU support (hetmoe was built without CUDA)");
}

}  // namespace hetmoe::gpu
