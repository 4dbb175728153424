// How gguf::File makes a model addressable under a memory limit: the kAuto rule (choose_load_mode), when a copy
// drops the page cache behind it (drop_cache_while_copying), and make_resident (ranges of a mapped file replaced by
// anonymous copies of the same bytes at the same addresses: the RAM tier) on the tiny fixture, with ranges that are
// not page-aligned, overlap, touch the file's end or lie past it.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"

namespace hetmoe::gguf {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

TEST(ChooseLoadMode, CopiesOnlyWhenFileAndReserveFitTheRoom) {
  using M = File::LoadMode;
  EXPECT_EQ(File::choose_load_mode(12 * kGiB, 14 * kGiB, 2 * kGiB), M::kMemory);  // exactly fits
  EXPECT_EQ(File::choose_load_mode(12 * kGiB, 14 * kGiB - 1, 2 * kGiB), M::kMmap);
  EXPECT_EQ(File::choose_load_mode(12 * kGiB, 10 * kGiB, 2 * kGiB), M::kMmap);    // the file alone exceeds
  EXPECT_EQ(File::choose_load_mode(12 * kGiB, 10 * kGiB, 0), M::kMmap);
  EXPECT_EQ(File::choose_load_mode(1, 0, 0), M::kMmap);                            // room unknown
  EXPECT_EQ(File::choose_load_mode(0, 1, 0), M::kMemory);
}

TEST(DropCacheWhileCopying, WhenACgroupChargesTheCacheOrTwoCopiesDoNotFit) {
  EXPECT_TRUE(File::drop_cache_while_copying(12 * kGiB, 64 * kGiB, 2 * kGiB, /*cgroup_limited=*/true));
  EXPECT_FALSE(File::drop_cache_while_copying(12 * kGiB, 64 * kGiB, 2 * kGiB, false));
  EXPECT_FALSE(File::drop_cache_while_copying(12 * kGiB, 26 * kGiB, 2 * kGiB, false));  // 2·12 + 2 fits exactly
  EXPECT_TRUE(File::drop_cache_while_copying(12 * kGiB, 26 * kGiB - 1, 2 * kGiB, false));
}

TEST(LoadNote, SaysWhichModeAndWhy) {
  auto mapped = File::open(kTiny, File::LoadMode::kMmap);
  ASSERT_TRUE(mapped) << mapped.error().message;
  EXPECT_NE(mapped->load_note().find("--load mmap"), std::string::npos) << mapped->load_note();
  auto autom = File::open(kTiny, File::LoadMode::kAuto, {}, /*reserve_bytes=*/0);
  ASSERT_TRUE(autom) << autom.error().message;
  EXPECT_NE(autom->load_note().find(autom->in_memory() ? "copied into memory" : "mapped"), std::string::npos)
      << autom->load_note();
}

/// Whether the page holding `p` belongs to an anonymous mapping (no file name in /proc/self/maps).
bool anonymous_at(const void* p) {
  std::ifstream in("/proc/self/maps");
  std::string line;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(in, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || addr < lo || addr >= hi) continue;
    return line.find('/') == std::string::npos;
  }
  return false;
}

TEST(MakeResident, SameBytesAtTheSameAddressesNowAnonymous) {
  auto file = File::open(kTiny, File::LoadMode::kMmap);
  ASSERT_TRUE(file) << file.error().message;
  const uint8_t* base = file->tensors().front().data - file->data_offset() - file->tensors().front().offset;
  const std::vector<uint8_t> before(base, base + file->file_size());
  ASSERT_GT(file->file_size(), 3 * 4096u);
  // Unaligned, overlapping, and one reaching the end of the file (its last page is partial).
  const uint64_t size = file->file_size();
  auto result = file->make_resident({{4097, 100}, {4150, 5000}, {size - 10, 10}}, /*lock=*/true);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(result->resident_bytes % 4096, 0u);
  EXPECT_GE(result->resident_bytes, 2 * 4096u + 4096u);
  EXPECT_TRUE(result->locked_bytes == result->resident_bytes || !result->lock_note.empty()) << result->lock_note;
  EXPECT_EQ(file->resident_bytes(), result->resident_bytes);  // what bench subtracts from the anonymous RSS
  ASSERT_TRUE(file->make_resident({{4097, 100}}, false));      // already resident: not counted twice
  EXPECT_EQ(file->resident_bytes(), result->resident_bytes);
  EXPECT_TRUE(anonymous_at(base + 4097));
  EXPECT_TRUE(anonymous_at(base + size - 1));
  EXPECT_FALSE(anonymous_at(base));  // the first page was not asked for: still the file
  for (uint64_t i = 0; i < size; ++i) ASSERT_EQ(base[i], before[i]) << "byte " << i;
}

TEST(MakeResident, RangePastTheEndIsAnErrorAndMemoryFilesAreLeftAlone) {
  auto file = File::open(kTiny, File::LoadMode::kMmap);
  ASSERT_TRUE(file) << file.error().message;
  auto past = file->make_resident({{file->file_size() - 4, 5}}, false);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(past.error().message.find("past the end"), std::string::npos) << past.error().message;
  auto in_memory = File::open(kTiny, File::LoadMode::kMemory);
  ASSERT_TRUE(in_memory) << in_memory.error().message;
  auto none = in_memory->make_resident({{0, 4096}}, false);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->resident_bytes, 0u);
  EXPECT_EQ(in_memory->resident_bytes(), 0u);
}

TEST(ReleasePages, KeepsTheBytesReadableAndSparesResidentRanges) {
  auto file = File::open(kTiny, File::LoadMode::kMmap);
  ASSERT_TRUE(file) << file.error().message;
  const uint8_t* base = file->tensors().front().data - file->data_offset() - file->tensors().front().offset;
  const uint64_t size = file->file_size();
  const std::vector<uint8_t> before(base, base + size);
  ASSERT_TRUE(file->make_resident({{2 * 4096, 4096}}, false));
  const std::vector<File::ByteRange> all{{0, size}};
  const uint64_t released = file->release_pages(all);
  EXPECT_GT(released, 0u);
  EXPECT_LE(released, size - 4096);                // the resident page is not released
  EXPECT_TRUE(anonymous_at(base + 2 * 4096));
  for (uint64_t i = 0; i < size; ++i) ASSERT_EQ(base[i], before[i]) << "byte " << i;
  auto in_memory = File::open(kTiny, File::LoadMode::kMemory);
  ASSERT_TRUE(in_memory);
  EXPECT_EQ(in_memory->release_pages(all), 0u);
}

}  // namespace
}  // namespace hetmoe::gguf
