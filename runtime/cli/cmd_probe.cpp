// hetmoe probe [--force] [--json] [--cache-dir D] [--disk FILE]: the hardware profile (placement/hardware_profile.h),
// from the cache when it matches this machine, measured otherwise (and the reason said); --disk times random reads
// of a model file (the RAM tier's paging cost) and adds them to the cached profile.
#include <fmt/format.h>

#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>

#include "cpu_kernels/kernels.h"
#include "gpu_kernels/device_probe.h"
#include "placement/hardware_profile.h"
#include "placement/thread_layout.h"
#include "placement/topology.h"
#include "profiler/disk_read.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"

namespace hetmoe::cli {
namespace {

struct ProbeArgs {
  bool force = false;
  bool json = false;
  std::string cache_dir;
  std::string disk_path;
};

std::string gbps(double bytes_per_s) { return fmt::format("{:.1f}", bytes_per_s / 1e9); }

void print_summary(const placement::ProbeResult& r, const placement::Topology& topology) {
  const placement::HardwareProfile& p = r.profile;
  fmt::print("machine: {} | {} | {}\n", p.key.hostname, p.key.cpu_model, p.key.topology_summary);
  if (auto layout = placement::compute_thread_layout(topology, {}))
    fmt::print("default workers (one per core): {}\n", layout->describe());
  if (r.from_cache)
    fmt::print("profile: cached {} (measured in {:.1f} s), {}\n", p.measured_at, p.probe_seconds,
               r.cache_path.string());
  else if (r.cache_write_error.empty())
    fmt::print("profile: measured now in {:.1f} s ({}), saved to {}\n", p.probe_seconds, r.reason,
               r.cache_path.string());
  else
    fmt::print("profile: measured now in {:.1f} s ({}), not saved\n", p.probe_seconds, r.reason);
  fmt::print("memory read bandwidth, GB/s by threads:\n");
  for (const auto& n : p.node_read_bandwidth) {
    std::string line;
    for (const auto& b : n.read) line += fmt::format("  {} → {}", b.num_threads, gbps(b.bytes_per_s));
    fmt::print("  NUMA node {}:{}\n", n.numa_node, line);
  }
  fmt::print("MXFP4 expert GEMV 2880×2880 ({} kernels, node {}, {} working set), by threads:\n", p.key.cpu_isa,
             p.gemv_numa_node, format_bytes(p.gemv_working_set_bytes));
  for (const auto& g : p.expert_gemv)
    fmt::print("  {} → {} GB/s of weights, {:.0f} experts/s\n", g.num_threads, gbps(g.weight_bytes_per_s),
               g.experts_per_s);
  if (p.gpu) {
    const placement::GpuFigures& g = *p.gpu;
    fmt::print("GPU {} ({}): memory read {} GB/s; PCIe H2D {} GB/s, {:.1f} µs; D2H {} GB/s, {:.1f} µs\n",
               g.device_idx, g.name, gbps(g.memory_read_bytes_per_s), gbps(g.h2d_bytes_per_s),
               g.h2d_latency_s * 1e6, gbps(g.d2h_bytes_per_s), g.d2h_latency_s * 1e6);
    if (!p.gpu_note.empty()) fmt::print("  {}\n", p.gpu_note);
  } else {
    fmt::print("GPU: none measured ({})\n", p.gpu_note);
  }
  if (p.disk)
    fmt::print("disk: {} GB/s random {} reads of {}\n", gbps(p.disk->read_bytes_per_s),
               format_bytes(p.disk->block_bytes), p.disk->path);
  else
    fmt::print("disk: not measured (hetmoe probe --disk MODEL.gguf times the reads the RAM tier pages experts "
               "with)\n");
}

// The GPU figures of the profile, from the CUDA backend's probe of device 0.
static Expected<placement::GpuFigures> measure_gpu() {
  auto p = gpu::probe_device(0);
  if (!p) return p.error();
  placement::GpuFigures g;
  g.device_idx = p->device_idx;
  g.name = p->name;
  g.memory_read_bytes_per_s = p->memory_read_bytes_per_s;
  g.h2d_bytes_per_s = p->h2d_bytes_per_s;
  g.d2h_bytes_per_s = p->d2h_bytes_per_s;
  g.h2d_latency_s = p->h2d_latency_s;
  g.d2h_latency_s = p->d2h_latency_s;
  return g;
}

int run_probe(const ProbeArgs& args) {
  // A --cache-dir that exists must be a directory: found before the measurement, not after it.
  struct stat st {};
  if (!args.cache_dir.empty() && ::stat(args.cache_dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    return report_error("probe", make_error(ErrorCode::kIo, fmt::format("--cache-dir {}: not a directory",
                                                                        args.cache_dir)));
  auto topology = placement::topology_from_machine();
  if (!topology) return report_error("probe", topology.error());
  auto isa = cpu::selected_isa();
  if (!isa) return report_error("probe", isa.error());
  const placement::MachineKey key = placement::machine_key(*topology, cpu::isa_name(*isa));
  placement::ProbeOptions options;
  options.force = args.force;
  options.cache_dir = args.cache_dir;
  auto result = placement::probe_hardware(*topology, key, options, placement::default_measurers(measure_gpu));
  if (!result) return report_error("probe", result.error());
  if (!args.disk_path.empty()) {
    if (auto s = check_input_file("--disk", args.disk_path); !s) return report_error("probe", s.error());
    auto disk = profiler::measure_disk_read(args.disk_path);
    if (!disk) return report_error("probe", disk.error());
    if (!disk->cache_dropped)
      fmt::print(stderr, "hetmoe probe: warning: the kernel did not drop {} from the page cache: the disk figure may "
                         "be the page cache's\n", args.disk_path);
    result->profile.disk = placement::DiskFigures{args.disk_path, disk->bytes_per_s, disk->block_bytes};
    if (result->cache_write_error.empty()) {
      std::ofstream out(result->cache_path);
      out << placement::profile_to_json(result->profile);
      if (!out) result->cache_write_error = fmt::format("{}: cannot write", result->cache_path.string());
    }
  }
  if (!result->from_cache && args.json) fmt::print(stderr, "hetmoe probe: measured ({})\n", result->reason);
  if (result->created_cache_dir)
    fmt::print(stderr, "hetmoe probe: created the cache directory {}\n", result->cache_path.parent_path().string());
  if (!result->cache_write_error.empty())
    fmt::print(stderr, "hetmoe probe: warning: profile not cached: {}\n", result->cache_write_error);
  if (args.json)
    fmt::print("{}", placement::profile_to_json(result->profile));
  else
    print_summary(*result, *topology);
  return 0;
}

}  // namespace

void add_probe_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("probe", "Measure this machine (topology, memory bandwidth per NUMA node, expert "
                                          "GEMV throughput, GPU and PCIe) once and cache the profile");
  auto args = std::make_shared<ProbeArgs>();
  cmd->add_flag("--force", args->force, "Measure again even when the cached profile matches this machine");
  cmd->add_flag("--json", args->json, "Print the profile as JSON");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Cache directory (default: $XDG_CACHE_HOME/hetmoe or ~/.cache/hetmoe)");
  cmd->add_option("--disk", args->disk_path,
                  "Time random 4 MiB reads of this file (a model; dropped from the page cache first) for the RAM "
                  "tier's paging cost, and add them to the profile")
      ->option_text("FILE");
  cmd->callback([args, &exit_code] { exit_code = run_probe(*args); });
}

}  // namespace hetmoe::cli
