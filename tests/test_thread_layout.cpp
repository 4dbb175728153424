// Topology (hwloc, synthetic and live), thread layout and expert sharding on machines we do not have:
// which cores, which nodes, which experts where.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "placement/thread_layout.h"
#include "placement/topology.h"

namespace hetmoe::placement {
namespace {

Topology synthetic(const std::string& description) {
  auto t = topology_from_synthetic(description);
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().to_string());
  return t ? *t : Topology{};
}

// 2 packages × 2 NUMA nodes × 8 cores × 2 PUs: hwloc numbers PUs depth-first, so node n holds PUs 16n..16n+15 and
// core c of the machine holds PUs 2c and 2c+1.
constexpr const char* kTwoSocket = "pack:2 numa:2 core:8 pu:2";

ThreadLayout layout_or_fail(const Topology& t, const ThreadLayoutOptions& o) {
  auto l = compute_thread_layout(t, o);
  EXPECT_TRUE(l.has_value()) << (l ? "" : l.error().to_string());
  return l ? *l : ThreadLayout{};
}

std::string layout_error(const Topology& t, const ThreadLayoutOptions& o) {
  auto l = compute_thread_layout(t, o);
  EXPECT_FALSE(l.has_value()) << "expected an error, got " << (l ? l->describe() : "");
  if (l) return "";
  EXPECT_EQ(l.error().code, ErrorCode::kInvalidArgument);
  return l.error().message;
}

TEST(Topology, SyntheticTwoSocketHasPackagesNodesCoresAndSiblings) {
  const Topology t = synthetic(kTwoSocket);
  ASSERT_EQ(t.packages.size(), 2u);
  ASSERT_EQ(t.numa_nodes.size(), 4u);
  ASSERT_EQ(t.cores.size(), 32u);
  EXPECT_EQ(t.num_pus(), 64);
  EXPECT_EQ(t.max_pus_per_core(), 2);
  for (size_t n = 0; n < 4; ++n) {
    EXPECT_EQ(t.numa_nodes[n].os_index, static_cast<int>(n));
    EXPECT_EQ(t.numa_nodes[n].package_idx, static_cast<int>(n / 2));
    ASSERT_EQ(t.numa_nodes[n].core_idxs.size(), 8u);
    for (int c : t.numa_nodes[n].core_idxs) {
      const TopologyCore& core = t.cores[static_cast<size_t>(c)];
      EXPECT_EQ(core.numa_node_idx, static_cast<int>(n));
      EXPECT_EQ(core.package_idx, static_cast<int>(n / 2));
      EXPECT_EQ(core.pu_os, (std::vector<int>{2 * c, 2 * c + 1}));
    }
  }
  EXPECT_EQ(t.packages[1].numa_node_idxs, (std::vector<int>{2, 3}));
  EXPECT_EQ(t.core_idx_of_pu(33), 16);
  EXPECT_EQ(t.core_idx_of_pu(64), -1);
  EXPECT_EQ(t.numa_node_idx_of(3), 3);
  EXPECT_EQ(t.numa_node_idx_of(4), -1);
  EXPECT_NE(t.summary().find("2 packages, 4 NUMA nodes, 32 cores, 64 PUs"), std::string::npos) << t.summary();
}

TEST(Topology, SyntheticCacheSizesAreRead) {
  const Topology t = synthetic("pack:1 l3:1(size=32MB) l2:4(size=1MB) l1d:1(size=48KB) core:1 pu:2");
  EXPECT_EQ(t.l3_bytes, 32u * 1000 * 1000);
  EXPECT_EQ(t.l2_bytes, 1000u * 1000);
  EXPECT_EQ(t.l1d_bytes, 48u * 1000);
  EXPECT_EQ(t.cores.size(), 4u);
}

TEST(Topology, RejectsAMalformedSyntheticDescription) {
  auto t = topology_from_synthetic("pack:two core:x");
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(t.error().message.find("pack:two core:x"), std::string::npos);
}

TEST(Topology, LiveMachineHasEveryPuOnExactlyOneCoreAndNode) {
  auto t = topology_from_machine();
  ASSERT_TRUE(t.has_value()) << t.error().to_string();
  ASSERT_FALSE(t->cores.empty());
  std::set<int> pus;
  size_t cores_in_nodes = 0;
  for (const auto& n : t->numa_nodes) cores_in_nodes += n.core_idxs.size();
  EXPECT_EQ(cores_in_nodes, t->cores.size());
  for (const auto& c : t->cores)
    for (int pu : c.pu_os) EXPECT_TRUE(pus.insert(pu).second) << "PU " << pu << " on two cores";
  EXPECT_EQ(static_cast<int>(pus.size()), t->num_pus());
}

TEST(ThreadLayout, DefaultIsOneWorkerPerCoreOnEveryNode) {
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), {});
  ASSERT_EQ(l.nodes.size(), 4u);
  for (size_t n = 0; n < 4; ++n) {
    EXPECT_EQ(l.nodes[n].numa_node, static_cast<int>(n));
    std::vector<int> expected;  // the first PU of each of the node's 8 cores
    for (int c = 0; c < 8; ++c) expected.push_back(16 * static_cast<int>(n) + 2 * c);
    EXPECT_EQ(l.nodes[n].worker_pus, expected);
  }
  EXPECT_EQ(l.gpu_feeder_pu, -1);
}

TEST(ThreadLayout, SmtYesUsesEverySiblingAfterTheFirstPuOfEachCore) {
  ThreadLayoutOptions o;
  o.smt = SmtUse::kYes;
  o.numa_nodes = {1};
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 1u);
  EXPECT_EQ(l.nodes[0].numa_node, 1);
  EXPECT_EQ(l.nodes[0].worker_pus,
            (std::vector<int>{16, 18, 20, 22, 24, 26, 28, 30, 17, 19, 21, 23, 25, 27, 29, 31}));
}

TEST(ThreadLayout, OddTotalIsSpreadRoundRobinOverNodes) {
  ThreadLayoutOptions o;
  o.num_threads = 7;
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 4u);
  EXPECT_EQ(l.nodes[0].worker_pus, (std::vector<int>{0, 2}));
  EXPECT_EQ(l.nodes[1].worker_pus, (std::vector<int>{16, 18}));
  EXPECT_EQ(l.nodes[2].worker_pus, (std::vector<int>{32, 34}));
  EXPECT_EQ(l.nodes[3].worker_pus, (std::vector<int>{48}));
  EXPECT_EQ(l.num_workers(), 7);
}

TEST(ThreadLayout, FewerThreadsThanNodesLeavesLaterNodesOut) {
  ThreadLayoutOptions o;
  o.num_threads = 2;
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 2u);
  EXPECT_EQ(l.nodes[0].numa_node, 0);
  EXPECT_EQ(l.nodes[1].numa_node, 1);
}

TEST(ThreadLayout, AutoSmtTakesSiblingsOnlyBeyondTheCoreCount) {
  ThreadLayoutOptions o;
  o.num_threads = 10;
  o.numa_nodes = {2};
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 1u);
  EXPECT_EQ(l.nodes[0].worker_pus, (std::vector<int>{32, 34, 36, 38, 40, 42, 44, 46, 33, 35}));
}

TEST(ThreadLayout, ThreadsPerNodeOnChosenNodes) {
  ThreadLayoutOptions o;
  o.threads_per_node = 3;
  o.numa_nodes = {3, 0};
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 2u);  // topology order, whatever order they were named in
  EXPECT_EQ(l.nodes[0].worker_pus, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(l.nodes[1].worker_pus, (std::vector<int>{48, 50, 52}));
}

TEST(ThreadLayout, GpuFeederGetsACoreNoWorkerUses) {
  ThreadLayoutOptions o;
  o.reserve_gpu_feeder = true;
  o.smt = SmtUse::kYes;
  const Topology t = synthetic(kTwoSocket);
  const ThreadLayout l = layout_or_fail(t, o);
  // The last core of node 0 (core 7: PUs 14, 15) is the feeder's; neither of its PUs runs a worker.
  EXPECT_EQ(l.gpu_feeder_pu, 14);
  EXPECT_EQ(l.gpu_feeder_numa_node, 0);
  EXPECT_EQ(l.nodes[0].worker_pus.size(), 14u);
  for (const auto& n : l.nodes)
    for (int pu : n.worker_pus) EXPECT_NE(t.core_idx_of_pu(pu), 7) << "worker on the feeder's core: PU " << pu;
  EXPECT_EQ(l.num_workers(), 62);
}

TEST(ThreadLayout, GpuFeederWithAnExplicitListTakesTheFirstUntouchedCore) {
  ThreadLayoutOptions o;
  o.reserve_gpu_feeder = true;
  o.worker_pus = {0, 2, 5};  // cores 0, 1, 2
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  EXPECT_EQ(l.gpu_feeder_pu, 6);  // core 3
  ASSERT_EQ(l.nodes.size(), 1u);
  EXPECT_EQ(l.nodes[0].worker_pus, (std::vector<int>{0, 2, 5}));
}

TEST(ThreadLayout, ExplicitPuListIsGroupedByNodeKeepingItsOrder) {
  ThreadLayoutOptions o;
  o.worker_pus = {40, 3, 33, 0};
  const ThreadLayout l = layout_or_fail(synthetic(kTwoSocket), o);
  ASSERT_EQ(l.nodes.size(), 2u);
  EXPECT_EQ(l.nodes[0].numa_node, 0);
  EXPECT_EQ(l.nodes[0].worker_pus, (std::vector<int>{3, 0}));
  EXPECT_EQ(l.nodes[1].numa_node, 2);
  EXPECT_EQ(l.nodes[1].worker_pus, (std::vector<int>{40, 33}));
}

TEST(ThreadLayout, SingleNodeSingleCoreMachine) {
  const Topology t = synthetic("pack:1 core:1 pu:1");
  const ThreadLayout l = layout_or_fail(t, {});
  ASSERT_EQ(l.nodes.size(), 1u);
  EXPECT_EQ(l.nodes[0].worker_pus, std::vector<int>{0});
  ThreadLayoutOptions feeder;
  feeder.reserve_gpu_feeder = true;
  EXPECT_NE(layout_error(t, feeder).find("no core left for the GPU-feeding thread"), std::string::npos);
}

TEST(ThreadLayout, RejectsImpossibleRequestsNamingTheValue) {
  const Topology t = synthetic(kTwoSocket);
  ThreadLayoutOptions o;
  o.num_threads = 65;
  EXPECT_NE(layout_error(t, o).find("65 threads"), std::string::npos);
  o = {};
  o.num_threads = 33;
  o.smt = SmtUse::kNo;
  EXPECT_NE(layout_error(t, o).find("32 cores"), std::string::npos);
  o = {};
  o.worker_pus = {1, 64};
  EXPECT_NE(layout_error(t, o).find("PU 64 does not exist"), std::string::npos);
  o = {};
  o.worker_pus = {1, 1};
  EXPECT_NE(layout_error(t, o).find("PU 1 is listed twice"), std::string::npos);
  o = {};
  o.worker_pus = {0, 1};
  o.smt = SmtUse::kNo;
  EXPECT_NE(layout_error(t, o).find("SMT sibling"), std::string::npos);
  o = {};
  o.worker_pus = {20};
  o.numa_nodes = {0};
  EXPECT_NE(layout_error(t, o).find("PU 20 is on NUMA node 1"), std::string::npos);
  o = {};
  o.numa_nodes = {4};
  EXPECT_NE(layout_error(t, o).find("NUMA node 4 does not exist"), std::string::npos);
  o = {};
  o.numa_nodes = {1, 1};
  EXPECT_NE(layout_error(t, o).find("named twice"), std::string::npos);
  o = {};
  o.num_threads = 4;
  o.threads_per_node = 2;
  EXPECT_NE(layout_error(t, o).find("both"), std::string::npos);
  o = {};
  o.threads_per_node = 17;
  EXPECT_NE(layout_error(t, o).find("17 threads per node"), std::string::npos);
  o = {};
  o.num_threads = -1;
  EXPECT_NE(layout_error(t, o).find("-1"), std::string::npos);
  o = {};
  o.worker_pus = {0, 2};
  o.num_threads = 3;
  EXPECT_NE(layout_error(t, o).find("disagrees"), std::string::npos);
}

TEST(ExpertSharding, EqualExpertsSpreadEvenlyPerLayerAndInTotal) {
  // gpt-oss-20b: 24 layers × 32 experts of 13.2 MB over 3 nodes (an odd count that does not divide 32).
  const std::vector<int> nodes = {0, 1, 3};
  const uint64_t bytes = 13'200'000;
  auto s = shard_experts(24, 32, bytes, nodes);
  ASSERT_TRUE(s.has_value()) << s.error().to_string();
  ASSERT_EQ(s->numa_node_of.size(), 24u * 32u);
  for (uint32_t layer = 0; layer < 24; ++layer) {
    std::map<int, int> count;
    for (uint32_t e = 0; e < 32; ++e) count[s->numa_node_of[layer * 32 + e]]++;
    ASSERT_EQ(count.size(), 3u) << "layer " << layer;
    for (const auto& [node, n] : count) {
      EXPECT_TRUE(node == 0 || node == 1 || node == 3);
      EXPECT_TRUE(n == 10 || n == 11) << "layer " << layer << " node " << node << ": " << n;
    }
  }
  const auto [lo, hi] = std::minmax_element(s->bytes_per_node.begin(), s->bytes_per_node.end());
  EXPECT_LE(*hi - *lo, bytes);
  EXPECT_EQ(s->bytes_per_node[0] + s->bytes_per_node[1] + s->bytes_per_node[2], 24u * 32u * bytes);
}

TEST(ExpertSharding, HotExpertsOfALayerGoToDifferentNodes) {
  // One layer, 8 experts, 2 nodes; experts 5 and 6 take most of the traffic.
  std::vector<CpuExpert> experts;
  const double p[8] = {0.02, 0.02, 0.02, 0.02, 0.02, 0.4, 0.4, 0.1};
  for (uint32_t e = 0; e < 8; ++e) experts.push_back({0, e, 1000, p[e]});
  const std::vector<int> nodes = {0, 1};
  auto s = shard_experts(experts, nodes);
  ASSERT_TRUE(s.has_value()) << s.error().to_string();
  EXPECT_NE(s->numa_node_of[5], s->numa_node_of[6]);
  // Greedy by traffic (bytes · p): 400 | 400, then 100 to node 0, then the five 20s to node 1: 500 | 500.
  EXPECT_NEAR(s->traffic_per_node[0], 500.0, 1e-9);
  EXPECT_NEAR(s->traffic_per_node[1], 500.0, 1e-9);
}

TEST(ExpertSharding, OneNodeGetsEverything) {
  const std::vector<int> nodes = {2};
  auto s = shard_experts(2, 5, 100, nodes);
  ASSERT_TRUE(s.has_value());
  for (int n : s->numa_node_of) EXPECT_EQ(n, 2);
  EXPECT_EQ(s->bytes_per_node[0], 1000u);
}

TEST(ExpertSharding, OnlyTheGivenCpuExpertsArePlaced) {
  // Layer 0 keeps experts 1, 4, 7 on the CPU (the others are on the GPU), layer 1 keeps expert 0.
  const std::vector<CpuExpert> experts = {{0, 1, 10}, {1, 0, 10}, {0, 4, 10}, {0, 7, 10}};
  const std::vector<int> nodes = {0, 1};
  auto s = shard_experts(experts, nodes);
  ASSERT_TRUE(s.has_value());
  ASSERT_EQ(s->numa_node_of.size(), 4u);
  EXPECT_EQ(s->bytes_per_node[0] + s->bytes_per_node[1], 40u);
  EXPECT_EQ(s->bytes_per_node[0], 20u);
}

TEST(ExpertSharding, RejectsBadInput) {
  const std::vector<int> no_nodes;
  EXPECT_FALSE(shard_experts(1, 4, 10, no_nodes).has_value());
  const std::vector<int> twice = {1, 1};
  EXPECT_FALSE(shard_experts(1, 4, 10, twice).has_value());
  const std::vector<int> nodes = {0};
  const std::vector<CpuExpert> negative = {{0, 0, 10, -0.5}};
  auto s = shard_experts(negative, nodes);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message.find("-0.5"), std::string::npos);
  const std::vector<CpuExpert> duplicate = {{0, 3, 10}, {0, 3, 10}};
  EXPECT_FALSE(shard_experts(duplicate, nodes).has_value());
}

}  // namespace
}  // namespace hetmoe::placement
