#pragma once
// Where the CPU threads run and where the CPU experts live: pure functions of a Topology (placement/topology.h),
// so every choice is testable on synthetic machines.
//
// compute_thread_layout: which PUs (hardware threads, OS indexes) run workers, grouped by NUMA node (one worker pool
// per node, runtime/exec/worker_pool.h), and which PU runs the GPU-feeding thread (on a core no worker uses).
// shard_experts: which node's memory holds each CPU-resident expert, so that a node's workers read only local
// memory and the nodes share the bytes (and, given selection probabilities, the expected traffic) evenly.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "placement/topology.h"
#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// Whether workers may run on SMT siblings (the second and further hardware threads of a core).
enum class SmtUse {
  kAuto,  // one worker per core by default; siblings only when more threads are asked for than there are cores
  kYes,   // one worker per PU by default
  kNo,    // never: at most one worker per core
};

struct ThreadLayoutOptions {
  int num_threads = 0;              // workers in all; 0 = default (one per core, or per PU with SmtUse::kYes)
  int threads_per_node = 0;         // workers on each used node; 0 = unset. Not together with num_threads
  std::vector<int> worker_pus;      // explicit worker PUs (OS indexes); counts must then be 0 or the list's size
  SmtUse smt = SmtUse::kAuto;
  std::vector<int> numa_nodes;      // NUMA nodes to use (OS indexes); empty = every node with cores
  bool reserve_gpu_feeder = false;  // keep one core free of workers for the thread that feeds the GPU
};

struct NodeWorkers {
  int numa_node = 0;             // OS index
  std::vector<int> worker_pus;   // OS indexes, in slot order: slot i of the node's pool runs on worker_pus[i]
};

struct ThreadLayout {
  std::vector<NodeWorkers> nodes;  // the used nodes that got at least one worker, in topology order
  int gpu_feeder_pu = -1;          // OS index; -1 when no GPU-feeding thread was reserved
  int gpu_feeder_numa_node = -1;   // its node (OS index), -1 when none

  int num_workers() const;
  /// "node 0: PUs 0,1; GPU feeder: PU 3 (node 0)".
  std::string describe() const;
};

/// The thread layout for `options` on `topology`. Workers fill a node's cores in order, first one PU per core and
/// then (where SMT is allowed) the siblings; a total num_threads is spread over the used nodes round-robin, so node
/// counts differ by at most one where capacity allows. The GPU feeder takes the last free core of the first used
/// node (with an explicit PU list: the first core, in node order, that the list does not touch).
/// Errors (kInvalidArgument, the message names the value and what is available): negative counts, num_threads
/// together with threads_per_node, counts that disagree with an explicit PU list, a PU or NUMA node that does not
/// exist or is named twice, a PU outside the chosen nodes, SMT siblings in the list with SmtUse::kNo, a named node
/// without cores, more threads than the nodes have PUs (or cores with SmtUse::kNo), no core left for the GPU feeder.
Expected<ThreadLayout> compute_thread_layout(const Topology& topology, const ThreadLayoutOptions& options);

/// One CPU-resident expert (its gate, up and down matrices) to place.
struct CpuExpert {
  uint32_t layer_idx = 0;
  uint32_t expert_idx = 0;
  uint64_t num_bytes = 0;              // weight bytes the expert's workers read
  double selection_probability = 0.0;  // P(selected for a token), 0 when unknown
};

struct ExpertSharding {
  std::vector<int> numa_node_of;          // (num experts given) node OS index of each expert, in input order
  std::vector<int> numa_nodes;            // the nodes, as given
  std::vector<uint64_t> bytes_per_node;   // (numa_nodes) weight bytes placed on each node
  std::vector<double> traffic_per_node;   // (numa_nodes) expected bytes read per token, Σ bytes · probability
};

/// Assigns each CPU expert to one of `numa_nodes` (OS indexes). Layer by layer (a layer's selected experts run at
/// the same time, so they should be spread over the nodes' bandwidth), heaviest expert first, each expert goes to
/// the node with the least load of that layer, ties to the node with the fewest bytes overall, then the first node.
/// The load is the expected traffic bytes · probability when any probability is given, else bytes. With equal
/// expert sizes, per-layer counts differ by at most one and node totals by at most one expert's bytes.
/// Errors (kInvalidArgument): no nodes, a node named twice, a negative or non-finite probability, an expert named
/// twice.
Expected<ExpertSharding> shard_experts(std::span<const CpuExpert> experts, std::span<const int> numa_nodes);

/// Every expert of every layer, each of `expert_bytes` bytes, with no probabilities: the all-CPU case.
Expected<ExpertSharding> shard_experts(uint32_t num_layers, uint32_t num_experts, uint64_t expert_bytes,
                                       std::span<const int> numa_nodes);

}  // namespace hetmoe::placement
