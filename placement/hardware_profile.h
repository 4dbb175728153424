#pragma once
// The hardware profile the placement optimizer works from (design.md "placement/"): the topology, measured memory
// read bandwidth per NUMA node versus thread count, measured MXFP4 expert GEMV throughput versus thread count, and,
// where a GPU exists, its memory bandwidth and PCIe bandwidth and latency in both directions. `hetmoe probe`
// measures it once and caches it as JSON, keyed by machine; a cache from another machine (foreign) or from an older
// format, hetmoe version, CPU or topology (stale) is detected and measured again.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "placement/topology.h"
#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// Bumped whenever the JSON layout or the way a figure is measured changes.
inline constexpr int kHardwareProfileFormatVersion = 1;

/// What identifies the machine a profile was measured on.
struct MachineKey {
  std::string hostname;
  std::string cpu_model;         // "model name" of /proc/cpuinfo
  std::string topology_summary;  // Topology::summary()
  std::string hetmoe_version;    // e.g. "0.1.0"
  std::string cpu_isa;           // kernel variant the GEMV figures were measured with, e.g. "avx512"

  bool operator==(const MachineKey&) const = default;
  /// 16 hex digits (FNV-1a 64) of hostname and CPU model: the cache file name, so one machine has one file and a
  /// changed topology or version is found there and reported as stale.
  std::string file_hash() const;
};

/// The key of this machine: gethostname, /proc/cpuinfo, `topology`, this build's version, `cpu_isa`.
MachineKey machine_key(const Topology& topology, const std::string& cpu_isa);

struct BandwidthPoint {
  int num_threads = 0;
  double bytes_per_s = 0;  // best of the repetitions
};

struct NodeBandwidth {
  int numa_node = 0;                  // OS index
  std::vector<BandwidthPoint> read;   // by thread count: 1, 2, 4, ..., and the node's core count
};

struct GemvPoint {
  int num_threads = 0;
  double weight_bytes_per_s = 0;  // MXFP4 weight bytes streamed per second
  double experts_per_s = 0;       // expert matrices (2880 × 2880) per second
};

struct GpuFigures {
  int device_idx = 0;
  std::string name;
  double memory_read_bytes_per_s = 0;
  std::optional<double> expert_gemv_bytes_per_s;  // not measured yet: needs the CUDA GEMV kernels
  double h2d_bytes_per_s = 0;
  double d2h_bytes_per_s = 0;
  double h2d_latency_s = 0;
  double d2h_latency_s = 0;
};

/// Random-read speed of the disk holding a model file (profiler/disk_read.h), for the RAM tier's paging cost.
struct DiskFigures {
  std::string path;              // the file read
  double read_bytes_per_s = 0;
  uint64_t block_bytes = 0;      // per random read
};

struct HardwareProfile {
  int format_version = kHardwareProfileFormatVersion;
  MachineKey key;
  std::string measured_at;          // UTC, ISO 8601
  double probe_seconds = 0;         // how long the measurement took
  int num_packages = 0, num_numa_nodes = 0, num_cores = 0, num_pus = 0;
  uint64_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;
  std::vector<NodeBandwidth> node_read_bandwidth;  // one per NUMA node with cores
  int gemv_numa_node = 0;                          // node the GEMV figures were measured on
  uint64_t gemv_working_set_bytes = 0;             // MXFP4 bytes cycled through (larger than the L3)
  std::vector<GemvPoint> expert_gemv;              // by thread count, on node gemv_numa_node
  std::optional<GpuFigures> gpu;                   // only where a GPU was measured
  std::string gpu_note;                            // why there are no GPU figures, when there are none
  std::optional<DiskFigures> disk;                 // `probe --disk FILE` (or the default model); JSON "disk"
};

/// JSON text of a profile (nlohmann-json, indented).
std::string profile_to_json(const HardwareProfile& profile);
/// Parses profile_to_json's output. Errors: kFormat naming `source` and the key at fault (not JSON, a missing or
/// mistyped field).
Expected<HardwareProfile> profile_from_json(const std::string& text, const std::string& source);

/// Whether a cached profile may stand for the current machine; `reason` says why not.
struct CacheVerdict {
  bool usable = false;
  std::string reason;  // "" when usable; e.g. "foreign: measured on host a, this is host b"
};
CacheVerdict check_cached_profile(const HardwareProfile& cached, const MachineKey& current);

/// $XDG_CACHE_HOME/hetmoe, or ~/.cache/hetmoe ($HOME), or ./.hetmoe-cache when neither is set.
std::filesystem::path default_cache_dir();
/// dir / "probe-<key.file_hash()>.json".
std::filesystem::path profile_cache_path(const std::filesystem::path& dir, const MachineKey& key);

/// The measurements, replaceable so tests (and callers with other needs) can run the probe logic without them.
struct ProbeMeasurers {
  /// Read bandwidth (bytes/s) of `num_threads` threads running and allocating on node `numa_node_idx` (index into
  /// topology.numa_nodes).
  std::function<Expected<double>(const Topology&, int numa_node_idx, int num_threads)> read_bandwidth;
  /// MXFP4 expert GEMV throughput of `num_threads` threads on node `numa_node_idx`; sets the working set bytes.
  std::function<Expected<GemvPoint>(const Topology&, int numa_node_idx, int num_threads, uint64_t* working_set)>
      expert_gemv;
  /// The first GPU's figures; an error (no CUDA build, no device) leaves the GPU fields empty with its message.
  std::function<Expected<GpuFigures>()> gpu;
};

/// The real CPU measurements: profiler::measure_read_bandwidth and the selected ISA's MXFP4 GEMV (gemm_mxfp4_r16 where
/// it has one: the layout the CPU path repacks the experts into; gemv_mxfp4 otherwise) on a buffer of
/// max(2 × L3, 256 MiB) (at most 1 GiB and a quarter of the available memory), threads bound to the node
/// (run_on_numa_node); the GPU's come from `gpu` (the caller's GPU backend, e.g. gpu::probe_device(0); empty: "not
/// measured"), so placement depends on no GPU code.
ProbeMeasurers default_measurers(std::function<Expected<GpuFigures>()> gpu = {});

/// Thread counts measured on a node of `num_cores` cores: 1, 2, 4, ... below num_cores, then num_cores.
std::vector<int> probe_thread_counts(int num_cores);

/// Measures everything for `topology` with `measurers`. Errors: the measurers' (the GPU's only as a note).
Expected<HardwareProfile> measure_profile(const Topology& topology, const MachineKey& key,
                                          const ProbeMeasurers& measurers);

struct ProbeOptions {
  bool force = false;                 // measure even when the cache is usable
  std::filesystem::path cache_dir;    // empty = default_cache_dir()
};

struct ProbeResult {
  HardwareProfile profile;
  bool from_cache = false;
  std::string reason;                 // why it was measured ("no cached profile", "stale: ...", "--force")
  std::filesystem::path cache_path;
  std::string cache_write_error;      // non-empty when the new profile could not be saved (the probe still succeeds)
  bool created_cache_dir = false;     // the cache directory did not exist and was created for the new profile
};

/// The cached profile for (topology, key) when usable, else a fresh measurement written to the cache.
/// Errors: measure_profile's; an unreadable cache file is measured over, not an error.
Expected<ProbeResult> probe_hardware(const Topology& topology, const MachineKey& key, const ProbeOptions& options,
                                     const ProbeMeasurers& measurers);

}  // namespace hetmoe::placement
