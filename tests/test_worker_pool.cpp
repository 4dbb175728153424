// Real pinning on this machine: threads inside a pool's arena run on the PU of their arena slot, and only there.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include <tbb/parallel_for.h>

#include "cpu_kernels/kernels.h"
#include "placement/topology.h"
#include "runtime/exec/forward_cpu.h"
#include "runtime/model/model.h"
#include "runtime/exec/worker_pool.h"

namespace hetmoe {
namespace {

/// The CPUs this thread may run on.
std::set<int> thread_affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::set<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.insert(c);
  return cpus;
}

struct SlotReport {
  int slot = -1;
  int cpu = -1;
  std::set<int> affinity;
  std::string name;
};

/// Runs enough parallel work in the arena that every slot takes part, and records what each thread saw.
std::vector<SlotReport> run_and_report(tbb::task_arena& arena) {
  std::mutex mu;
  std::vector<SlotReport> reports;
  std::atomic<int> arrived{0};
  const int n = arena.max_concurrency();
  arena.execute([&] {
    tbb::parallel_for(0, n, 1, [&](int) {
      // Hold every chunk until all n have started, so the n chunks run on n distinct threads.
      arrived.fetch_add(1);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (arrived.load() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
      SlotReport r;
      r.slot = tbb::this_task_arena::current_thread_index();
      r.cpu = sched_getcpu();
      r.affinity = thread_affinity();
      char name[16] = {};
      pthread_getname_np(pthread_self(), name, sizeof name);
      r.name = name;
      std::lock_guard lock(mu);
      reports.push_back(r);
    }, tbb::simple_partitioner());
  });
  return reports;
}

std::vector<int> live_pus() {
  auto t = placement::topology_from_machine();
  std::vector<int> pus;
  if (t)
    for (const auto& c : t->cores) pus.insert(pus.end(), c.pu_os.begin(), c.pu_os.end());
  return pus;
}

TEST(WorkerPool, SingleSlotArenaRunsTheCallingThreadOnItsPuAndGivesItBack) {
  const std::vector<int> pus = live_pus();
  ASSERT_FALSE(pus.empty());
  const int pu = pus.back();  // the last PU, so pinning is visible where the caller started on PU 0
  placement::ThreadLayout layout;
  layout.nodes.push_back({0, {pu}});
  auto pool = WorkerPool::create(layout);
  ASSERT_TRUE(pool.has_value()) << pool.error().to_string();
  const std::set<int> before = thread_affinity();
  const std::vector<SlotReport> reports = run_and_report((*pool)->arena(0));
  // Pinned inside the arena only: back to its own affinity afterwards, so threads it starts are not confined.
  EXPECT_EQ(thread_affinity(), before);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].slot, 0);
  EXPECT_EQ(reports[0].cpu, pu);
  EXPECT_EQ(reports[0].affinity, std::set<int>{pu});
  EXPECT_EQ((*pool)->num_pin_failures(), 0u);
}

TEST(WorkerPool, EveryWorkerRunsOnlyOnTheCoreOfItsSlot) {
  std::vector<int> pus = live_pus();
  if (pus.size() < 2) GTEST_SKIP() << "one PU: no worker besides the calling thread";
  pus.resize(std::min<size_t>(pus.size(), 4));
  std::reverse(pus.begin(), pus.end());  // slot 0 on the highest PU: not the order threads would land by default
  placement::ThreadLayout layout;
  layout.nodes.push_back({0, pus});
  auto pool = WorkerPool::create(layout);
  ASSERT_TRUE(pool.has_value()) << pool.error().to_string();
  const std::vector<SlotReport> reports = run_and_report((*pool)->arena(0));
  ASSERT_EQ(reports.size(), pus.size());
  std::set<int> slots;
  for (const SlotReport& r : reports) {
    ASSERT_GE(r.slot, 0);
    ASSERT_LT(r.slot, static_cast<int>(pus.size()));
    EXPECT_TRUE(slots.insert(r.slot).second) << "slot " << r.slot << " twice";
    const int pu = pus[static_cast<size_t>(r.slot)];
    EXPECT_EQ(r.cpu, pu) << "slot " << r.slot;
    EXPECT_EQ(r.affinity, std::set<int>{pu}) << "slot " << r.slot;
    if (r.slot > 0) {
      EXPECT_EQ(r.name, "hetmoe-n0-w" + std::to_string(r.slot));
    }
  }
  EXPECT_EQ((*pool)->num_pin_failures(), 0u);
}

TEST(WorkerPool, ForMachineHonoursTheThreadCount) {
  const std::vector<int> pus = live_pus();
  auto pool = WorkerPool::create_for_machine(1, {}, /*one_arena=*/true);
  ASSERT_TRUE(pool.has_value()) << pool.error().to_string();
  EXPECT_EQ((*pool)->layout().num_workers(), 1);
  EXPECT_EQ((*pool)->arena(0).max_concurrency(), 1);
  auto all = WorkerPool::create_for_machine(0, {}, /*one_arena=*/true);
  ASSERT_TRUE(all.has_value()) << all.error().to_string();
  int cores = 0;
  if (auto t = placement::topology_from_machine()) {
    cores = static_cast<int>(t->cores.size());
  }
  EXPECT_EQ((*all)->layout().num_workers(), cores);
  EXPECT_EQ((*all)->num_arenas(), 1);
}

TEST(WorkerPool, MoreThreadsThanPusIsAnError) {
  const int num_pus = static_cast<int>(live_pus().size());
  auto pool = WorkerPool::create_for_machine(num_pus + 1, {}, true);
  ASSERT_FALSE(pool.has_value());
  EXPECT_EQ(pool.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(pool.error().message.find(std::to_string(num_pus + 1) + " threads"), std::string::npos)
      << pool.error().message;
}

TEST(WorkerPool, RejectsAPuThatDoesNotExistAndAnEmptyLayout) {
  placement::ThreadLayout layout;
  layout.nodes.push_back({0, {1 << 20}});
  auto pool = WorkerPool::create(layout);
  ASSERT_FALSE(pool.has_value());
  EXPECT_NE(pool.error().message.find(std::to_string(1 << 20)), std::string::npos);
  EXPECT_FALSE(WorkerPool::create(placement::ThreadLayout{}).has_value());
}

const Model& tiny() {
  static const Model m = std::move(*Model::load(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf"));
  return m;
}

/// Teacher-forced logits of the first 40 fixture-like tokens, in one 24-token batch and then one at a time.
std::vector<float> run_tokens(CpuForward& f) {
  const size_t vocab = tiny().hparams.vocab_size;
  std::vector<int32_t> ids(40);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 2654435761u) % vocab);
  std::vector<float> out((1 + ids.size() - 24) * vocab);
  EXPECT_TRUE(f.forward_batch(std::span<const int32_t>(ids).subspan(0, 24), {out.data(), vocab}).has_value());
  for (size_t i = 24; i < ids.size(); ++i)
    EXPECT_TRUE(f.forward(ids[i], {&out[(1 + i - 24) * vocab], vocab}).has_value());
  return out;
}

// Two "nodes" of one PU each (both on this machine's node 0): expert jobs routed to the second node's arena give
// exactly the logits of one arena (each output row is computed by the same kernel call either way).
TEST(WorkerPool, ExpertJobsRoutedToNodeArenasGiveTheSameLogits) {
  const std::vector<int> pus = live_pus();
  if (pus.size() < 2) GTEST_SKIP() << "needs 2 PUs";
  const Model& model = tiny();
  const cpu::KernelTable& k = cpu::kernel_table(cpu::best_isa());
  placement::ThreadLayout one;
  one.nodes.push_back({0, {pus[0], pus[1]}});
  auto single_pool = WorkerPool::create(one);
  ASSERT_TRUE(single_pool.has_value()) << single_pool.error().to_string();
  CpuForwardOptions o;
  o.context_length = 64;
  o.arena = &(*single_pool)->arena(0);
  auto single = CpuForward::create(model, o, k);
  ASSERT_TRUE(single.has_value()) << single.error().to_string();
  const std::vector<float> expected = run_tokens(**single);

  placement::ThreadLayout two;
  two.nodes.push_back({0, {pus[0]}});
  two.nodes.push_back({0, {pus[1]}});
  auto pool = WorkerPool::create(two);
  ASSERT_TRUE(pool.has_value()) << pool.error().to_string();
  const ModelHparams& hp = model.hparams;
  for (int pattern = 0; pattern < 3; ++pattern) {
    CpuForwardOptions r = o;
    r.arena = &(*pool)->arena(0);
    r.node_arenas = {&(*pool)->arena(0), &(*pool)->arena(1)};
    r.expert_node.resize(static_cast<size_t>(hp.num_layers) * hp.num_experts);
    for (size_t i = 0; i < r.expert_node.size(); ++i)  // alternating, all on node 1, all on node 0
      r.expert_node[i] = static_cast<uint8_t>(pattern == 0 ? i % 2 : pattern == 1 ? 1 : 0);
    auto routed = CpuForward::create(model, r, k);
    ASSERT_TRUE(routed.has_value()) << routed.error().to_string();
    const uint64_t entries = (*pool)->num_thread_entries(1);
    EXPECT_EQ(run_tokens(**routed), expected) << "pattern " << pattern;
    if (pattern < 2) {  // (pattern 2 may still see a late worker of the previous one arrive)
      EXPECT_GT((*pool)->num_thread_entries(1), entries) << "no expert job reached node 1's arena";
    }
  }
  EXPECT_EQ((*pool)->num_pin_failures(), 0u);
}

TEST(WorkerPool, BadExpertNodeMapIsRefused) {
  const Model& model = tiny();
  placement::ThreadLayout one;
  one.nodes.push_back({0, {live_pus()[0]}});
  auto pool = WorkerPool::create(one);
  ASSERT_TRUE(pool.has_value());
  CpuForwardOptions o;
  o.context_length = 64;
  o.arena = &(*pool)->arena(0);
  o.node_arenas = {o.arena, o.arena};
  o.expert_node.assign(3, 0);  // too short
  auto f = CpuForward::create(model, o, cpu::kernel_table(cpu::Isa::kScalar));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message.find("expert_node has 3 entries"), std::string::npos);
  o.expert_node.assign(static_cast<size_t>(model.hparams.num_layers) * model.hparams.num_experts, 2);
  EXPECT_FALSE(CpuForward::create(model, o, cpu::kernel_table(cpu::Isa::kScalar)).has_value());
}

TEST(WorkerPool, ExpertsOfOneNodeAllGoThereAndBindOrSayNot) {
  const Model& model = tiny();
  placement::ThreadLayout one;
  one.nodes.push_back({0, {live_pus()[0]}});
  uint64_t bound = 0;
  auto slots = place_experts_on_nodes(model, one, /*bind_memory=*/true, &bound);
  ASSERT_TRUE(slots.has_value()) << slots.error().to_string();
  ASSERT_EQ(slots->size(), static_cast<size_t>(model.hparams.num_layers) * model.hparams.num_experts);
  for (uint8_t s : *slots) EXPECT_EQ(s, 0);
  placement::ThreadLayout spanning;
  spanning.nodes.push_back({-1, {live_pus()[0]}});
  EXPECT_FALSE(place_experts_on_nodes(model, spanning, false).has_value());
}

}  // namespace
}  // namespace hetmoe
