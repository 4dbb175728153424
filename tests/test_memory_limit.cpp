// profiler/memory_limit.h against fake cgroup file systems (a directory tree written here) and /proc/PID/cgroup
// texts: v2 and v1, limits on an ancestor rather than the process's own cgroup, "max" and v1's unlimited value,
// inactive page cache counted as room, a container's namespace (the process path absent under the mount), and
// malformed files ignored rather than trusted.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "profiler/memory_limit.h"

namespace hetmoe::profiler {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kGiB = uint64_t{1} << 30;

class FakeCgroupRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("hetmoe-cgroup-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const std::string& rel, const std::string& text) {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::string root() const { return root_.string(); }
  fs::path root_;
};

TEST_F(FakeCgroupRoot, V2LimitOfTheProcessCgroupLessItsUsage) {
  write("cgroup.controllers", "cpuset cpu io memory pids\n");
  write("user/run/memory.max", std::to_string(10 * kGiB) + "\n");
  write("user/run/memory.high", "max\n");
  write("user/run/memory.current", std::to_string(3 * kGiB) + "\n");
  write("user/run/memory.stat", "anon 1000\nfile 2000\ninactive_file " + std::to_string(kGiB) + "\nactive_file 5\n");
  write("user/memory.max", "max\n");
  write("user/memory.current", std::to_string(4 * kGiB) + "\n");
  auto c = read_cgroup_memory("0::/user/run\n", root());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->version, 2);
  EXPECT_EQ(c->dir, "/user/run");
  EXPECT_EQ(c->limit_bytes, 10 * kGiB);
  EXPECT_EQ(c->room_bytes(), 8 * kGiB);  // 10 − (3 − 1 reclaimable)
}

TEST_F(FakeCgroupRoot, V2TighterAncestorWinsAndMemoryHighCounts) {
  write("cgroup.controllers", "memory\n");
  write("slice/memory.max", std::to_string(64 * kGiB) + "\n");
  write("slice/memory.high", std::to_string(12 * kGiB) + "\n");  // throttled from here: the effective limit
  write("slice/memory.current", std::to_string(6 * kGiB) + "\n");
  write("slice/app/memory.max", std::to_string(14 * kGiB) + "\n");
  write("slice/app/memory.current", std::to_string(1 * kGiB) + "\n");
  auto c = read_cgroup_memory("0::/slice/app\n", root());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->dir, "/slice");
  EXPECT_EQ(c->limit_bytes, 12 * kGiB);
  EXPECT_EQ(c->room_bytes(), 6 * kGiB);
}

TEST_F(FakeCgroupRoot, V2AllMaxIsNoLimit) {
  write("cgroup.controllers", "cpu memory\n");
  write("a/memory.max", "max\n");
  write("a/memory.current", "12345\n");
  EXPECT_FALSE(read_cgroup_memory("0::/a\n", root()));
}

TEST_F(FakeCgroupRoot, V1MemoryLineAmongOtherControllers) {
  write("memory/memory.limit_in_bytes", "9223372036854771712\n");  // the root: unlimited
  write("memory/memory.usage_in_bytes", std::to_string(20 * kGiB) + "\n");
  write("memory/jobs/x/memory.limit_in_bytes", std::to_string(12 * kGiB) + "\n");
  write("memory/jobs/x/memory.usage_in_bytes", std::to_string(2 * kGiB) + "\n");
  write("memory/jobs/x/memory.stat", "cache 100\ninactive_file 7\ntotal_inactive_file " + std::to_string(kGiB) + "\n");
  const char* text = "9:name=systemd:/\n5:cpu,cpuacct:/other\n4:memory:/jobs/x\n0::/\n";
  auto c = read_cgroup_memory(text, root());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->version, 1);
  EXPECT_EQ(c->dir, "/jobs/x");
  EXPECT_EQ(c->room_bytes(), 11 * kGiB);  // total_ (hierarchical) inactive file, not the cgroup's own
}

TEST_F(FakeCgroupRoot, ContainerNamespaceFallsBackToTheMountRoot) {
  // Inside a container /proc/self/cgroup may name the host's path while the mount shows the container's own cgroup.
  write("memory/memory.limit_in_bytes", std::to_string(10 * kGiB) + "\n");
  write("memory/memory.usage_in_bytes", std::to_string(kGiB) + "\n");
  auto c = read_cgroup_memory("4:memory:/docker/0123abcd\n", root());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->dir, "/");
  EXPECT_EQ(c->room_bytes(), 9 * kGiB);
}

TEST_F(FakeCgroupRoot, MalformedOrMissingFilesAreNoLimit) {
  write("memory/a/memory.limit_in_bytes", "lots\n");
  write("memory/a/memory.usage_in_bytes", "1\n");
  write("memory/b/memory.limit_in_bytes", "100\n");  // no usage file: not trusted
  EXPECT_FALSE(read_cgroup_memory("4:memory:/a\n", root()));
  EXPECT_FALSE(read_cgroup_memory("4:memory:/b\n", root()));
  EXPECT_FALSE(read_cgroup_memory("", root()));
  EXPECT_FALSE(read_cgroup_memory("garbage without colons", root()));
}

TEST_F(FakeCgroupRoot, UsageOverTheLimitLeavesNoRoom) {
  write("memory/a/memory.limit_in_bytes", std::to_string(kGiB) + "\n");
  write("memory/a/memory.usage_in_bytes", std::to_string(2 * kGiB) + "\n");
  auto c = read_cgroup_memory("4:memory:/a\n", root());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->room_bytes(), 0u);
}

TEST(MemoryRoom, IsTheSmallerOfMemAvailableAndTheCgroupRoom) {
  MemoryRoom r;
  r.mem_available_bytes = 20 * kGiB;
  EXPECT_EQ(r.bytes(), 20 * kGiB);
  r.cgroup = CgroupMemory{1, "/x", 10 * kGiB, 2 * kGiB, 0};
  EXPECT_EQ(r.bytes(), 8 * kGiB);
  r.mem_available_bytes = 5 * kGiB;
  EXPECT_EQ(r.bytes(), 5 * kGiB);
  EXPECT_NE(r.describe().find("cgroup v1 /x"), std::string::npos) << r.describe();
}

TEST(FittedBufferBytes, AQuarterOfTheRoomAtMostAndNoneBelowTheMinimum) {
  const uint64_t mib = uint64_t{1} << 20;
  EXPECT_EQ(fitted_buffer_bytes(kGiB, 16 * kGiB, 64 * mib), kGiB);        // plenty of room: unchanged
  EXPECT_EQ(fitted_buffer_bytes(kGiB, 2 * kGiB, 64 * mib), 512 * mib);   // a quarter of the room
  EXPECT_EQ(fitted_buffer_bytes(kGiB, 255 * mib, 64 * mib), 0u);         // 63.75 MiB < 64: skipped
  EXPECT_EQ(fitted_buffer_bytes(kGiB, 0, 64 * mib), kGiB);               // room unknown
}

}  // namespace
}  // namespace hetmoe::profiler
