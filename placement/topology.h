#pragma once
// The machine's CPU topology as plain data, read with hwloc: packages, NUMA nodes with their cores, cores with their
// hardware threads (PUs, by OS index: the numbers sched_setaffinity and /proc/cpuinfo use), and cache sizes. Built
// from the live machine or from an hwloc synthetic description (hwloc_topology_set_synthetic), so the thread layout
// and expert sharding can be tested for machines we do not have.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::placement {

struct TopologyCore {
  int package_idx = 0;        // index into Topology::packages
  int numa_node_idx = 0;      // index into Topology::numa_nodes
  std::vector<int> pu_os;     // OS indexes of its hardware threads (SMT siblings), ascending
};

struct TopologyNumaNode {
  int os_index = 0;           // the node number libnuma, mbind and /sys/devices/system/node use
  int package_idx = 0;        // index into Topology::packages (the package of its first core)
  uint64_t memory_bytes = 0;  // local memory (0 where hwloc does not know it, e.g. synthetic topologies)
  std::vector<int> core_idxs; // indexes into Topology::cores, ascending
};

struct TopologyPackage {
  int os_index = 0;
  std::vector<int> numa_node_idxs;  // indexes into Topology::numa_nodes
};

struct Topology {
  std::vector<TopologyPackage> packages;
  std::vector<TopologyNumaNode> numa_nodes;  // in hwloc logical order
  std::vector<TopologyCore> cores;           // in hwloc logical order (grouped by package and node)
  uint64_t l1d_bytes = 0;  // per core; 0 when unknown
  uint64_t l2_bytes = 0;   // one L2 instance
  uint64_t l3_bytes = 0;   // one L3 instance (the last-level cache on most x86 machines)

  int num_pus() const;
  int max_pus_per_core() const;
  /// Index into numa_nodes of the node with this OS index, or -1.
  int numa_node_idx_of(int os_index) const;
  /// Index into cores of the core holding this PU (OS index), or -1.
  int core_idx_of_pu(int pu_os) const;
  /// "1 package, 1 NUMA node, 2 cores, 2 PUs; L1d 48 KiB, L2 2 MiB, L3 480 MiB" — also part of the probe cache key.
  std::string summary() const;
};

/// The topology of the machine this process runs on, restricted to the PUs it may use (its CPU affinity, e.g. from
/// taskset, and its cgroup cpuset).
/// Errors: kIo when hwloc cannot read the machine (the message carries errno text), kFormat when it finds no core.
Expected<Topology> topology_from_machine();

/// The topology an hwloc synthetic description describes, e.g. "pack:2 numa:2 core:8 pu:2" (2 packages, each with
/// 2 NUMA nodes of 8 cores with 2 PUs each; PU OS indexes are 0..63 in order). Caches appear only where the
/// description has them ("l3:1 l2:4 l1d:1 ..." with sizes, see hwloc's synthetic syntax).
/// Errors: kInvalidArgument naming the description when hwloc rejects it or it has no core.
Expected<Topology> topology_from_synthetic(const std::string& description);

}  // namespace hetmoe::placement
