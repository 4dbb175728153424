#include "placement/hardware_profile.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cpu_kernels/kernels.h"
#include "placement/numa_memory.h"
#include "profiler/bandwidth.h"
#include "profiler/memory_limit.h"
#include "runtime/base/huge_pages.h"

#ifndef HETMOE_VERSION
#define HETMOE_VERSION "unknown"
#endif

namespace hetmoe::placement {
namespace {

using nlohmann::json;

// gpt-oss-20b expert matrices: 2880 × 2880 MXFP4 (17 bytes per 32 weights); an expert is gate, up and down.
constexpr int64_t kExpertDim = 2880;
constexpr uint64_t kMxfp4RowBytes = kExpertDim / 32 * 17;
constexpr uint64_t kMatrixBytes = kMxfp4RowBytes * kExpertDim;
constexpr int kMatricesPerExpert = 3;
constexpr int kReps = 3;

std::string read_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t begin = line.find_first_not_of(" \t", colon + 1);
        return begin == std::string::npos ? "" : line.substr(begin);
      }
    }
  return "unknown";
}

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::vector<int> node_pus(const Topology& t, int node_idx) {
  std::vector<int> pus;
  for (int c : t.numa_nodes[static_cast<size_t>(node_idx)].core_idxs)
    for (int pu : t.cores[static_cast<size_t>(c)].pu_os) pus.push_back(pu);
  return pus;
}

/// Working-set bytes for the measurements: larger than the last-level cache, within memory limits.
uint64_t working_set_bytes(const Topology& t) {
  uint64_t bytes = std::max<uint64_t>(2 * t.l3_bytes, uint64_t{256} << 20);
  bytes = std::min<uint64_t>(bytes, uint64_t{1} << 30);
  if (const uint64_t room = profiler::memory_room().bytes(); room > 0) bytes = std::min(bytes, room / 4);
  return std::max<uint64_t>(bytes, kMatrixBytes);
}

Expected<double> measure_node_read_bandwidth(const Topology& t, int node_idx, int num_threads) {
  double bw = 0;
  const int os = t.numa_nodes[static_cast<size_t>(node_idx)].os_index;
  HETMOE_RETURN_IF_ERROR(run_on_numa_node(node_pus(t, node_idx), os, [&] {
    bw = profiler::measure_read_bandwidth(working_set_bytes(t), num_threads, kReps);
  }));
  if (bw <= 0)
    return make_error(ErrorCode::kIo, fmt::format("read bandwidth on NUMA node {} with {} threads: could not allocate "
                                                  "or time the buffer", os, num_threads));
  return bw;
}

Expected<GemvPoint> measure_node_expert_gemv(const Topology& t, int node_idx, int num_threads,
                                             uint64_t* working_set) {
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  const cpu::KernelTable& k = cpu::kernel_table(*isa);
  const uint64_t num_matrices = std::max<uint64_t>(working_set_bytes(t) / kMatrixBytes, 1);
  const uint64_t total = num_matrices * kMatrixBytes;
  if (working_set) *working_set = total;
  GemvPoint point;
  point.num_threads = num_threads;
  bool ok = true;
  const int os = t.numa_nodes[static_cast<size_t>(node_idx)].os_index;
  HETMOE_RETURN_IF_ERROR(run_on_numa_node(node_pus(t, node_idx), os, [&] {
    HugePageBuffer matrices(total);  // as the weights hetmoe loads into memory
    uint8_t* const w = matrices.data();
    if (w == nullptr) {
      ok = false;
      return;
    }
    std::vector<float> x(kExpertDim);           // (2880) activation
    for (int64_t i = 0; i < kExpertDim; ++i) x[static_cast<size_t>(i)] = static_cast<float>((i % 13) - 6) * 0.1f;
    std::vector<cpu::ActQ8Block> xq(kExpertDim / 32);  // (90) quantized x
    k.quantize_act_q8(x.data(), xq.data(), kExpertDim);
    // (threads, 2880) outputs, one row per thread
    std::vector<std::vector<float>> y(static_cast<size_t>(num_threads), std::vector<float>(kExpertDim));
    double best = 0;
    for (int rep = -1; rep < kReps; ++rep) {  // rep -1: each thread first-touches its matrices (scale byte 0x77 = 2^-8)
      std::vector<std::thread> threads;
      const auto t0 = std::chrono::steady_clock::now();
      for (int th = 0; th < num_threads; ++th)
        threads.emplace_back([&, th] {
          for (uint64_t m = static_cast<uint64_t>(th); m < num_matrices; m += static_cast<uint64_t>(num_threads)) {
            uint8_t* wm = w + m * kMatrixBytes;
            if (rep < 0)
              std::memset(wm, 0x77, kMatrixBytes);
            else if (k.gemm_mxfp4_r16 != nullptr)  // the layout the CPU path repacks the experts into (same bytes)
              k.gemm_mxfp4_r16(wm, kMxfp4RowBytes, 0, kExpertDim, xq.data(), 1, kExpertDim,
                               y[static_cast<size_t>(th)].data(), kExpertDim);
            else
              k.gemv_mxfp4(wm, kMxfp4RowBytes, 0, kExpertDim, xq.data(), kExpertDim, y[static_cast<size_t>(th)].data());
          }
        });
      for (auto& th : threads) th.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= 0 && s > 0) best = std::max(best, static_cast<double>(total) / s);
    }
    point.weight_bytes_per_s = best;
    point.experts_per_s = best / static_cast<double>(kMatricesPerExpert * kMatrixBytes);
  }));
  if (!ok) return make_error(ErrorCode::kIo, fmt::format("expert GEMV probe: cannot allocate {} bytes", total));
  return point;
}

json key_to_json(const MachineKey& k) {
  return {{"hostname", k.hostname},
          {"cpu_model", k.cpu_model},
          {"topology", k.topology_summary},
          {"hetmoe_version", k.hetmoe_version},
          {"cpu_isa", k.cpu_isa}};
}

}  // namespace

std::string MachineKey::file_hash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (const std::string* s : {&hostname, &cpu_model}) {
    for (unsigned char c : *s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // separator
  }
  return fmt::format("{:016x}", h);
}

MachineKey machine_key(const Topology& topology, const std::string& cpu_isa) {
  MachineKey k;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  k.hostname = host;
  k.cpu_model = read_cpu_model();
  k.topology_summary = topology.summary();
  k.hetmoe_version = HETMOE_VERSION;
  k.cpu_isa = cpu_isa;
  return k;
}

std::string profile_to_json(const HardwareProfile& p) {
  json j;
  j["format_version"] = p.format_version;
  j["key"] = key_to_json(p.key);
  j["measured_at"] = p.measured_at;
  j["probe_seconds"] = p.probe_seconds;
  j["topology"] = {{"packages", p.num_packages}, {"numa_nodes", p.num_numa_nodes}, {"cores", p.num_cores},
                   {"pus", p.num_pus},           {"l1d_bytes", p.l1d_bytes},       {"l2_bytes", p.l2_bytes},
                   {"l3_bytes", p.l3_bytes}};
  json nodes = json::array();
  for (const auto& n : p.node_read_bandwidth) {
    json points = json::array();
    for (const auto& b : n.read) points.push_back({{"threads", b.num_threads}, {"bytes_per_s", b.bytes_per_s}});
    nodes.push_back({{"numa_node", n.numa_node}, {"read", points}});
  }
  j["node_read_bandwidth"] = nodes;
  json gemv = json::array();
  for (const auto& g : p.expert_gemv)
    gemv.push_back({{"threads", g.num_threads}, {"weight_bytes_per_s", g.weight_bytes_per_s},
                    {"experts_per_s", g.experts_per_s}});
  j["expert_gemv"] = {{"numa_node", p.gemv_numa_node}, {"working_set_bytes", p.gemv_working_set_bytes},
                      {"shape", "2880x2880 mxfp4"}, {"points", gemv}};
  if (p.gpu) {
    const GpuFigures& g = *p.gpu;
    j["gpu"] = {{"device", g.device_idx},
                {"name", g.name},
                {"memory_read_bytes_per_s", g.memory_read_bytes_per_s},
                {"expert_gemv_bytes_per_s", g.expert_gemv_bytes_per_s ? json(*g.expert_gemv_bytes_per_s) : json()},
                {"h2d_bytes_per_s", g.h2d_bytes_per_s},
                {"d2h_bytes_per_s", g.d2h_bytes_per_s},
                {"h2d_latency_s", g.h2d_latency_s},
                {"d2h_latency_s", g.d2h_latency_s}};
  } else {
    j["gpu"] = nullptr;
  }
  j["gpu_note"] = p.gpu_note;
  if (p.disk)
    j["disk"] = {{"path", p.disk->path},
                 {"read_bytes_per_s", p.disk->read_bytes_per_s},
                 {"block_bytes", p.disk->block_bytes}};
  return j.dump(2) + "\n";
}

Expected<HardwareProfile> profile_from_json(const std::string& text, const std::string& source) {
  try {
    const json j = json::parse(text);
    HardwareProfile p;
    p.format_version = j.at("format_version").get<int>();
    if (p.format_version != kHardwareProfileFormatVersion) return p;  // the caller reports it as stale
    const json& k = j.at("key");
    p.key.hostname = k.at("hostname").get<std::string>();
    p.key.cpu_model = k.at("cpu_model").get<std::string>();
    p.key.topology_summary = k.at("topology").get<std::string>();
    p.key.hetmoe_version = k.at("hetmoe_version").get<std::string>();
    p.key.cpu_isa = k.at("cpu_isa").get<std::string>();
    p.measured_at = j.at("measured_at").get<std::string>();
    p.probe_seconds = j.at("probe_seconds").get<double>();
    const json& t = j.at("topology");
    p.num_packages = t.at("packages").get<int>();
    p.num_numa_nodes = t.at("numa_nodes").get<int>();
    p.num_cores = t.at("cores").get<int>();
    p.num_pus = t.at("pus").get<int>();
    p.l1d_bytes = t.at("l1d_bytes").get<uint64_t>();
    p.l2_bytes = t.at("l2_bytes").get<uint64_t>();
    p.l3_bytes = t.at("l3_bytes").get<uint64_t>();
    for (const json& n : j.at("node_read_bandwidth")) {
      NodeBandwidth nb;
      nb.numa_node = n.at("numa_node").get<int>();
      for (const json& b : n.at("read"))
        nb.read.push_back({b.at("threads").get<int>(), b.at("bytes_per_s").get<double>()});
      p.node_read_bandwidth.push_back(std::move(nb));
    }
    const json& g = j.at("expert_gemv");
    p.gemv_numa_node = g.at("numa_node").get<int>();
    p.gemv_working_set_bytes = g.at("working_set_bytes").get<uint64_t>();
    for (const json& pt : g.at("points"))
      p.expert_gemv.push_back({pt.at("threads").get<int>(), pt.at("weight_bytes_per_s").get<double>(),
                               pt.at("experts_per_s").get<double>()});
    if (const json& gj = j.at("gpu"); !gj.is_null()) {
      GpuFigures f;
      f.device_idx = gj.at("device").get<int>();
      f.name = gj.at("name").get<std::string>();
      f.memory_read_bytes_per_s = gj.at("memory_read_bytes_per_s").get<double>();
      if (const json& e = gj.at("expert_gemv_bytes_per_s"); !e.is_null()) f.expert_gemv_bytes_per_s = e.get<double>();
      f.h2d_bytes_per_s = gj.at("h2d_bytes_per_s").get<double>();
      f.d2h_bytes_per_s = gj.at("d2h_bytes_per_s").get<double>();
      f.h2d_latency_s = gj.at("h2d_latency_s").get<double>();
      f.d2h_latency_s = gj.at("d2h_latency_s").get<double>();
      p.gpu = f;
    }
    p.gpu_note = j.at("gpu_note").get<std::string>();
    if (j.contains("disk") && !j.at("disk").is_null()) {  // absent in profiles from before the disk probe
      const json& d = j.at("disk");
      p.disk = DiskFigures{d.at("path").get<std::string>(), d.at("read_bytes_per_s").get<double>(),
                           d.at("block_bytes").get<uint64_t>()};
    }
    return p;
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kFormat, fmt::format("{}: not a hardware profile: {}", source, e.what()));
  }
}

CacheVerdict check_cached_profile(const HardwareProfile& cached, const MachineKey& current) {
  const auto stale = [](std::string why) { return CacheVerdict{false, "stale: " + why}; };
  if (cached.format_version != kHardwareProfileFormatVersion)
    return stale(fmt::format("format version {}, this hetmoe writes {}", cached.format_version,
                             kHardwareProfileFormatVersion));
  const MachineKey& k = cached.key;
  if (k.hostname != current.hostname)
    return {false, fmt::format("foreign: measured on host \"{}\", this is \"{}\"", k.hostname, current.hostname)};
  if (k.cpu_model != current.cpu_model)
    return stale(fmt::format("CPU \"{}\" then, \"{}\" now", k.cpu_model, current.cpu_model));
  if (k.topology_summary != current.topology_summary)
    return stale(fmt::format("topology \"{}\" then, \"{}\" now", k.topology_summary, current.topology_summary));
  if (k.hetmoe_version != current.hetmoe_version)
    return stale(fmt::format("hetmoe {} then, {} now", k.hetmoe_version, current.hetmoe_version));
  if (k.cpu_isa != current.cpu_isa)
    return stale(fmt::format("kernels {} then, {} now (HETMOE_ISA)", k.cpu_isa, current.cpu_isa));
  return {true, ""};
}

std::filesystem::path default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "hetmoe";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::filesystem::path(home) / ".cache" / "hetmoe";
  return ".hetmoe-cache";
}

std::filesystem::path profile_cache_path(const std::filesystem::path& dir, const MachineKey& key) {
  return dir / ("probe-" + key.file_hash() + ".json");
}

ProbeMeasurers default_measurers(std::function<Expected<GpuFigures>()> gpu) {
  return {measure_node_read_bandwidth, measure_node_expert_gemv, std::move(gpu)};
}

std::vector<int> probe_thread_counts(int num_cores) {
  std::vector<int> counts;
  for (int n = 1; n < num_cores; n *= 2) counts.push_back(n);
  if (num_cores >= 1) counts.push_back(num_cores);
  return counts;
}

Expected<HardwareProfile> measure_profile(const Topology& t, const MachineKey& key, const ProbeMeasurers& m) {
  const auto t0 = std::chrono::steady_clock::now();
  HardwareProfile p;
  p.key = key;
  p.measured_at = utc_now_iso();
  p.num_packages = static_cast<int>(t.packages.size());
  p.num_numa_nodes = static_cast<int>(t.numa_nodes.size());
  p.num_cores = static_cast<int>(t.cores.size());
  p.num_pus = t.num_pus();
  p.l1d_bytes = t.l1d_bytes;
  p.l2_bytes = t.l2_bytes;
  p.l3_bytes = t.l3_bytes;
  int gemv_node = -1;
  for (size_t n = 0; n < t.numa_nodes.size(); ++n) {
    const int num_cores = static_cast<int>(t.numa_nodes[n].core_idxs.size());
    if (num_cores == 0) continue;  // memory-only node
    if (gemv_node < 0) gemv_node = static_cast<int>(n);
    NodeBandwidth nb;
    nb.numa_node = t.numa_nodes[n].os_index;
    for (int threads : probe_thread_counts(num_cores)) {
      HETMOE_ASSIGN_OR_RETURN(const double bw, m.read_bandwidth(t, static_cast<int>(n), threads));
      nb.read.push_back({threads, bw});
    }
    p.node_read_bandwidth.push_back(std::move(nb));
  }
  if (gemv_node >= 0) {
    // One node stands for all: the GEMV is the same code on every node; bandwidth differences show above.
    p.gemv_numa_node = t.numa_nodes[static_cast<size_t>(gemv_node)].os_index;
    const auto num_cores = static_cast<int>(t.numa_nodes[static_cast<size_t>(gemv_node)].core_idxs.size());
    for (int threads : probe_thread_counts(num_cores)) {
      HETMOE_ASSIGN_OR_RETURN(const GemvPoint g, m.expert_gemv(t, gemv_node, threads, &p.gemv_working_set_bytes));
      p.expert_gemv.push_back(g);
    }
  }
  if (m.gpu) {
    auto g = m.gpu();
    if (g)
      p.gpu = *g;
    else
      p.gpu_note = g.error().to_string();
  } else {
    p.gpu_note = "not measured";
  }
  if (p.gpu) p.gpu_note = "expert GEMV throughput not measured yet (needs the CUDA GEMV kernels)";
  p.probe_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return p;
}

Expected<ProbeResult> probe_hardware(const Topology& topology, const MachineKey& key, const ProbeOptions& options,
                                     const ProbeMeasurers& measurers) {
  ProbeResult r;
  const std::filesystem::path dir = options.cache_dir.empty() ? default_cache_dir() : options.cache_dir;
  r.cache_path = profile_cache_path(dir, key);
  std::error_code ec;
  if (options.force) {
    r.reason = "--force";
  } else if (!std::filesystem::exists(r.cache_path, ec)) {
    r.reason = "no cached profile";
  } else {
    std::ifstream in(r.cache_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    auto cached = profile_from_json(ss.str(), r.cache_path.string());
    if (!cached) {
      r.reason = "unreadable cache: " + cached.error().to_string();
    } else if (const CacheVerdict v = check_cached_profile(*cached, key); !v.usable) {
      r.reason = v.reason;
    } else {
      r.profile = std::move(*cached);
      r.from_cache = true;
      return r;
    }
  }
  HETMOE_ASSIGN_OR_RETURN(r.profile, measure_profile(topology, key, measurers));
  // Write to a temporary name and rename, so a reader never sees half a file.
  if (!std::filesystem::exists(dir, ec)) {
    r.created_cache_dir = std::filesystem::create_directories(dir, ec);
    if (ec) r.cache_write_error = fmt::format("cannot create the cache directory {}: {}", dir.string(), ec.message());
  } else if (!std::filesystem::is_directory(dir, ec)) {
    r.cache_write_error = fmt::format("the cache directory {} is not a directory", dir.string());
  }
  if (!r.cache_write_error.empty()) return r;
  const std::filesystem::path tmp = r.cache_path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << profile_to_json(r.profile);
    if (!out) r.cache_write_error = fmt::format("cannot write {}", tmp.string());
  }
  if (r.cache_write_error.empty()) {
    std::filesystem::rename(tmp, r.cache_path, ec);
    if (ec) r.cache_write_error = fmt::format("cannot rename {} to {}: {}", tmp.string(), r.cache_path.string(),
                                              ec.message());
  }
  if (!r.cache_write_error.empty()) std::filesystem::remove(tmp, ec);
  return r;
}

}  // namespace hetmoe::placement
