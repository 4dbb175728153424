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

#include "placement/topology.h"
#include "runtime/worker_pool.h"

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

TEST(WorkerPool, SingleSlotArenaRunsTheCallingThreadOnItsPu) {
  const std::vector<int> pus = live_pus();
  ASSERT_FALSE(pus.empty());
  const int pu = pus.back();  // the last PU, so pinning is visible where the caller started on PU 0
  placement::ThreadLayout layout;
  layout.nodes.push_back({0, {pu}});
  auto pool = WorkerPool::create(layout);
  ASSERT_TRUE(pool.has_value()) << pool.error().to_string();
  const std::vector<SlotReport> reports = run_and_report((*pool)->arena(0));
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

}  // namespace
}  // namespace hetmoe
