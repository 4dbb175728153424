// Hardware profile: JSON round trip, the cache (hit, foreign, stale, forced, unreadable) with injected measurements
// (the real ones take seconds), the thread counts probed, the cache directory, and `hetmoe probe` reading a cache.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cli_runner.h"
#include "cpu_kernels/kernels.h"
#include "placement/hardware_profile.h"
#include "runtime/base/huge_pages.h"

namespace hetmoe::placement {
namespace {

namespace fs = std::filesystem;

/// Measurements that return made-up figures and count how often they ran.
struct FakeMeasurers {
  int num_bandwidth_calls = 0;
  int num_gemv_calls = 0;
  ProbeMeasurers get() {
    ProbeMeasurers m;
    m.read_bandwidth = [this](const Topology& t, int node_idx, int threads) -> Expected<double> {
      ++num_bandwidth_calls;
      return 1e9 * (t.numa_nodes[static_cast<size_t>(node_idx)].os_index + 1) * threads;
    };
    m.expert_gemv = [this](const Topology&, int, int threads, uint64_t* ws) -> Expected<GemvPoint> {
      ++num_gemv_calls;
      *ws = 123456;
      return GemvPoint{threads, 2e9 * threads, 150.0 * threads};
    };
    m.gpu = []() -> Expected<GpuFigures> { return make_error(ErrorCode::kUnsupported, "no GPU in this test"); };
    return m;
  }
};

class HardwareProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hetmoe-profile-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    auto t = topology_from_synthetic("pack:2 numa:2 core:4 pu:2");
    ASSERT_TRUE(t.has_value());
    topology_ = *t;
    key_ = MachineKey{"host-a", "Test CPU 9000", topology_.summary(), "0.1.0", "avx2"};
    options_.cache_dir = dir_;
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_cache(const HardwareProfile& p) {
    fs::create_directories(dir_);
    std::ofstream(profile_cache_path(dir_, key_)) << profile_to_json(p);
  }

  fs::path dir_;
  Topology topology_;
  MachineKey key_;
  ProbeOptions options_;
};

// The probes' working sets (runtime/base/huge_pages.h): 2 MiB-aligned, the size asked for (not the rounded
// allocation), writable to the last byte; nothing for 0 bytes.
TEST(HugePageBuffer, IsHugePageAlignedAndTheSizeAskedFor) {
  HugePageBuffer b(3 * 1000 * 1000 + 7);
  ASSERT_NE(b.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % HugePageBuffer::kHugePageBytes, 0u);
  EXPECT_EQ(b.size(), 3u * 1000 * 1000 + 7);
  b.data()[b.size() - 1] = 42;
  EXPECT_EQ(b.data()[b.size() - 1], 42);
  HugePageBuffer none(0);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.data(), nullptr);
}

TEST(ProbeThreadCounts, PowersOfTwoThenTheCoreCount) {
  EXPECT_EQ(probe_thread_counts(1), (std::vector<int>{1}));
  EXPECT_EQ(probe_thread_counts(2), (std::vector<int>{1, 2}));
  EXPECT_EQ(probe_thread_counts(8), (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(probe_thread_counts(12), (std::vector<int>{1, 2, 4, 8, 12}));
  EXPECT_TRUE(probe_thread_counts(0).empty());
}

TEST_F(HardwareProfileTest, MeasuresEveryNodeAtEveryThreadCount) {
  FakeMeasurers fake;
  auto p = measure_profile(topology_, key_, fake.get());
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  ASSERT_EQ(p->node_read_bandwidth.size(), 4u);
  for (int n = 0; n < 4; ++n) {
    EXPECT_EQ(p->node_read_bandwidth[static_cast<size_t>(n)].numa_node, n);
    const auto& read = p->node_read_bandwidth[static_cast<size_t>(n)].read;
    ASSERT_EQ(read.size(), 3u);  // 1, 2, 4 threads on 4 cores
    EXPECT_EQ(read[2].num_threads, 4);
    EXPECT_DOUBLE_EQ(read[2].bytes_per_s, 1e9 * (n + 1) * 4);
  }
  ASSERT_EQ(p->expert_gemv.size(), 3u);
  EXPECT_EQ(p->gemv_working_set_bytes, 123456u);
  EXPECT_EQ(p->num_cores, 16);
  EXPECT_EQ(p->num_pus, 32);
  EXPECT_FALSE(p->gpu.has_value());
  EXPECT_NE(p->gpu_note.find("no GPU in this test"), std::string::npos);
  EXPECT_EQ(fake.num_bandwidth_calls, 12);
  EXPECT_EQ(fake.num_gemv_calls, 3);
}

TEST_F(HardwareProfileTest, JsonRoundTripKeepsEveryField) {
  FakeMeasurers fake;
  auto p = measure_profile(topology_, key_, fake.get());
  ASSERT_TRUE(p.has_value());
  p->gpu = GpuFigures{0, "Test GPU", 3e11, std::nullopt, 2.5e10, 2.4e10, 8e-6, 9e-6};
  const std::string text = profile_to_json(*p);
  auto back = profile_from_json(text, "test");
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(back->key, key_);
  EXPECT_EQ(profile_to_json(*back), text);
  ASSERT_TRUE(back->gpu.has_value());
  EXPECT_EQ(back->gpu->name, "Test GPU");
  EXPECT_FALSE(back->gpu->expert_gemv_bytes_per_s.has_value());
  EXPECT_DOUBLE_EQ(back->gpu->h2d_latency_s, 8e-6);
}

TEST_F(HardwareProfileTest, MalformedJsonIsAFormatErrorNamingTheSource) {
  for (const std::string& text : {std::string("not json"), std::string("{\"format_version\": 1}"),
                                 std::string("{\"format_version\": \"one\"}")}) {
    auto p = profile_from_json(text, "cache.json");
    ASSERT_FALSE(p.has_value()) << text;
    EXPECT_EQ(p.error().code, ErrorCode::kFormat);
    EXPECT_NE(p.error().message.find("cache.json"), std::string::npos);
  }
}

TEST_F(HardwareProfileTest, SecondProbeUsesTheCacheWithoutMeasuring) {
  FakeMeasurers fake;
  auto first = probe_hardware(topology_, key_, options_, fake.get());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_FALSE(first->from_cache);
  EXPECT_EQ(first->reason, "no cached profile");
  EXPECT_TRUE(first->cache_write_error.empty()) << first->cache_write_error;
  EXPECT_TRUE(fs::exists(first->cache_path));
  EXPECT_EQ(first->cache_path, profile_cache_path(dir_, key_));
  const int calls = fake.num_bandwidth_calls;
  auto second = probe_hardware(topology_, key_, options_, fake.get());
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->from_cache);
  EXPECT_EQ(fake.num_bandwidth_calls, calls);
  EXPECT_EQ(profile_to_json(second->profile), profile_to_json(first->profile));
  options_.force = true;
  auto forced = probe_hardware(topology_, key_, options_, fake.get());
  ASSERT_TRUE(forced.has_value());
  EXPECT_FALSE(forced->from_cache);
  EXPECT_EQ(forced->reason, "--force");
  EXPECT_GT(fake.num_bandwidth_calls, calls);
}

TEST_F(HardwareProfileTest, ForeignAndStaleCachesAreMeasuredAgainWithTheReason) {
  FakeMeasurers fake;
  auto base = measure_profile(topology_, key_, fake.get());
  ASSERT_TRUE(base.has_value());
  struct Case {
    std::function<void(HardwareProfile&)> modify;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {[](HardwareProfile& p) { p.key.hostname = "host-b"; }, "foreign: measured on host \"host-b\""},
      {[](HardwareProfile& p) { p.key.cpu_model = "Old CPU"; }, "stale: CPU \"Old CPU\" then"},
      {[](HardwareProfile& p) { p.key.topology_summary = "1 package"; }, "stale: topology \"1 package\" then"},
      {[](HardwareProfile& p) { p.key.hetmoe_version = "0.0.9"; }, "stale: hetmoe 0.0.9 then, 0.1.0 now"},
      {[](HardwareProfile& p) { p.key.cpu_isa = "scalar"; }, "stale: kernels scalar then, avx2 now"},
      {[](HardwareProfile& p) { p.format_version = kHardwareProfileFormatVersion + 1; }, "stale: format version"},
  };
  for (const Case& c : cases) {
    HardwareProfile modified = *base;
    c.modify(modified);
    EXPECT_FALSE(check_cached_profile(modified, key_).usable);
    write_cache(modified);
    auto r = probe_hardware(topology_, key_, options_, fake.get());
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(r->from_cache);
    EXPECT_EQ(r->reason.rfind(c.reason, 0), 0u) << "reason: " << r->reason << "\nexpected: " << c.reason;
    EXPECT_EQ(r->profile.key, key_);  // measured again for this machine, and cached as such
    EXPECT_TRUE(probe_hardware(topology_, key_, options_, fake.get())->from_cache);
  }
  EXPECT_TRUE(check_cached_profile(*base, key_).usable);
}

TEST_F(HardwareProfileTest, UnreadableCacheIsMeasuredOver) {
  fs::create_directories(dir_);
  std::ofstream(profile_cache_path(dir_, key_)) << "{ truncated";
  FakeMeasurers fake;
  auto r = probe_hardware(topology_, key_, options_, fake.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->from_cache);
  EXPECT_EQ(r->reason.rfind("unreadable cache", 0), 0u) << r->reason;
}

TEST_F(HardwareProfileTest, FailingMeasurementIsAnError) {
  FakeMeasurers fake;
  ProbeMeasurers m = fake.get();
  m.read_bandwidth = [](const Topology&, int, int) -> Expected<double> {
    return make_error(ErrorCode::kIo, "cannot allocate");
  };
  auto r = probe_hardware(topology_, key_, options_, m);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message, "cannot allocate");
  EXPECT_FALSE(fs::exists(profile_cache_path(dir_, key_)));
}

TEST(HardwareProfileCache, DirectoryFollowsXdgCacheHomeThenHome) {
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old_xdg ? old_xdg : "";
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
  EXPECT_EQ(default_cache_dir(), fs::path("/tmp/xdg-test/hetmoe"));
  ::unsetenv("XDG_CACHE_HOME");
  if (const char* home = std::getenv("HOME"); home && *home) {
    EXPECT_EQ(default_cache_dir(), fs::path(home) / ".cache" / "hetmoe");
  }
  if (old_xdg) ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
}

TEST(HardwareProfileCache, FileNameDependsOnHostAndCpuOnly) {
  MachineKey a{"host-a", "CPU", "topology 1", "0.1.0", "avx2"};
  MachineKey b = a;
  b.topology_summary = "topology 2";
  b.hetmoe_version = "0.2.0";
  EXPECT_EQ(a.file_hash(), b.file_hash());  // same file: a change is found and reported as stale
  b.hostname = "host-b";
  EXPECT_NE(a.file_hash(), b.file_hash());
  EXPECT_EQ(a.file_hash().size(), 16u);
}

class ProbeCli : public test::CliTest {};

TEST_F(ProbeCli, PrintsTheCachedProfileOfThisMachine) {
  // A cache with made-up figures under this machine's key: `hetmoe probe` must print it without measuring.
  auto topology = topology_from_machine();
  ASSERT_TRUE(topology.has_value());
  auto isa = cpu::selected_isa();
  ASSERT_TRUE(isa.has_value());
  HardwareProfile p;
  p.key = machine_key(*topology, cpu::isa_name(*isa));
  p.measured_at = "2026-01-02T03:04:05Z";
  p.node_read_bandwidth = {{0, {{1, 12.3e9}}}};
  p.expert_gemv = {{1, 9.87e9, 747}};
  p.gpu_note = "made up";
  std::ofstream(profile_cache_path(dir_, p.key)) << profile_to_json(p);
  const auto r = run("probe --cache-dir " + dir_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cached 2026-01-02T03:04:05Z"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 → 12.3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("9.9 GB/s of weights, 747 experts/s"), std::string::npos) << r.out;
  const auto j = run("probe --json --cache-dir " + dir_.string());
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto back = profile_from_json(j.out, "stdout");
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(back->key, p.key);
}

}  // namespace
}  // namespace hetmoe::placement
