#include "gpu_kernels/gpu_forward.h"

namespace hetmoe::gpu {

Expected<std::unique_ptr<ForwardPass>> create_gpu_forward(const Model&, const ForwardOptions&,
                                                          std::vector<std::string>*) {
  return make_error(ErrorCode::kUnsupported, "no GPU support (hetmoe was built without CUDA)");
}

}  // namespace hetmoe::gpu
