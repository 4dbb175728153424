#pragma once
// Measurements of one CUDA device for the hardware profile (placement/hardware_profile.h): device memory read
// bandwidth and host↔device copy bandwidth and latency over pinned host memory. Timed with CUDA events.

#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::gpu {

struct DeviceProbe {
  int device_idx = 0;
  std::string name;
  double memory_read_bytes_per_s = 0;  // a kernel reading a 256 MiB device buffer once, best of 5
  double h2d_bytes_per_s = 0;          // 64 MiB cudaMemcpyAsync from pinned host memory, best of 5
  double d2h_bytes_per_s = 0;          // the same to pinned host memory
  double h2d_latency_s = 0;            // one 4 KiB host-to-device copy, median of 64 (launch to completion)
  double d2h_latency_s = 0;            // one 4 KiB device-to-host copy, median of 64
};

/// Measures device `device_idx` (about 0.5 s). Errors: kUnsupported when hetmoe was built without CUDA;
/// kInvalidArgument when the device does not exist (no GPU, or an index past the last); kIo for a CUDA error
/// (the message names the call and carries cudaGetErrorString), e.g. when 320 MiB of device memory are not free.
Expected<DeviceProbe> probe_device(int device_idx);

}  // namespace hetmoe::gpu
