#pragma once
// CPU worker threads pinned to the PUs a ThreadLayout names (placement/thread_layout.h): one oneTBB task_arena per
// NUMA node (constraints: max_concurrency = the node's worker count, numa_id where oneTBB's hwloc binding knows the
// node), and a task_scheduler_observer per arena that binds each thread entering the arena to the PU of its arena
// slot (hwloc_set_cpubind) and names worker threads "hetmoe-n<node>-w<slot>".
//
// Slot 0 of the first arena belongs to the thread that calls arena.execute() (oneTBB reserves one slot for it), so
// that thread is pinned to the first node's first worker PU while it works in the arena, and gets its previous
// affinity back when execute() returns (two system calls per execute; the CPU path calls it once per forward call).
// Pool workers take slots 1..n-1 and stay on their PU.
// The other nodes' arenas keep no slot for external threads: the thread running the forward pass hands them work
// with a task_group (runtime/exec/forward_cpu.h, node_arenas), their own workers take all n slots, and an external
// thread that enters one to hand over or wait is not re-pinned.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <tbb/task_arena.h>

#include "placement/thread_layout.h"
#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe {

class WorkerPool {
 public:
  /// One arena per entry of layout.nodes. An entry with numa_node −1 spans nodes (no NUMA constraint): used when
  /// one arena must run on several nodes' PUs.
  /// Errors: kInvalidArgument for a layout without workers or a PU this process may not run on (not in its
  /// cpuset); kIo when hwloc cannot read the machine or cannot bind threads here.
  static Expected<std::unique_ptr<WorkerPool>> create(const placement::ThreadLayout& layout);

  /// The pool for `num_threads` workers (0 = one per core) on this machine, with `options` for everything else
  /// (options.num_threads is replaced by num_threads). With more than one NUMA node in the layout and
  /// `one_arena` set, all workers share a single spanning arena. Errors: topology_from_machine's,
  /// compute_thread_layout's, create's.
  static Expected<std::unique_ptr<WorkerPool>> create_for_machine(int num_threads,
                                                                  const placement::ThreadLayoutOptions& options,
                                                                  bool one_arena);

  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  const placement::ThreadLayout& layout() const { return layout_; }
  int num_arenas() const { return static_cast<int>(arenas_.size()); }
  /// The arena of layout().nodes[node_slot].
  tbb::task_arena& arena(int node_slot) { return *arenas_[static_cast<size_t>(node_slot)]; }
  /// How often a thread entered the arena of layout().nodes[node_slot] (workers and external threads).
  uint64_t num_thread_entries(int node_slot) const;
  /// Threads whose binding failed since creation (0 when every thread runs where the layout says).
  uint64_t num_pin_failures() const { return pin_failures_.load(std::memory_order_relaxed); }

 private:
  class PinningObserver;
  WorkerPool() = default;

  placement::ThreadLayout layout_;
  void* hwloc_topology_ = nullptr;  // hwloc_topology_t, used for binding
  std::vector<std::unique_ptr<tbb::task_arena>> arenas_;       // (nodes)
  std::vector<std::unique_ptr<PinningObserver>> observers_;    // (nodes), destroyed before the arenas
  std::atomic<uint64_t> pin_failures_{0};
};

/// Several NUMA nodes: the node slot (index into layout.nodes) of every expert, (num_layers, num_experts) row-major,
/// balanced by bytes with placement::shard_experts; with bind_memory, each expert's gate, up and down rows are bound
/// to their node's memory (placement::bind_to_numa_node, moving pages already there), so a node's workers read
/// local memory only. `num_bound_bytes` (optional) receives the bytes the kernel accepted (0 where it refuses:
/// the weights then stay where they are and the results are the same).
/// Errors: kInvalidArgument for a layout with no nodes or more than 255, or a node without an OS index (−1);
/// shard_experts' and bind_to_numa_node's errors.
Expected<std::vector<uint8_t>> place_experts_on_nodes(const Model& model, const placement::ThreadLayout& layout,
                                                      bool bind_memory, uint64_t* num_bound_bytes = nullptr);

}  // namespace hetmoe
