#pragma once
// CUDA device discovery. Kernels and the device runtime arrive with the CUDA backend issue; this file is
// what the rest of hetmoe asks to learn whether a GPU can be used.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::gpu {

struct DeviceInfo {
  int device_idx = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  uint64_t total_bytes = 0;  // device memory, bytes
  uint64_t free_bytes = 0;   // free device memory at the time of the query, bytes
  int num_sms = 0;
};

/// True when this binary was built with the CUDA backend.
bool cuda_built();

/// The CUDA devices visible to this process. An empty list when there is no GPU or no driver is loaded.
/// Errors: kUnsupported when hetmoe was built without CUDA; kIo when the driver reports another error
/// (the message carries cudaGetErrorString).
Expected<std::vector<DeviceInfo>> list_devices();

}  // namespace hetmoe::gpu
