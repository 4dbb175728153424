#pragma once
// From `hetmoe probe`'s hardware profile (placement/hardware_profile.h) to the cost model's device rates
// (placement/cost_model.h DeviceRates), so the runtime plans with this machine's measured speeds when a profile is
// cached, and with the laptop defaults otherwise.

#include <filesystem>
#include <optional>
#include <string>

#include "placement/cost_model.h"
#include "placement/hardware_profile.h"
#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// The rates for `num_threads` CPU workers (0 = one per core), starting from `base` (what the profile does not
/// measure keeps base's value):
///   threads per node: num_threads spread over the nodes with cores as the thread layout does (round-robin; node
///     counts differ by at most one), capped at the node's measured maximum;
///   a node's read bandwidth at t threads: linear interpolation between its measured thread counts (t below the
///     first point: scaled down proportionally; above the last: the last);
///   cpu_read_bytes_per_s = Σ over nodes; numa_node_read_bytes_per_s = each node's (only with several nodes);
///   cpu_expert_efficiency = GEMV weight bytes/s ÷ read bandwidth on the GEMV node at its thread count (same
///     interpolation), capped to (0, 1.5] (cache effects may lift the GEMV above a pure read);
///   with GPU figures: has_gpu, gpu_read_bytes_per_s = memory_read_bytes_per_s, pcie_bytes_per_s =
///     h2d_bytes_per_s, pcie_latency_s = h2d_latency_s, and gpu_efficiency = expert GEMV ÷ memory read when the
///     GEMV was measured; without GPU figures has_gpu keeps base's value (a GPU found later plans with defaults).
/// A zero or missing figure keeps base's value.
DeviceRates rates_from_profile(const HardwareProfile& profile, int num_threads, DeviceRates base = {});

/// The cached `hetmoe probe` profile of this machine, in `cache_dir` (empty: default_cache_dir()), when one exists
/// and check_cached_profile accepts it for the current machine key (topology and kernel ISA of this process);
/// std::nullopt otherwise, with `reason` (optional) saying why ("no cached profile (run hetmoe probe)", "stale: ...").
/// Never measures and never fails: an unreadable file is a reason, not an error.
std::optional<HardwareProfile> cached_profile_for_this_machine(const std::filesystem::path& cache_dir,
                                                               std::string* reason = nullptr);

}  // namespace hetmoe::placement
