#include "placement/settings.h"

namespace hetmoe {

const char* numa_policy_name(NumaPolicy policy) {
  switch (policy) {
    case NumaPolicy::kInterleave: return "interleave";
    case NumaPolicy::kLocal: return "local";
    case NumaPolicy::kNone: return "none";
  }
  return "?";
}

const char* placement_mode_name(PlacementMode mode) { return mode == PlacementMode::kStatic ? "static" : "dynamic"; }

const char* device_kind_name(DeviceKind device) { return device == DeviceKind::kCpu ? "cpu" : "gpu"; }

}  // namespace hetmoe
