#include "placement/topology.h"

#include <hwloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace hetmoe::placement {
namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using TopologyHandle = std::unique_ptr<hwloc_topology, TopologyDeleter>;

std::string format_cache(uint64_t bytes) {
  if (bytes == 0) return "?";
  if (bytes % (1u << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} KiB", bytes >> 10);
}

uint64_t first_cache_size(hwloc_topology_t topo, hwloc_obj_type_t type) {
  hwloc_obj_t obj = hwloc_get_obj_by_type(topo, type, 0);
  return obj && obj->attr ? obj->attr->cache.size : 0;
}

/// Reads the plain-data topology out of a loaded hwloc topology.
Expected<Topology> read_topology(hwloc_topology_t topo, const std::string& source) {
  Topology t;
  const int num_packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
  for (int i = 0; i < num_packages; ++i)
    t.packages.push_back({static_cast<int>(hwloc_get_obj_by_type(topo, HWLOC_OBJ_PACKAGE, i)->os_index), {}});
  if (t.packages.empty()) t.packages.push_back({0, {}});  // some VMs expose no package object

  const int num_nodes = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  std::vector<hwloc_obj_t> node_objs;
  for (int i = 0; i < num_nodes; ++i) {
    hwloc_obj_t n = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, i);
    node_objs.push_back(n);
    TopologyNumaNode node;
    node.os_index = static_cast<int>(n->os_index);
    node.memory_bytes = n->attr ? n->attr->numanode.local_memory : 0;
    t.numa_nodes.push_back(node);
  }
  if (t.numa_nodes.empty()) {  // hwloc always reports at least one node; keep the invariant if it ever does not
    t.numa_nodes.push_back({});
    node_objs.push_back(nullptr);
  }

  // Cores; a topology without a core level (e.g. "pack:2 pu:4") has one core per PU.
  const hwloc_obj_type_t core_type =
      hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
  const int num_cores = hwloc_get_nbobjs_by_type(topo, core_type);
  for (int i = 0; i < num_cores; ++i) {
    hwloc_obj_t c = hwloc_get_obj_by_type(topo, core_type, i);
    TopologyCore core;
    for (hwloc_obj_t pu = hwloc_get_next_obj_inside_cpuset_by_type(topo, c->cpuset, HWLOC_OBJ_PU, nullptr);
         pu != nullptr; pu = hwloc_get_next_obj_inside_cpuset_by_type(topo, c->cpuset, HWLOC_OBJ_PU, pu))
      core.pu_os.push_back(static_cast<int>(pu->os_index));
    if (core.pu_os.empty()) continue;  // a core whose PUs are all outside our cpuset
    std::sort(core.pu_os.begin(), core.pu_os.end());
    if (hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_PACKAGE, c)) {
      for (size_t p = 0; p < t.packages.size(); ++p)
        if (t.packages[p].os_index == static_cast<int>(pkg->os_index)) core.package_idx = static_cast<int>(p);
    }
    for (size_t n = 0; n < node_objs.size(); ++n)
      if (node_objs[n] && hwloc_bitmap_intersects(node_objs[n]->cpuset, c->cpuset)) {
        core.numa_node_idx = static_cast<int>(n);
        break;
      }
    t.numa_nodes[static_cast<size_t>(core.numa_node_idx)].core_idxs.push_back(static_cast<int>(t.cores.size()));
    t.cores.push_back(std::move(core));
  }
  if (t.cores.empty())
    return make_error(ErrorCode::kFormat, fmt::format("{}: hwloc reports no core this process may run on", source));

  for (size_t n = 0; n < t.numa_nodes.size(); ++n) {
    TopologyNumaNode& node = t.numa_nodes[n];
    if (!node.core_idxs.empty()) node.package_idx = t.cores[static_cast<size_t>(node.core_idxs[0])].package_idx;
    t.packages[static_cast<size_t>(node.package_idx)].numa_node_idxs.push_back(static_cast<int>(n));
  }
  t.l1d_bytes = first_cache_size(topo, HWLOC_OBJ_L1CACHE);
  t.l2_bytes = first_cache_size(topo, HWLOC_OBJ_L2CACHE);
  t.l3_bytes = first_cache_size(topo, HWLOC_OBJ_L3CACHE);
  return t;
}

}  // namespace

int Topology::num_pus() const {
  int n = 0;
  for (const auto& c : cores) n += static_cast<int>(c.pu_os.size());
  return n;
}

int Topology::max_pus_per_core() const {
  size_t n = 0;
  for (const auto& c : cores) n = std::max(n, c.pu_os.size());
  return static_cast<int>(n);
}

int Topology::numa_node_idx_of(int os_index) const {
  for (size_t n = 0; n < numa_nodes.size(); ++n)
    if (numa_nodes[n].os_index == os_index) return static_cast<int>(n);
  return -1;
}

int Topology::core_idx_of_pu(int pu_os) const {
  for (size_t c = 0; c < cores.size(); ++c)
    if (std::find(cores[c].pu_os.begin(), cores[c].pu_os.end(), pu_os) != cores[c].pu_os.end())
      return static_cast<int>(c);
  return -1;
}

std::string Topology::summary() const {
  const auto plural = [](size_t n, const char* word) { return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s"); };
  return fmt::format("{}, {}, {}, {}; L1d {}, L2 {}, L3 {}", plural(packages.size(), "package"),
                     plural(numa_nodes.size(), "NUMA node"), plural(cores.size(), "core"),
                     plural(static_cast<size_t>(num_pus()), "PU"), format_cache(l1d_bytes),
                     format_cache(l2_bytes), format_cache(l3_bytes));
}

Expected<Topology> topology_from_machine() {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0)
    return make_error(ErrorCode::kIo, fmt::format("hwloc_topology_init: {}", std::strerror(errno)));
  TopologyHandle topo(raw);
  if (hwloc_topology_load(raw) != 0)
    return make_error(ErrorCode::kIo, fmt::format("hwloc_topology_load: {}", std::strerror(errno)));
  // Only the PUs this process may run on (taskset, cgroup cpuset): oneTBB counts the same ones.
  hwloc_bitmap_t allowed = hwloc_bitmap_alloc();
  if (allowed && hwloc_get_cpubind(raw, allowed, HWLOC_CPUBIND_PROCESS) == 0 && !hwloc_bitmap_iszero(allowed))
    hwloc_topology_restrict(raw, allowed, 0);
  hwloc_bitmap_free(allowed);
  return read_topology(raw, "this machine");
}

Expected<Topology> topology_from_synthetic(const std::string& description) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0)
    return make_error(ErrorCode::kIo, fmt::format("hwloc_topology_init: {}", std::strerror(errno)));
  TopologyHandle topo(raw);
  if (hwloc_topology_set_synthetic(raw, description.c_str()) != 0 || hwloc_topology_load(raw) != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("synthetic topology \"{}\": hwloc rejects it (expected e.g. "
                                  "\"pack:2 numa:2 core:8 pu:2\")",
                                  description));
  return read_topology(raw, fmt::format("synthetic topology \"{}\"", description));
}

}  // namespace hetmoe::placement
