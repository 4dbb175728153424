#include "runtime/exec/worker_pool.h"

#include <hwloc.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <tbb/info.h>
#include <tbb/task_scheduler_observer.h>

#include "placement/numa_memory.h"
#include "placement/topology.h"

namespace hetmoe {
namespace {

/// The PU this thread was last bound to by a pool (−1: never, or restored since), so a worker re-entering an arena
/// on the same PU costs no system call.
thread_local int tls_bound_pu = -1;
/// An external thread's CPU affinity before it entered a pool's first arena, restored when it leaves, so threads it
/// starts later (a bandwidth probe, a GPU feeder) are not confined to one PU.
thread_local cpu_set_t tls_saved_affinity;
thread_local bool tls_affinity_saved = false;

hwloc_topology_t as_hwloc(void* t) { return static_cast<hwloc_topology_t>(t); }

}  // namespace

class WorkerPool::PinningObserver final : public tbb::task_scheduler_observer {
 public:
  PinningObserver(tbb::task_arena& arena, std::vector<int> pus, int numa_node, bool pin_external,
                  hwloc_topology_t topo, std::atomic<uint64_t>& failures)
      : tbb::task_scheduler_observer(arena), pus_(std::move(pus)), numa_node_(numa_node),
        pin_external_(pin_external), topo_(topo), failures_(failures) {
    observe(true);
  }
  ~PinningObserver() override { observe(false); }

  void on_scheduler_entry(bool is_worker) override {
    num_entries_.fetch_add(1, std::memory_order_relaxed);
    if (!is_worker && !pin_external_) return;  // a thread handing work to another node's arena
    const int slot = tbb::this_task_arena::current_thread_index();
    // oneTBB may let a worker into a slot past the arena's concurrency while the external thread is away in another
    // arena (an arena with a reserved slot has at least two); such a thread runs on any of the node's PUs.
    if (!is_worker && !tls_affinity_saved)
      tls_affinity_saved = sched_getaffinity(0, sizeof tls_saved_affinity, &tls_saved_affinity) == 0;
    const bool own_pu = slot >= 0 && slot < static_cast<int>(pus_.size());
    const int pu = own_pu ? pus_[static_cast<size_t>(slot)] : -1;
    if (!own_pu || tls_bound_pu != pu) {
      hwloc_bitmap_t set = hwloc_bitmap_alloc();
      if (own_pu)
        hwloc_bitmap_only(set, static_cast<unsigned>(pu));
      else
        for (int p : pus_) hwloc_bitmap_set(set, static_cast<unsigned>(p));
      if (hwloc_set_cpubind(topo_, set, HWLOC_CPUBIND_THREAD) == 0)
        tls_bound_pu = pu;
      else
        failures_.fetch_add(1, std::memory_order_relaxed);
      hwloc_bitmap_free(set);
    }
    if (is_worker) {
      char name[32];
      std::snprintf(name, sizeof name, "hetmoe-n%d-w%d", std::max(numa_node_, 0), slot);
      name[15] = '\0';  // the kernel keeps 15 characters
      pthread_setname_np(pthread_self(), name);
    }
  }

  void on_scheduler_exit(bool is_worker) override {
    if (is_worker || !pin_external_ || !tls_affinity_saved) return;
    sched_setaffinity(0, sizeof tls_saved_affinity, &tls_saved_affinity);
    tls_affinity_saved = false;
    tls_bound_pu = -1;
  }

  uint64_t num_entries() const { return num_entries_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> num_entries_{0};
  std::vector<int> pus_;  // (max_concurrency) PU OS index of each arena slot
  int numa_node_;
  bool pin_external_;
  hwloc_topology_t topo_;
  std::atomic<uint64_t>& failures_;
};

Expected<std::unique_ptr<WorkerPool>> WorkerPool::create(const placement::ThreadLayout& layout) {
  if (layout.num_workers() == 0)
    return make_error(ErrorCode::kInvalidArgument, "worker pool: the layout has no workers");
  std::unique_ptr<WorkerPool> pool(new WorkerPool());
  pool->layout_ = layout;
  hwloc_topology_t topo = nullptr;
  if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
    if (topo) hwloc_topology_destroy(topo);
    return make_error(ErrorCode::kIo, fmt::format("worker pool: hwloc cannot read this machine: {}",
                                                  std::strerror(errno)));
  }
  pool->hwloc_topology_ = topo;
  const hwloc_topology_support* support = hwloc_topology_get_support(topo);
  if (!support->cpubind->set_thread_cpubind)
    return make_error(ErrorCode::kIo, "worker pool: hwloc cannot bind threads to PUs on this system");
  for (const auto& node : layout.nodes)
    for (int pu : node.worker_pus) {
      hwloc_obj_t obj = hwloc_get_pu_obj_by_os_index(topo, static_cast<unsigned>(pu));
      if (!obj || !hwloc_bitmap_isset(hwloc_topology_get_allowed_cpuset(topo), static_cast<unsigned>(pu)))
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("worker pool: PU {} (node {}) is not one this process may run on", pu,
                                      node.numa_node));
    }

  const std::vector<tbb::numa_node_id> tbb_nodes = tbb::info::numa_nodes();
  for (size_t i = 0; i < layout.nodes.size(); ++i) {
    const placement::NodeWorkers& node = layout.nodes[i];
    const bool first = i == 0;
    tbb::task_arena::constraints c;
    c.max_concurrency = static_cast<int>(node.worker_pus.size());
    // oneTBB binds an arena to a node itself only through its hwloc plug-in (tbbbind) and numbers nodes by OS
    // index; the observer then narrows each thread to one PU of the node.
    if (layout.nodes.size() > 1 && node.numa_node >= 0 &&
        std::find(tbb_nodes.begin(), tbb_nodes.end(), node.numa_node) != tbb_nodes.end())
      c.numa_id = node.numa_node;
    auto arena = std::make_unique<tbb::task_arena>(c, first ? 1u : 0u);
    arena->initialize();
    pool->observers_.push_back(std::make_unique<PinningObserver>(*arena, node.worker_pus, node.numa_node, first, topo,
                                                                 pool->pin_failures_));
    pool->arenas_.push_back(std::move(arena));
  }
  return pool;
}

Expected<std::unique_ptr<WorkerPool>> WorkerPool::create_for_machine(int num_threads,
                                                                     const placement::ThreadLayoutOptions& options,
                                                                     bool one_arena) {
  HETMOE_ASSIGN_OR_RETURN(const placement::Topology topology, placement::topology_from_machine());
  placement::ThreadLayoutOptions o = options;
  o.num_threads = num_threads;
  HETMOE_ASSIGN_OR_RETURN(placement::ThreadLayout layout, placement::compute_thread_layout(topology, o));
  if (one_arena && layout.nodes.size() > 1) {
    placement::NodeWorkers all{-1, {}};
    for (const auto& node : layout.nodes)
      all.worker_pus.insert(all.worker_pus.end(), node.worker_pus.begin(), node.worker_pus.end());
    layout.nodes = {all};
  }
  return create(layout);
}

Expected<std::vector<uint8_t>> place_experts_on_nodes(const Model& model, const placement::ThreadLayout& layout,
                                                      bool bind_memory, uint64_t* num_bound_bytes) {
  if (num_bound_bytes) *num_bound_bytes = 0;
  if (layout.nodes.empty() || layout.nodes.size() > 255)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("expert placement: {} nodes (expected 1..255)", layout.nodes.size()));
  std::vector<int> nodes;
  for (const auto& n : layout.nodes) {
    if (n.numa_node < 0)
      return make_error(ErrorCode::kInvalidArgument, "expert placement: a spanning arena has no NUMA node");
    nodes.push_back(n.numa_node);
  }
  const ModelHparams& hp = model.hparams;
  std::vector<placement::CpuExpert> experts;
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    const uint64_t bytes = w.gate_exps.num_rows * w.gate_exps.row_bytes + w.up_exps.num_rows * w.up_exps.row_bytes +
                           w.down_exps.num_rows * w.down_exps.row_bytes;
    for (uint32_t e = 0; e < hp.num_experts; ++e) experts.push_back({l, e, bytes, 0.0});
  }
  HETMOE_ASSIGN_OR_RETURN(const placement::ExpertSharding sharding, placement::shard_experts(experts, nodes));
  std::vector<uint8_t> slot_of(experts.size());
  for (size_t i = 0; i < experts.size(); ++i) {
    const auto it = std::find(nodes.begin(), nodes.end(), sharding.numa_node_of[i]);
    slot_of[i] = static_cast<uint8_t>(it - nodes.begin());
    if (!bind_memory) continue;
    const LayerWeights& w = model.layers[experts[i].layer_idx];
    for (const WeightView* m : {&w.gate_exps, &w.up_exps, &w.down_exps}) {
      // The weights are read-only to hetmoe; binding changes where their pages live, not their bytes.
      auto* begin = const_cast<uint8_t*>(m->row(0, experts[i].expert_idx));
      const int node = sharding.numa_node_of[i];
      HETMOE_ASSIGN_OR_RETURN(const placement::NumaBindResult r,
                              placement::bind_to_numa_node(begin, m->num_rows * m->row_bytes, node));
      if (num_bound_bytes && r.applied) *num_bound_bytes += r.num_bytes;
    }
  }
  return slot_of;
}

uint64_t WorkerPool::num_thread_entries(int node_slot) const {
  return observers_[static_cast<size_t>(node_slot)]->num_entries();
}

WorkerPool::~WorkerPool() {
  observers_.clear();  // stop observing before the arenas go
  arenas_.clear();
  if (hwloc_topology_) hwloc_topology_destroy(as_hwloc(hwloc_topology_));
}

}  // namespace hetmoe
