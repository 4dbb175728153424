#pragma once
// CUDA device discovery: what the rest of hetmoe asks to learn whether a GPU can be used. Listing reads device
// attributes only (no CUDA context is created, the current device is left as it was); free memory needs the
// device's context and is a separate query.

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
  int num_sms = 0;
};

/// True when this binary was built with the CUDA backend.
bool cuda_built();

/// The CUDA devices visible to this process, from their attributes (no context is created). An empty list when
/// there is no GPU or no driver is loaded.
/// Errors: kUnsupported when hetmoe was built without CUDA, or when the driver is too old for this build's CUDA
/// runtime (the message names both versions); kIo when the driver reports another error (cudaGetErrorString).
Expected<std::vector<DeviceInfo>> list_devices();

/// Free device memory of GPU device_idx now, bytes. Creates that device's primary context if it has none (CUDA
/// needs one to answer) and makes the previously current device current again.
/// Errors: kUnsupported without CUDA; kIo for a bad index or a CUDA error (cudaGetErrorString).
Expected<uint64_t> device_free_bytes(int device_idx);

}  // namespace hetmoe::gpu
