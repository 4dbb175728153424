// profiler/disk_read.h: the random-read probe of a model file (what `hetmoe probe --disk` stores for the RAM tier's
// paging cost) on the tiny fixture, a file shorter than one block, and files it cannot time.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "profiler/disk_read.h"

namespace hetmoe::profiler {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

TEST(DiskRead, TimesBlocksOfTheFile) {
  auto r = measure_disk_read(kTiny, 64 << 10, 8);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->block_bytes, 64u << 10);
  EXPECT_EQ(r->num_blocks, 8u);
  EXPECT_GT(r->bytes_per_s, 0.0);
}

TEST(DiskRead, FileShorterThanABlockIsReadWholeOnce) {
  auto r = measure_disk_read(kTiny, 1ull << 40, 8);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->block_bytes, std::filesystem::file_size(kTiny));
  EXPECT_EQ(r->num_blocks, 1u);
}

TEST(DiskRead, MissingEmptyOrZeroBlockIsAnError) {
  auto missing = measure_disk_read("/nonexistent/model.gguf");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kIo);
  EXPECT_NE(missing.error().message.find("/nonexistent/model.gguf"), std::string::npos);
  const auto empty = std::filesystem::temp_directory_path() / ("hetmoe-empty-" + std::to_string(::getpid()));
  std::ofstream(empty).close();
  auto e = measure_disk_read(empty.string());
  std::filesystem::remove(empty);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(measure_disk_read(kTiny, 0, 1));
}

}  // namespace
}  // namespace hetmoe::profiler
