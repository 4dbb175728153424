#include "placement/profile_rates.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "cpu_kernels/kernels.h"
#include "placement/topology.h"

namespace hetmoe::placement {
namespace {

/// y at x on the polyline through (x_i, y_i) (x ascending); below the first point proportional to x, above the last
/// the last value.
template <class Point, class X, class Y>
double interpolate(const std::vector<Point>& points, double x, X get_x, Y get_y) {
  if (points.empty() || x <= 0) return 0;
  const double x0 = get_x(points.front());
  if (x <= x0) return x0 > 0 ? get_y(points.front()) * x / x0 : get_y(points.front());
  for (size_t i = 1; i < points.size(); ++i) {
    const double xa = get_x(points[i - 1]), xb = get_x(points[i]);
    if (x <= xb) {
      const double ya = get_y(points[i - 1]), yb = get_y(points[i]);
      return xb > xa ? ya + (yb - ya) * (x - xa) / (xb - xa) : yb;
    }
  }
  return get_y(points.back());
}

double read_bw_at(const NodeBandwidth& node, double threads) {
  return interpolate(node.read, threads, [](const BandwidthPoint& p) { return static_cast<double>(p.num_threads); },
                     [](const BandwidthPoint& p) { return p.bytes_per_s; });
}

int max_threads(const NodeBandwidth& node) { return node.read.empty() ? 0 : node.read.back().num_threads; }

}  // namespace

DeviceRates rates_from_profile(const HardwareProfile& profile, int num_threads, DeviceRates base) {
  DeviceRates r = std::move(base);
  const std::vector<NodeBandwidth>& nodes = profile.node_read_bandwidth;
  if (!nodes.empty()) {
    // Threads per node: round-robin over the nodes, each capped at the node's measured maximum.
    std::vector<int> per_node(nodes.size(), 0);
    if (num_threads <= 0) {
      for (size_t n = 0; n < nodes.size(); ++n) per_node[n] = max_threads(nodes[n]);
    } else {
      int left = num_threads;
      for (bool placed = true; left > 0 && placed;) {
        placed = false;
        for (size_t n = 0; n < nodes.size() && left > 0; ++n)
          if (per_node[n] < max_threads(nodes[n])) ++per_node[n], --left, placed = true;
      }
    }
    std::vector<double> node_bw;
    double total = 0;
    for (size_t n = 0; n < nodes.size(); ++n) {
      const double bw = read_bw_at(nodes[n], per_node[n]);
      node_bw.push_back(bw);
      total += bw;
    }
    if (total > 0) {
      r.cpu_read_bytes_per_s = total;
      r.numa_node_read_bytes_per_s = nodes.size() > 1 ? node_bw : std::vector<double>{};
    }
    // GEMV efficiency on the node it was measured on, at that node's thread count.
    for (size_t n = 0; n < nodes.size(); ++n) {
      if (nodes[n].numa_node != profile.gemv_numa_node || profile.expert_gemv.empty()) continue;
      const double t = std::max(per_node[n], 1);
      const double gemv = interpolate(
          profile.expert_gemv, t, [](const GemvPoint& p) { return static_cast<double>(p.num_threads); },
          [](const GemvPoint& p) { return p.weight_bytes_per_s; });
      const double read = read_bw_at(nodes[n], t);
      if (gemv > 0 && read > 0) r.cpu_expert_efficiency = std::min(gemv / read, 1.5);
    }
  }
  if (profile.gpu) {
    const GpuFigures& g = *profile.gpu;
    r.has_gpu = true;
    if (g.memory_read_bytes_per_s > 0) r.gpu_read_bytes_per_s = g.memory_read_bytes_per_s;
    if (g.h2d_bytes_per_s > 0) r.pcie_bytes_per_s = g.h2d_bytes_per_s;
    if (g.h2d_latency_s > 0) r.pcie_latency_s = g.h2d_latency_s;
    if (g.expert_gemv_bytes_per_s && *g.expert_gemv_bytes_per_s > 0 && g.memory_read_bytes_per_s > 0)
      r.gpu_efficiency = std::min(*g.expert_gemv_bytes_per_s / g.memory_read_bytes_per_s, 1.0);
  }
  return r;
}

std::optional<HardwareProfile> cached_profile_for_this_machine(const std::filesystem::path& cache_dir,
                                                               std::string* reason) {
  const auto say = [reason](std::string why) {
    if (reason) *reason = std::move(why);
    return std::nullopt;
  };
  auto topology = topology_from_machine();
  if (!topology) return say("cannot read the topology: " + topology.error().to_string());
  auto isa = cpu::selected_isa();
  if (!isa) return say(isa.error().to_string());
  const MachineKey key = machine_key(*topology, cpu::isa_name(*isa));
  const std::filesystem::path path = profile_cache_path(cache_dir.empty() ? default_cache_dir() : cache_dir, key);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return say("no cached profile (run hetmoe probe)");
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  auto profile = profile_from_json(text.str(), path.string());
  if (!profile) return say("unreadable cached profile: " + profile.error().to_string());
  if (const CacheVerdict v = check_cached_profile(*profile, key); !v.usable)
    return say(v.reason + " (run hetmoe probe)");
  if (reason) *reason = path.string();
  return std::move(*profile);
}

}  // namespace hetmoe::placement
