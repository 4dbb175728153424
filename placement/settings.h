#pragma once
// The placement settings a user gives (the configuration file's [numa] policy, [placement] and
// [placement.dynamic] tables): plain data, validated by the config parser (runtime/app/config.h) and applied to a
// Plan by placement/static_plans.h.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hetmoe {

enum class NumaPolicy { kInterleave, kLocal, kNone };
enum class PlacementMode { kStatic, kDynamic };
enum class DeviceKind { kCpu, kGpu };

/// Pins expert `expert_idx` of layer `layer_idx` to a device. The indices are checked against the model when a plan
/// is made (the file is read before the model).
struct ExpertOverride {
  uint32_t layer_idx = 0;
  uint32_t expert_idx = 0;
  DeviceKind device = DeviceKind::kCpu;
  bool operator==(const ExpertOverride&) const = default;
};

/// Pins the tensors whose GGUF name matches `name_pattern` ('*' = any run of characters, '?' = one character) to a
/// device.
struct TensorOverride {
  std::string name_pattern;
  DeviceKind device = DeviceKind::kCpu;
  bool operator==(const TensorOverride&) const = default;
};

const char* numa_policy_name(NumaPolicy policy);
const char* placement_mode_name(PlacementMode mode);
const char* device_kind_name(DeviceKind device);

namespace placement {

/// The [placement] tables; an empty optional (or an empty override list) = the key was not in the file.
struct PlacementSettings {
  std::optional<PlacementMode> mode;
  std::optional<uint32_t> num_gpu_experts;    // experts per layer resident on the GPU (total over a layer)
  std::optional<uint32_t> prefill_crossover;  // prompt tokens from which prefill streams experts to the GPU
  std::vector<ExpertOverride> expert_overrides;
  std::vector<TensorOverride> tensor_overrides;
  struct Dynamic {
    std::optional<double> decay;                      // per-token decay of the expert activation counts
    std::optional<uint32_t> replan_interval;          // tokens between re-plans
    std::optional<uint32_t> max_migrations_per_step;  // experts moved per re-plan at most
    std::optional<double> hysteresis;                 // predicted relative gain required before migrating
    bool operator==(const Dynamic&) const = default;
  } dynamic;
  bool operator==(const PlacementSettings&) const = default;
};

}  // namespace placement
}  // namespace hetmoe
