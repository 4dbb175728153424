#include "placement/thread_layout.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace hetmoe::placement {
namespace {

Error invalid(std::string message) { return make_error(ErrorCode::kInvalidArgument, std::move(message)); }

std::vector<int> node_os_list(const Topology& t, const std::vector<int>& node_idxs) {
  std::vector<int> os;
  for (int n : node_idxs) os.push_back(t.numa_nodes[static_cast<size_t>(n)].os_index);
  return os;
}

/// Indexes into t.numa_nodes of the nodes to use.
Expected<std::vector<int>> used_nodes(const Topology& t, const std::vector<int>& requested) {
  std::vector<int> idxs;
  if (requested.empty()) {
    for (size_t n = 0; n < t.numa_nodes.size(); ++n)
      if (!t.numa_nodes[n].core_idxs.empty()) idxs.push_back(static_cast<int>(n));
    return idxs;
  }
  std::vector<int> all;
  for (const auto& n : t.numa_nodes) all.push_back(n.os_index);
  for (int os : requested) {
    const int idx = t.numa_node_idx_of(os);
    if (idx < 0) return invalid(fmt::format("NUMA node {} does not exist (nodes: {})", os, fmt::join(all, ",")));
    if (std::find(idxs.begin(), idxs.end(), idx) != idxs.end())
      return invalid(fmt::format("NUMA node {} is named twice", os));
    if (t.numa_nodes[static_cast<size_t>(idx)].core_idxs.empty())
      return invalid(fmt::format("NUMA node {} has no cores (memory only); it cannot run workers", os));
    idxs.push_back(idx);
  }
  std::sort(idxs.begin(), idxs.end());  // topology order
  return idxs;
}

}  // namespace

int ThreadLayout::num_workers() const {
  int n = 0;
  for (const auto& node : nodes) n += static_cast<int>(node.worker_pus.size());
  return n;
}

std::string ThreadLayout::describe() const {
  std::string s;
  for (const auto& node : nodes) {
    if (!s.empty()) s += "; ";
    s += fmt::format("node {}: PUs {}", node.numa_node, fmt::join(node.worker_pus, ","));
  }
  if (gpu_feeder_pu >= 0) s += fmt::format("; GPU feeder: PU {} (node {})", gpu_feeder_pu, gpu_feeder_numa_node);
  return s;
}

Expected<ThreadLayout> compute_thread_layout(const Topology& t, const ThreadLayoutOptions& o) {
  if (o.num_threads < 0) return invalid(fmt::format("thread count {}: expected ≥ 0", o.num_threads));
  if (o.threads_per_node < 0) return invalid(fmt::format("threads per node {}: expected ≥ 0", o.threads_per_node));
  if (o.num_threads > 0 && o.threads_per_node > 0)
    return invalid(fmt::format("both a thread count ({}) and threads per node ({}) given: expected one of them",
                               o.num_threads, o.threads_per_node));
  HETMOE_ASSIGN_OR_RETURN(const std::vector<int> nodes, used_nodes(t, o.numa_nodes));
  if (nodes.empty()) return invalid("no NUMA node with cores to run workers on");
  const std::vector<int> nodes_os = node_os_list(t, nodes);

  // Validate an explicit PU list and find the cores it touches.
  std::set<int> listed_cores;
  if (!o.worker_pus.empty()) {
    const int n = static_cast<int>(o.worker_pus.size());
    if (o.threads_per_node > 0) return invalid("threads per node given together with an explicit PU list");
    if (o.num_threads > 0 && o.num_threads != n)
      return invalid(fmt::format("thread count {} disagrees with the {} PUs listed", o.num_threads, n));
    std::set<int> seen;
    for (int pu : o.worker_pus) {
      const int core = t.core_idx_of_pu(pu);
      if (core < 0)
        return invalid(fmt::format("PU {} does not exist on this machine ({} PUs)", pu, t.num_pus()));
      if (!seen.insert(pu).second) return invalid(fmt::format("PU {} is listed twice", pu));
      const int node = t.cores[static_cast<size_t>(core)].numa_node_idx;
      if (std::find(nodes.begin(), nodes.end(), node) == nodes.end())
        return invalid(fmt::format("PU {} is on NUMA node {}, outside the chosen nodes {}", pu,
                                   t.numa_nodes[static_cast<size_t>(node)].os_index, fmt::join(nodes_os, ",")));
      if (!listed_cores.insert(core).second && o.smt == SmtUse::kNo)
        return invalid(fmt::format("PU {} is an SMT sibling of another listed PU while SMT use is off", pu));
    }
  }

  ThreadLayout layout;
  // The GPU feeder's core: free of workers.
  int feeder_core = -1;
  if (o.reserve_gpu_feeder) {
    for (int n : nodes) {
      const auto& cores = t.numa_nodes[static_cast<size_t>(n)].core_idxs;
      if (o.worker_pus.empty()) {
        if (cores.size() >= 2) feeder_core = cores.back();  // a node's only core stays a worker core
      } else {
        for (int c : cores)
          if (!listed_cores.count(c)) {
            feeder_core = c;
            break;
          }
      }
      if (feeder_core >= 0) break;
    }
    if (feeder_core < 0)
      return invalid(fmt::format("no core left for the GPU-feeding thread on NUMA nodes {} ({} cores{})",
                                 fmt::join(nodes_os, ","), t.cores.size(),
                                 o.worker_pus.empty() ? "" : ", all touched by the PU list"));
    const TopologyCore& core = t.cores[static_cast<size_t>(feeder_core)];
    layout.gpu_feeder_pu = core.pu_os[0];
    layout.gpu_feeder_numa_node = t.numa_nodes[static_cast<size_t>(core.numa_node_idx)].os_index;
  }

  if (!o.worker_pus.empty()) {
    for (int n : nodes) {
      NodeWorkers w{t.numa_nodes[static_cast<size_t>(n)].os_index, {}};
      for (int pu : o.worker_pus)
        if (t.cores[static_cast<size_t>(t.core_idx_of_pu(pu))].numa_node_idx == n) w.worker_pus.push_back(pu);
      if (!w.worker_pus.empty()) layout.nodes.push_back(std::move(w));
    }
    return layout;
  }

  // Candidate PUs of each node in fill order: one PU per core, then the siblings (where SMT is allowed).
  std::vector<std::vector<int>> candidates(nodes.size());
  std::vector<int> num_cores(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::vector<const TopologyCore*> cores;
    for (int c : t.numa_nodes[static_cast<size_t>(nodes[i])].core_idxs)
      if (c != feeder_core) cores.push_back(&t.cores[static_cast<size_t>(c)]);
    num_cores[i] = static_cast<int>(cores.size());
    const size_t max_depth = o.smt == SmtUse::kNo ? 1 : static_cast<size_t>(t.max_pus_per_core());
    for (size_t depth = 0; depth < max_depth; ++depth)
      for (const TopologyCore* c : cores)
        if (depth < c->pu_os.size()) candidates[i].push_back(c->pu_os[depth]);
  }
  const int total_capacity =
      std::accumulate(candidates.begin(), candidates.end(), 0, [](int s, const auto& v) { return s + int(v.size()); });
  const int total_cores = std::accumulate(num_cores.begin(), num_cores.end(), 0);
  const auto too_many = [&](int asked, const std::string& what) {
    return invalid(fmt::format("{} {} threads but NUMA node{} {} {} only {} {}{}", what, asked,
                               nodes_os.size() == 1 ? "" : "s", fmt::join(nodes_os, ","),
                               nodes_os.size() == 1 ? "has" : "have", total_capacity,
                               o.smt == SmtUse::kNo ? (total_capacity == 1 ? "core (SMT use is off)"
                                                                           : "cores (SMT use is off)")
                                                    : (total_capacity == 1 ? "PU" : "PUs"),
                               o.reserve_gpu_feeder ? " besides the GPU feeder's core" : ""));
  };

  std::vector<int> count(nodes.size(), 0);
  if (o.threads_per_node > 0) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (o.threads_per_node > static_cast<int>(candidates[i].size()))
        return invalid(fmt::format("{} threads per node but NUMA node {} has only {} {}", o.threads_per_node,
                                   nodes_os[i], candidates[i].size(), o.smt == SmtUse::kNo ? "cores" : "PUs"));
      count[i] = o.threads_per_node;
    }
  } else {
    int total = o.num_threads;
    if (total == 0) total = o.smt == SmtUse::kYes ? total_capacity : total_cores;
    if (total > total_capacity) return too_many(total, "asked for");
    // Round-robin over the nodes with spare capacity.
    for (int assigned = 0; assigned < total;)
      for (size_t i = 0; i < nodes.size() && assigned < total; ++i)
        if (count[i] < static_cast<int>(candidates[i].size())) {
          ++count[i];
          ++assigned;
        }
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (count[i] == 0) continue;
    NodeWorkers w{nodes_os[i], {}};
    w.worker_pus.assign(candidates[i].begin(), candidates[i].begin() + count[i]);
    layout.nodes.push_back(std::move(w));
  }
  return layout;
}

Expected<ExpertSharding> shard_experts(std::span<const CpuExpert> experts, std::span<const int> numa_nodes) {
  if (numa_nodes.empty()) return invalid("shard_experts: no NUMA node given");
  for (size_t i = 0; i < numa_nodes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (numa_nodes[i] == numa_nodes[j])
        return invalid(fmt::format("shard_experts: NUMA node {} is named twice", numa_nodes[i]));
  bool any_probability = false;
  std::set<std::pair<uint32_t, uint32_t>> seen;
  for (const CpuExpert& e : experts) {
    if (!std::isfinite(e.selection_probability) || e.selection_probability < 0.0)
      return invalid(fmt::format("shard_experts: expert {} of layer {} has selection probability {}: expected a "
                                 "finite value ≥ 0",
                                 e.expert_idx, e.layer_idx, e.selection_probability));
    if (e.selection_probability > 0.0) any_probability = true;
    if (!seen.insert({e.layer_idx, e.expert_idx}).second)
      return invalid(fmt::format("shard_experts: expert {} of layer {} is given twice", e.expert_idx, e.layer_idx));
  }
  const auto load_of = [&](const CpuExpert& e) {
    return any_probability ? static_cast<double>(e.num_bytes) * e.selection_probability
                           : static_cast<double>(e.num_bytes);
  };

  ExpertSharding s;
  s.numa_nodes.assign(numa_nodes.begin(), numa_nodes.end());
  s.numa_node_of.assign(experts.size(), -1);
  s.bytes_per_node.assign(numa_nodes.size(), 0);
  s.traffic_per_node.assign(numa_nodes.size(), 0.0);

  // Experts grouped by layer (in order of first appearance), heaviest first within a layer.
  std::vector<size_t> order(experts.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (experts[a].layer_idx != experts[b].layer_idx) return experts[a].layer_idx < experts[b].layer_idx;
    return load_of(experts[a]) > load_of(experts[b]);
  });
  std::vector<double> layer_load(numa_nodes.size(), 0.0);
  for (size_t k = 0; k < order.size(); ++k) {
    const CpuExpert& e = experts[order[k]];
    if (k == 0 || experts[order[k - 1]].layer_idx != e.layer_idx) std::fill(layer_load.begin(), layer_load.end(), 0.0);
    size_t best = 0;
    for (size_t n = 1; n < numa_nodes.size(); ++n) {
      if (layer_load[n] < layer_load[best] ||
          (layer_load[n] == layer_load[best] && s.bytes_per_node[n] < s.bytes_per_node[best]))
        best = n;
    }
    s.numa_node_of[order[k]] = numa_nodes[best];
    layer_load[best] += load_of(e);
    s.bytes_per_node[best] += e.num_bytes;
    s.traffic_per_node[best] += static_cast<double>(e.num_bytes) * e.selection_probability;
  }
  return s;
}

Expected<ExpertSharding> shard_experts(uint32_t num_layers, uint32_t num_experts, uint64_t expert_bytes,
                                       std::span<const int> numa_nodes) {
  std::vector<CpuExpert> experts;
  experts.reserve(static_cast<size_t>(num_layers) * num_experts);
  for (uint32_t l = 0; l < num_layers; ++l)
    for (uint32_t e = 0; e < num_experts; ++e) experts.push_back({l, e, expert_bytes, 0.0});
  return shard_experts(experts, numa_nodes);
}

}  // namespace hetmoe::placement
