// NUMA binding of weight ranges: what a one-node machine can show (binding to node 0 applies or is reported as not
// applicable; a node that does not exist is an error) and, on machines with more nodes, that pages move.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "placement/numa_memory.h"

namespace hetmoe::placement {
namespace {

struct Mapping {
  explicit Mapping(size_t n) : num_bytes(n) {
    ptr = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  ~Mapping() {
    if (ptr != MAP_FAILED) ::munmap(ptr, num_bytes);
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(ptr); }
  void* ptr;
  size_t num_bytes;
};

TEST(NumaMemory, BindingTouchedPagesToNodeZeroAppliesOrSaysWhyNot) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  Mapping m(16 * page);
  ASSERT_NE(m.ptr, MAP_FAILED);
  std::memset(m.ptr, 1, m.num_bytes);
  auto r = bind_to_numa_node(m.ptr, m.num_bytes, 0);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  if (!r->applied) {
    EXPECT_FALSE(r->reason.empty());
    GTEST_SKIP() << "not applied here: " << r->reason;
  }
  EXPECT_EQ(r->num_bytes, m.num_bytes);
  EXPECT_EQ(numa_node_of_page(m.bytes() + 3 * page), 0);
  EXPECT_EQ(m.bytes()[5 * page], 1);  // contents unchanged
}

TEST(NumaMemory, UnalignedRangeBindsOnlyItsWholePages) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  Mapping m(8 * page);
  ASSERT_NE(m.ptr, MAP_FAILED);
  // From the middle of page 1 to the middle of page 5: whole pages 2, 3, 4.
  auto r = bind_to_numa_node(m.bytes() + page + page / 2, 4 * page, 0, NumaPolicy::kPreferred);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  if (r->applied) {
    EXPECT_EQ(r->num_bytes, 3 * page);
  }
  // Less than one whole page: nothing to do, and it says so.
  auto small = bind_to_numa_node(m.bytes() + page / 2, page, 0);
  ASSERT_TRUE(small.has_value());
  EXPECT_FALSE(small->applied);
  EXPECT_FALSE(small->reason.empty());
}

TEST(NumaMemory, ReadOnlyFileMappingLikeTheModelIsBoundOrReportedNeverAnError) {
  const std::string path = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << path;
  const size_t size = static_cast<size_t>(::lseek(fd, 0, SEEK_END));
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < size; i += 4096) sink = sink ^ static_cast<const uint8_t*>(p)[i];  // fault the pages in
  auto r = bind_to_numa_node(p, size, 0);
  ::munmap(p, size);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  if (!r->applied) {
    EXPECT_FALSE(r->reason.empty());
  }
}

TEST(NumaMemory, NodeThatDoesNotExistIsAnError) {
  std::vector<uint8_t> buf(1 << 16);
  for (int node : {-1, numa_num_nodes(), 1 << 20}) {
    auto r = bind_to_numa_node(buf.data(), buf.size(), node);
    ASSERT_FALSE(r.has_value()) << "node " << node;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(std::to_string(node)), std::string::npos);
    EXPECT_FALSE(copy_to_numa_node(buf.data(), buf.size(), node).has_value());
  }
  EXPECT_FALSE(bind_to_numa_node(nullptr, 4096, 0).has_value());
}

TEST(NumaMemory, CopyToNodeHoldsTheSameBytesOnThatNode) {
  std::vector<uint8_t> src(3 * 4096 + 17);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 31 + 7);
  auto copy = copy_to_numa_node(src.data(), src.size(), 0);
  ASSERT_TRUE(copy.has_value()) << copy.error().to_string();
  EXPECT_EQ(std::memcmp(copy->get(), src.data(), src.size()), 0);
  const int node = numa_node_of_page(copy->get());
  EXPECT_TRUE(node == 0 || node == -1) << node;  // -1: the kernel does not say
  EXPECT_FALSE(copy_to_numa_node(src.data(), 0, 0).has_value());
}

TEST(NumaMemory, PagesMoveToAnotherNodeWhereThereIsOne) {
  if (numa_num_nodes() < 2) GTEST_SKIP() << "one NUMA node";
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  Mapping m(8 * page);
  ASSERT_NE(m.ptr, MAP_FAILED);
  std::memset(m.ptr, 2, m.num_bytes);
  const int target = numa_node_of_page(m.ptr) == 1 ? 0 : 1;
  auto r = bind_to_numa_node(m.ptr, m.num_bytes, target);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  if (!r->applied) GTEST_SKIP() << r->reason;
  EXPECT_EQ(numa_node_of_page(m.bytes() + 2 * page), target);
}

}  // namespace
}  // namespace hetmoe::placement
