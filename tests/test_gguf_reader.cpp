// Tests of the validated GGUF reader (runtime/model/gguf.h): well-formed files round-trip through gguf::Writer, the
// fixtures open, and each malformed case fails with the expected code, message and file offset. Every malformed
// case is built byte by byte with RawGguf so the offending field's position is known.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace hetmoe::gguf {
namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30, kMXFP4 = 39;
constexpr uint64_t kVersionOffset = 4;
constexpr uint64_t kTensorCountOffset = 8;
constexpr uint64_t kKvCountOffset = 16;
constexpr uint64_t kHeaderEnd = 24;
constexpr char kBadName[] = "bad.gguf";

/// A GGUF file assembled field by field; each writer returns the offset where its field starts.
class RawGguf {
 public:
  /// Magic, version, n_tensors, n_kv.
  RawGguf(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    bytes_.reserve(256);  // also keeps GCC 12's -Wstringop-overflow false positive on an empty vector's insert away
    raw("GGUF");
    u32(version);
    u64(n_tensors);
    u64(n_kv);
  }

  uint64_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t>& bytes() { return bytes_; }

  uint64_t raw(std::string_view s) {
    const uint64_t at = size();
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return at;
  }
  uint64_t u8(uint8_t v) { return put(v); }
  uint64_t u32(uint32_t v) { return put(v); }
  uint64_t u64(uint64_t v) { return put(v); }
  uint64_t i64(int64_t v) { return put(v); }
  uint64_t f64(double v) { return put(v); }
  /// u64 length + bytes.
  uint64_t str(std::string_view s) {
    const uint64_t at = u64(s.size());
    raw(s);
    return at;
  }
  /// Zero bytes up to a multiple of `alignment`.
  void pad(uint64_t alignment) { bytes_.resize((size() + alignment - 1) / alignment * alignment, 0); }
  void zeros(uint64_t n) { bytes_.resize(size() + n, 0); }

  /// Positions of one metadata entry's fields.
  struct Kv {
    uint64_t start, type, value;
  };
  /// Key and value type; the caller appends the value.
  Kv kv(std::string_view key, uint32_t type) {
    Kv k{};
    k.start = str(key);
    k.type = u32(type);
    k.value = size();
    return k;
  }
  Kv kv_u32(std::string_view key, uint32_t v) {
    Kv k = kv(key, static_cast<uint32_t>(ValueType::kUint32));
    u32(v);
    return k;
  }

  /// Positions of one tensor info's fields.
  struct Info {
    uint64_t start, n_dims, ne0, type, offset;
  };
  Info tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Info t{};
    t.start = str(name);
    t.n_dims = u32(static_cast<uint32_t>(ne.size()));
    t.ne0 = size();
    for (uint64_t d : ne) u64(d);
    t.type = u32(type);
    t.offset = u64(offset);
    return t;
  }

 private:
  template <class T>
  uint64_t put(T v) {
    const uint64_t at = size();
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return at;
  }
  std::vector<uint8_t> bytes_;
};

/// Parses `bytes` from an exactly sized heap copy (so ASan sees any read past the end).
Expected<File> parse(std::span<const uint8_t> bytes, std::vector<uint8_t>& storage, std::string name = kBadName) {
  storage.assign(bytes.begin(), bytes.end());
  storage.shrink_to_fit();
  return File::from_memory(storage, std::move(name));
}

/// Checks that `bytes` fails to parse with `code`, a message containing `substring` (and starting with the file
/// name), and `file_offset`.
testing::AssertionResult fails_with(const std::vector<uint8_t>& bytes, ErrorCode code, std::string_view substring,
                                    uint64_t file_offset) {
  std::vector<uint8_t> storage;
  auto file = parse(bytes, storage);
  if (file) return testing::AssertionFailure() << "parsed successfully, expected an error";
  const Error& e = file.error();
  auto result = testing::AssertionSuccess();
  if (e.code != code)
    return testing::AssertionFailure() << "code " << static_cast<int>(e.code) << ", expected "
                                       << static_cast<int>(code) << "; message: " << e.message;
  if (e.message.rfind(std::string(kBadName) + ": ", 0) != 0)
    return testing::AssertionFailure() << "message does not start with the file name: " << e.message;
  if (e.message.find(substring) == std::string::npos)
    return testing::AssertionFailure() << "message lacks '" << substring << "': " << e.message;
  if (!e.file_offset || *e.file_offset != file_offset)
    return testing::AssertionFailure() << "file_offset " << (e.file_offset ? std::to_string(*e.file_offset) : "unset")
                                       << ", expected " << file_offset << "; message: " << e.message;
  return result;
}

/// Bytes 0, 1, 2, ... (mod 251) for tensor contents.
std::vector<uint8_t> ramp(uint64_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i + seed) % 251);
  return v;
}

struct WrittenTensor {
  std::string name;
  TensorType type;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;
};

/// A file with metadata of the writer's value types and one tensor of each supported type.
std::vector<uint8_t> write_small_file(uint32_t alignment, std::vector<WrittenTensor>* tensors_out = nullptr) {
  Writer w(alignment);
  w.add_string("general.architecture", "gpt-oss");
  w.add_u8("test.u8", 200);
  w.add_u32("test.u32", 4000000000u);
  w.add_i32("test.i32", -123);
  w.add_u64("test.u64", 1ull << 40);
  w.add_f32("test.f32", 0.25f);
  w.add_bool("test.bool", true);
  const std::vector<std::string> strings = {"alpha", "", "\xc4\xa0 unicode", "z"};
  w.add_string_array("test.strings", strings);
  const std::vector<int32_t> ints = {0, -1, 2147483647, -2147483647 - 1};
  w.add_i32_array("test.i32s", ints);
  const std::vector<float> floats = {1.0f, -2.5f, 1e-5f};
  w.add_f32_array("test.f32s", floats);

  std::vector<WrittenTensor> tensors = {
      {"t.f32", TensorType::kF32, {3, 2}, {}},
      {"t.f16", TensorType::kF16, {5}, {}},
      {"t.q8_0", TensorType::kQ8_0, {64, 2}, {}},
      {"t.bf16", TensorType::kBF16, {2, 1, 3, 1}, {}},
      {"t.mxfp4", TensorType::kMXFP4, {32, 3, 2}, {}},
  };
  uint8_t seed = 1;
  for (auto& t : tensors) t.data = ramp(w.add_tensor(t.name, t.type, t.shape), seed++);
  std::vector<uint8_t> out;
  w.open_memory(&out);
  EXPECT_TRUE(w.write_header());
  for (const auto& t : tensors) EXPECT_TRUE(w.write_tensor_data(t.data));
  EXPECT_TRUE(w.finish());
  if (tensors_out) *tensors_out = tensors;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Well-formed files

void check_round_trip(uint32_t alignment) {
  SCOPED_TRACE("alignment " + std::to_string(alignment));
  std::vector<WrittenTensor> written;
  const std::vector<uint8_t> bytes = write_small_file(alignment, &written);
  auto file = File::from_memory(bytes, "small.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->path(), "small.gguf");
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), alignment);
  EXPECT_EQ(file->file_size(), bytes.size());
  EXPECT_EQ(file->data_offset() % alignment, 0u);

  EXPECT_EQ(*file->get_string("general.architecture"), "gpt-oss");
  EXPECT_EQ(*file->get_u32("test.u8"), 200u);
  EXPECT_EQ(*file->get_u32("test.u32"), 4000000000u);
  EXPECT_EQ(file->find("test.i32")->value.i64, -123);
  EXPECT_EQ(*file->get_u64("test.u64"), 1ull << 40);
  EXPECT_EQ(*file->get_f32("test.f32"), 0.25f);
  EXPECT_EQ(*file->get_bool("test.bool"), true);
  auto strings = file->get_string_array("test.strings");
  ASSERT_TRUE(strings);
  ASSERT_EQ(strings->size(), 4u);
  EXPECT_EQ((*strings)[0], "alpha");
  EXPECT_EQ((*strings)[1], "");
  EXPECT_EQ((*strings)[2], "\xc4\xa0 unicode");
  EXPECT_EQ((*strings)[3], "z");
  EXPECT_EQ(*file->get_i32_array("test.i32s"), (std::vector<int32_t>{0, -1, 2147483647, -2147483647 - 1}));
  EXPECT_EQ(*file->get_f32_array("test.f32s"), (std::vector<float>{1.0f, -2.5f, 1e-5f}));
  if (alignment != kDefaultAlignment) {
    EXPECT_EQ(*file->get_u32("general.alignment"), alignment);
  }

  ASSERT_EQ(file->tensors().size(), written.size());
  for (size_t i = 0; i < written.size(); ++i) {
    const WrittenTensor& w = written[i];
    const TensorInfo& t = file->tensors()[i];
    SCOPED_TRACE(w.name);
    EXPECT_EQ(file->find_tensor(w.name), &t);
    EXPECT_EQ(t.name, w.name);
    EXPECT_EQ(t.type, w.type);
    EXPECT_EQ(t.n_dims, w.shape.size());
    uint64_t n = 1;
    for (uint32_t d = 0; d < kMaxDims; ++d) {
      const uint64_t expected = d < w.shape.size() ? w.shape[d] : 1;
      EXPECT_EQ(t.ne[d], expected);
      n *= expected;
    }
    EXPECT_EQ(t.num_elements, n);
    EXPECT_EQ(t.num_bytes, w.data.size());
    EXPECT_EQ(t.offset % alignment, 0u);
    EXPECT_EQ(t.data, bytes.data() + file->data_offset() + t.offset);
    EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.num_bytes), w.data);
  }
  EXPECT_EQ(file->find_tensor("absent"), nullptr);
  EXPECT_EQ(file->find("absent"), nullptr);
}

TEST(GgufReader, RoundTripAllValueAndTensorTypesAlignment32) { check_round_trip(32); }
TEST(GgufReader, RoundTripAllValueAndTensorTypesAlignment64) { check_round_trip(64); }

TEST(GgufReader, Version2HeaderParses) {
  std::vector<uint8_t> bytes = write_small_file(32);
  bytes[kVersionOffset] = 2;
  auto file = File::from_memory(bytes, "v2.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->version(), 2u);
  EXPECT_EQ(file->tensors().size(), 5u);
}

TEST(GgufReader, ScalarTypesTheWriterLacksDecode) {
  RawGguf g(0, 9);
  g.kv("int8", static_cast<uint32_t>(ValueType::kInt8));
  g.u8(0xfe);  // -2
  g.kv("uint16", static_cast<uint32_t>(ValueType::kUint16));
  g.u8(0x34), g.u8(0x12);
  g.kv("int16", static_cast<uint32_t>(ValueType::kInt16));
  g.u8(0x00), g.u8(0x80);  // -32768
  g.kv("int64", static_cast<uint32_t>(ValueType::kInt64));
  g.i64(-(int64_t{1} << 40));
  g.kv("int64.small", static_cast<uint32_t>(ValueType::kInt64));
  g.i64(77);
  g.kv("float64", static_cast<uint32_t>(ValueType::kFloat64));
  g.f64(-0.125);
  g.kv("uint8s", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kUint8)), g.u64(3), g.u8(1), g.u8(2), g.u8(255);
  g.kv("int64s", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kInt64)), g.u64(2), g.i64(-7), g.i64(1);
  g.kv("bools", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kBool)), g.u64(2), g.u8(0), g.u8(1);
  g.pad(32);
  std::vector<uint8_t> storage;
  auto file = parse(g.bytes(), storage);
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->find("int8")->value.i64, -2);
  EXPECT_EQ(*file->get_u32("uint16"), 0x1234u);
  EXPECT_EQ(file->find("int16")->value.i64, -32768);
  EXPECT_EQ(file->find("int64")->value.i64, -(int64_t{1} << 40));
  EXPECT_EQ(*file->get_u32("int64.small"), 77u);
  EXPECT_EQ(*file->get_f32("float64"), -0.125f);
  EXPECT_EQ(*file->get_i32_array("uint8s"), (std::vector<int32_t>{1, 2, 255}));
  EXPECT_EQ(*file->get_i32_array("int64s"), (std::vector<int32_t>{-7, 1}));
  const Value& bools = file->find("bools")->value;
  EXPECT_EQ(bools.array_type, ValueType::kBool);
  EXPECT_EQ(bools.array_count, 2u);
  EXPECT_EQ(bools.array_data[1], 1);
}

TEST(GgufReader, TypedGetterErrorsNameKeyAndTypes) {
  RawGguf g(0, 6);
  const auto negative = g.kv("neg", static_cast<uint32_t>(ValueType::kInt64));
  g.i64(-1);
  g.kv("big", static_cast<uint32_t>(ValueType::kUint64));
  g.u64(1ull << 33);
  g.kv("text", static_cast<uint32_t>(ValueType::kString));
  g.str("hello");
  g.kv("wide", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kUint32)), g.u64(2), g.u32(5), g.u32(0x80000000u);
  g.kv("huge.f64", static_cast<uint32_t>(ValueType::kFloat64));
  g.f64(1e300);
  g.kv("flag", static_cast<uint32_t>(ValueType::kBool));
  g.u8(0);
  g.pad(32);
  std::vector<uint8_t> storage;
  auto file = parse(g.bytes(), storage, "getters.gguf");
  ASSERT_TRUE(file) << file.error().to_string();

  auto missing = file->get_u32("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kMissing);
  EXPECT_NE(missing.error().message.find("getters.gguf: key 'nope' not found"), std::string::npos);

  auto neg = file->get_u32("neg");
  ASSERT_FALSE(neg);
  EXPECT_EQ(neg.error().code, ErrorCode::kFormat);
  EXPECT_NE(neg.error().message.find("-1 is negative"), std::string::npos) << neg.error().message;
  EXPECT_EQ(neg.error().file_offset, negative.start);
  EXPECT_FALSE(file->get_u64("neg"));

  auto big = file->get_u32("big");
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message.find("8589934592 does not fit in UINT32"), std::string::npos) << big.error().message;
  EXPECT_EQ(*file->get_u64("big"), 1ull << 33);

  auto text_as_u32 = file->get_u32("text");
  ASSERT_FALSE(text_as_u32);
  EXPECT_EQ(text_as_u32.error().code, ErrorCode::kFormat);
  EXPECT_NE(text_as_u32.error().message.find("key 'text' has type STRING (expected an integer"), std::string::npos)
      << text_as_u32.error().message;
  auto text_as_f32 = file->get_f32("text");
  ASSERT_FALSE(text_as_f32);
  EXPECT_NE(text_as_f32.error().message.find("has type STRING (expected FLOAT32 or FLOAT64)"), std::string::npos);
  auto text_as_bool = file->get_bool("text");
  ASSERT_FALSE(text_as_bool);
  EXPECT_NE(text_as_bool.error().message.find("(expected BOOL)"), std::string::npos);
  EXPECT_FALSE(file->get_string_array("text"));

  auto wide = file->get_i32_array("wide");
  ASSERT_FALSE(wide);
  EXPECT_NE(wide.error().message.find("element 1 = 2147483648 does not fit in INT32"), std::string::npos)
      << wide.error().message;
  auto wide_f32 = file->get_f32_array("wide");
  ASSERT_FALSE(wide_f32);
  EXPECT_NE(wide_f32.error().message.find("has type ARRAY of UINT32 (expected ARRAY of FLOAT32)"), std::string::npos)
      << wide_f32.error().message;
  auto wide_str = file->get_string("wide");
  ASSERT_FALSE(wide_str);
  EXPECT_NE(wide_str.error().message.find("(expected STRING)"), std::string::npos);

  auto huge = file->get_f32("huge.f64");
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().message.find("does not fit in FLOAT32"), std::string::npos) << huge.error().message;
  EXPECT_EQ(*file->get_bool("flag"), false);
  EXPECT_FALSE(file->get_u32("flag"));
}

TEST(GgufReader, EmptyFileWithoutTensorsOrMetadataIsValid) {
  std::vector<uint8_t> bytes;
  Writer w;
  w.open_memory(&bytes);
  ASSERT_TRUE(w.write_header());
  ASSERT_TRUE(w.finish());
  ASSERT_EQ(bytes.size(), 32u);
  auto file = File::from_memory(bytes, "empty.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_TRUE(file->metadata().empty());
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(file->data_offset(), 32u);
}

TEST(GgufReader, FileWithoutTensorsMayOmitTrailingPadding) {
  RawGguf g(0, 0);
  ASSERT_EQ(g.size(), kHeaderEnd);
  std::vector<uint8_t> storage;
  auto file = parse(g.bytes(), storage);
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->data_offset(), kHeaderEnd);
}

TEST(GgufReader, ZeroElementTensorIsValidAndOverlapsNothing) {
  RawGguf g(2, 0);
  g.tensor("empty", {0, 4}, kF32, 0);
  g.tensor("four", {4}, kF32, 0);
  g.pad(32);
  g.zeros(16);
  std::vector<uint8_t> storage;
  auto file = parse(g.bytes(), storage);
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->tensors()[0].num_bytes, 0u);
  EXPECT_EQ(file->tensors()[1].num_bytes, 16u);
}

TEST(GgufReader, TensorsMayBeListedOutOfOffsetOrder) {
  RawGguf g(2, 0);
  g.tensor("second", {8}, kF32, 32);
  g.tensor("first", {8}, kF32, 0);
  g.pad(32);
  g.zeros(64);
  std::vector<uint8_t> storage;
  auto file = parse(g.bytes(), storage);
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->find_tensor("second")->data, storage.data() + file->data_offset() + 32);
}

TEST(GgufReader, MovedFileKeepsViewsValid) {
  const std::vector<uint8_t> bytes = write_small_file(32);
  auto parsed = File::from_memory(bytes, "small.gguf");
  ASSERT_TRUE(parsed);
  const uint8_t* data = parsed->tensors()[0].data;
  File moved = std::move(*parsed);
  EXPECT_EQ(moved.tensors()[0].data, data);
  EXPECT_EQ(*moved.get_string("general.architecture"), "gpt-oss");
  File assigned = std::move(moved);
  EXPECT_EQ(assigned.get_string_array("test.strings")->size(), 4u);
}

// ---------------------------------------------------------------------------------------------------------------
// Files on disk

class GgufReaderFiles : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("hetmoe_gguf_reader_" + std::to_string(::getpid()) + "_" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, std::span<const uint8_t> bytes) {
    const std::string path = (dir_ / name).string();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
      ADD_FAILURE() << "cannot create " << path;
      return path;
    }
    if (!bytes.empty()) {
      EXPECT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    }
    std::fclose(f);
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(GgufReaderFiles, OpenMapsFileAndTensorsPointIntoMapping) {
  std::vector<WrittenTensor> written;
  const std::string path = write("small.gguf", write_small_file(64, &written));
  auto file = File::open(path);
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->path(), path);
  ASSERT_EQ(file->tensors().size(), written.size());
  for (size_t i = 0; i < written.size(); ++i) {
    const TensorInfo& t = file->tensors()[i];
    EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.num_bytes), written[i].data) << t.name;
  }
}

TEST_F(GgufReaderFiles, MissingPathIsIoError) {
  auto file = File::open((dir_ / "absent.gguf").string());
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kIo);
  EXPECT_NE(file.error().message.find("absent.gguf: cannot open"), std::string::npos) << file.error().message;
}

TEST_F(GgufReaderFiles, DirectoryIsIoError) {
  auto file = File::open(dir_.string());
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kIo);
  EXPECT_NE(file.error().message.find("not a regular file"), std::string::npos) << file.error().message;
}

TEST_F(GgufReaderFiles, ZeroByteFileIsCleanFormatError) {
  const std::string path = write("zero.gguf", {});
  auto file = File::open(path);
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kFormat);
  EXPECT_EQ(file.error().file_offset, 0u);
  EXPECT_EQ(file.error().message.rfind(path + ": truncated in the header", 0), 0u) << file.error().message;
}

TEST_F(GgufReaderFiles, ThreeByteFileIsCleanFormatError) {
  const uint8_t three[] = {'G', 'G', 'U'};
  const std::string path = write("three.gguf", three);
  auto file = File::open(path);
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kFormat);
  EXPECT_EQ(file.error().file_offset, 0u);
  EXPECT_NE(file.error().message.find("the magic needs 4 bytes"), std::string::npos) << file.error().message;
}

TEST(GgufReaderFixtures, GptOssTinyHasArchitectureLayersAndAllTensors) {
  auto file = File::open(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), 32u);
  EXPECT_EQ(*file->get_string("general.architecture"), "gpt-oss");
  const uint32_t layers = *file->get_u32("gpt-oss.block_count");
  EXPECT_EQ(layers, 4u);
  EXPECT_EQ(*file->get_u32("gpt-oss.embedding_length"), 256u);
  EXPECT_EQ(*file->get_u32("gpt-oss.expert_count"), 8u);
  EXPECT_EQ(*file->get_u32("gpt-oss.expert_used_count"), 2u);
  EXPECT_FLOAT_EQ(*file->get_f32("gpt-oss.rope.freq_base"), 150000.0f);
  EXPECT_EQ(*file->get_string("gpt-oss.rope.scaling.type"), "yarn");
  EXPECT_EQ(file->metadata().size(), 28u);
  ASSERT_EQ(file->tensors().size(), 3u + layers * 19u);

  auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens);
  EXPECT_EQ(tokens->size(), 4106u);
  EXPECT_EQ((*tokens)[4096], "<|startoftext|>");
  EXPECT_EQ(file->get_i32_array("tokenizer.ggml.token_type")->size(), 4106u);
  EXPECT_EQ(*file->get_u32("tokenizer.ggml.bos_token_id"), 4096u);
  EXPECT_EQ(*file->get_u32("tokenizer.ggml.eos_token_id"), 4098u);

  const TensorInfo* embd = file->find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, TensorType::kQ8_0);
  EXPECT_EQ(embd->n_dims, 2u);
  EXPECT_EQ(embd->ne[0], 256u);
  EXPECT_EQ(embd->ne[1], 4106u);
  EXPECT_EQ(embd->num_bytes, 256u / 32 * 34 * 4106);
  const TensorInfo* gate = file->find_tensor("blk.3.ffn_gate_exps.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->type, TensorType::kMXFP4);
  EXPECT_EQ(gate->n_dims, 3u);
  EXPECT_EQ(gate->ne[2], 8u);
  EXPECT_EQ(file->find_tensor("blk.0.attn_sinks.weight")->type, TensorType::kF32);
  for (uint32_t l = 0; l < layers; ++l)
    EXPECT_NE(file->find_tensor("blk." + std::to_string(l) + ".ffn_down_exps.bias"), nullptr) << l;
  EXPECT_NE(file->find_tensor("output_norm.weight"), nullptr);
  const TensorInfo* out = file->find_tensor("output.weight");
  ASSERT_NE(out, nullptr);
  // The last tensor ends exactly at the end of the file.
  EXPECT_EQ(file->data_offset() + out->offset + out->num_bytes, file->file_size());
}

TEST_F(GgufReaderFiles, TruncatedCopyOfFixtureNamesFirstTensorPastTheEnd) {
  const std::string fixture = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
  auto full = File::open(fixture);
  ASSERT_TRUE(full) << full.error().to_string();
  const TensorInfo& embd = full->tensors()[0];
  ASSERT_EQ(embd.name, "token_embd.weight");
  ASSERT_GT(full->data_offset() + embd.num_bytes, 1000000u);
  const uint64_t embd_offset_field = embd.info_file_offset + 8 + embd.name.size() + 4 + 8 * embd.n_dims + 4;

  const uint8_t* mapping = embd.data - full->data_offset() - embd.offset;  // the fixture's first byte
  const std::vector<uint8_t> head(mapping, mapping + 1000000);  // as if a download stopped at 1 MB
  const std::string path = write("partial-download.gguf", head);
  auto file = File::open(path);
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::kFormat);
  EXPECT_EQ(file.error().file_offset, embd_offset_field);
  EXPECT_EQ(file.error().message.rfind(path + ": tensor 'token_embd.weight': data [0, 1116832) is out of range", 0),
            0u)
      << file.error().message;
}

TEST(GgufReaderFixtures, O200kVocabHasTokensMergesAndNoTensors) {
  auto file = File::open(std::string(HETMOE_TEST_DATA_DIR) + "/o200k-harmony-vocab.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(*file->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*file->get_string("tokenizer.ggml.pre"), "gpt-4o");
  auto tokens = file->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 201088u);
  EXPECT_EQ((*tokens)[0], "!");
  EXPECT_EQ((*tokens)[199998], "<|startoftext|>");
  EXPECT_EQ((*tokens)[200002], "<|return|>");
  EXPECT_EQ((*tokens)[201087], "<|reserved_201087|>");
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.merges")->size(), 199742u);
  EXPECT_EQ(file->get_i32_array("tokenizer.ggml.token_type")->size(), 201088u);
  EXPECT_EQ(*file->get_u32("tokenizer.ggml.bos_token_id"), 199998u);
  EXPECT_EQ(*file->get_u32("tokenizer.ggml.eos_token_id"), 200002u);
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed files: each names the edge it stresses.

TEST(GgufReaderMalformed, EmptyInputIsTruncatedHeader) {
  EXPECT_TRUE(fails_with({}, ErrorCode::kFormat, "truncated in the header: the magic needs 4 bytes", 0));
}

TEST(GgufReaderMalformed, ThreeByteInputIsTruncatedMagic) {
  EXPECT_TRUE(fails_with({'G', 'G', 'U'}, ErrorCode::kFormat, "the magic needs 4 bytes at offset 0", 0));
}

TEST(GgufReaderMalformed, TruncatedInHeaderTensorCount) {
  RawGguf g(0, 0);
  g.bytes().resize(12);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "truncated in the header: the tensor count needs 8 bytes",
                         kTensorCountOffset));
}

TEST(GgufReaderMalformed, BadMagic) {
  RawGguf g(0, 0);
  std::memcpy(g.bytes().data(), "GGML", 4);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "bad magic 'GGML'", 0));
}

TEST(GgufReaderMalformed, Version1IsUnsupported) {
  RawGguf g(0, 0, 1);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported, "GGUF version 1 is not supported (expected 2 or 3)",
                         kVersionOffset));
}

TEST(GgufReaderMalformed, Version4IsUnsupported) {
  RawGguf g(0, 0, 4);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported, "GGUF version 4 is not supported", kVersionOffset));
}

TEST(GgufReaderMalformed, BigEndianFileIsUnsupported) {
  RawGguf g(0, 0, 0x03000000u);  // version 3 stored big-endian
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported, "big-endian GGUF is not supported", kVersionOffset));
}

TEST(GgufReaderMalformed, HugeTensorCountExceedsBytesLeft) {
  RawGguf g(uint64_t{1} << 60, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor count 1152921504606846976 is impossible",
                         kTensorCountOffset));
}

TEST(GgufReaderMalformed, HugeMetadataCountExceedsBytesLeft) {
  RawGguf g(0, std::numeric_limits<uint64_t>::max());
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "metadata count 18446744073709551615 is impossible",
                         kKvCountOffset));
}

TEST(GgufReaderMalformed, TensorCountExceedsBytesLeftAfterMetadata) {
  RawGguf g(2, 1);  // 2 infos need >= 64 bytes; the header check passes, but the string value eats most of them
  g.kv("k", static_cast<uint32_t>(ValueType::kString));
  g.str(std::string(60, 'x'));
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor count 2 needs at least 64 bytes of tensor infos",
                         kTensorCountOffset));
}

TEST(GgufReaderMalformed, TruncatedInKey) {
  RawGguf g(0, 2);
  g.kv("first", static_cast<uint32_t>(ValueType::kUint8));
  g.u8(1);
  const uint64_t key = g.u64(40);  // key length 40, then only 12 bytes
  g.raw("general.arch");
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "truncated in metadata entry #1: the key length 40", key));
}

TEST(GgufReaderMalformed, TruncatedInValue) {
  RawGguf g(0, 1);
  const auto kv = g.kv("k", static_cast<uint32_t>(ValueType::kUint32));
  g.u8(1), g.u8(2);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "truncated in the value of key 'k': the value needs 4 bytes",
                         kv.value));
}

TEST(GgufReaderMalformed, TruncatedInStringArray) {
  RawGguf g(0, 1);
  g.kv("tokenizer.ggml.tokens", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kString));
  g.u64(3);
  g.str("ab");
  g.str("cd");
  const uint64_t third = g.u64(5);
  g.raw("xy");
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat,
                         "truncated in the value of key 'tokenizer.ggml.tokens': an array string length 5", third));
}

TEST(GgufReaderMalformed, TruncatedInTensorInfos) {
  RawGguf g(2, 0);
  g.tensor("first.tensor.weight!", {32}, kF32, 0);
  g.str("second.bias");
  g.u32(2);
  const uint64_t ne1 = g.u64(4) + 8;  // ne[0] present, ne[1] cut off
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat,
                         "truncated in tensor info #1 ('second.bias'): a dimension needs 8 bytes", ne1));
}

TEST(GgufReaderMalformed, TruncatedInPaddingBeforeDataSection) {
  RawGguf g(1, 0);
  g.tensor("t", {4}, kF32, 0);
  const uint64_t infos_end = g.size();
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "truncated: the data section starts at offset", infos_end));
}

TEST(GgufReaderMalformed, TruncatedInDataSection) {
  RawGguf g(2, 0);
  g.tensor("a", {8}, kF32, 0);
  const auto b = g.tensor("b", {8}, kF32, 32);
  g.pad(32);
  g.zeros(32 + 20);  // b needs 32 bytes, 20 present
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 'b': data [32, 64) is out of range", b.offset));
}

TEST(GgufReaderMalformed, HugeStringLength) {
  RawGguf g(0, 1);
  g.kv("general.name", static_cast<uint32_t>(ValueType::kString));
  const uint64_t len = g.u64(uint64_t{1} << 63);
  g.raw("abc");
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "the string length 9223372036854775808 at offset", len));
}

TEST(GgufReaderMalformed, HugeNumericArrayCountWouldOverflowBytes) {
  RawGguf g(0, 1);
  g.kv("k", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kUint32));
  const uint64_t count = g.u64(uint64_t{1} << 62);  // x 4 bytes wraps to 0
  g.u32(1);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "key 'k': array of 4611686018427387904 UINT32", count));
}

TEST(GgufReaderMalformed, HugeStringArrayCount) {
  RawGguf g(0, 1);
  g.kv("tokenizer.ggml.tokens", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kString));
  const uint64_t count = g.u64(uint64_t{1} << 61);
  g.str("a");
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "array of 2305843009213693952 STRING needs at least 8 bytes",
                         count));
}

TEST(GgufReaderMalformed, UnknownValueType) {
  RawGguf g(0, 1);
  const auto kv = g.kv("k", 13);
  g.u64(0);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "key 'k': unknown value type id 13 (expected 0..12)", kv.type));
}

TEST(GgufReaderMalformed, UnknownArrayElementType) {
  RawGguf g(0, 1);
  g.kv("k", static_cast<uint32_t>(ValueType::kArray));
  const uint64_t elem = g.u32(99);
  g.u64(0);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "unknown array element type id 99", elem));
}

TEST(GgufReaderMalformed, NestedArrayIsUnsupported) {
  RawGguf g(0, 1);
  g.kv("k", static_cast<uint32_t>(ValueType::kArray));
  const uint64_t elem = g.u32(static_cast<uint32_t>(ValueType::kArray));
  g.u64(1);
  g.u32(static_cast<uint32_t>(ValueType::kUint8)), g.u64(1), g.u8(0);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported, "key 'k': nested arrays are not supported", elem));
}

TEST(GgufReaderMalformed, DuplicateKey) {
  RawGguf g(0, 2);
  g.kv_u32("gpt-oss.block_count", 24);
  const auto second = g.kv_u32("gpt-oss.block_count", 36);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat,
                         "duplicate key 'gpt-oss.block_count' (first defined at offset 24", second.start));
}

TEST(GgufReaderMalformed, DuplicateTensorName) {
  RawGguf g(2, 0);
  g.tensor("w", {8}, kF32, 0);
  const auto second = g.tensor("w", {8}, kF32, 32);
  g.pad(32);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "duplicate tensor name 'w'", second.start));
}

TEST(GgufReaderMalformed, ZeroDims) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {}, kF32, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 't': n_dims = 0 (expected 1..4)", t.n_dims));
}

TEST(GgufReaderMalformed, FiveDims) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {1, 1, 1, 1, 1}, kF32, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 't': n_dims = 5 (expected 1..4)", t.n_dims));
}

TEST(GgufReaderMalformed, DimAboveInt64Max) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {32, uint64_t{1} << 63}, kF32, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "ne[1] = 9223372036854775808 (expected at most INT64_MAX)",
                         t.ne0 + 8));
}

TEST(GgufReaderMalformed, DimProductWrapsAround) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0);  // 2^64 wraps to 0
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 't': element count overflows at ne[1]", t.ne0 + 8));
}

TEST(GgufReaderMalformed, DimProductAboveInt64Max) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {2, 2, uint64_t{1} << 61}, kF32, 0);  // 2^63
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "element count overflows at ne[2]", t.ne0 + 16));
}

TEST(GgufReaderMalformed, ByteSizeOverflows) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {uint64_t{1} << 62}, kF32, 0);  // 2^62 elements x 4 bytes
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 't': size in bytes of 4611686018427387904 F32",
                         t.type));
}

TEST(GgufReaderMalformed, Q8_0RowNotMultipleOfBlock) {
  RawGguf g(1, 0);
  const auto t = g.tensor("blk.0.attn_q.weight", {33, 2}, kQ8_0, 0);
  g.zeros(128);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "ne[0] = 33 is not a multiple of the Q8_0 block size 32",
                         t.ne0));
}

TEST(GgufReaderMalformed, MXFP4RowNotMultipleOfBlock) {
  RawGguf g(1, 0);
  const auto t = g.tensor("blk.0.ffn_up_exps.weight", {48, 2, 2}, kMXFP4, 0);
  g.zeros(128);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "ne[0] = 48 is not a multiple of the MXFP4 block size 32",
                         t.ne0));
}

TEST(GgufReaderMalformed, UnsupportedTensorTypeId13) {
  RawGguf g(1, 0);
  const auto t = g.tensor("blk.0.attn_q.weight", {256, 256}, 13, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported,
                         "tensor 'blk.0.attn_q.weight': type id 13 (Q5_K) is not supported (expected one of F32, F16, "
                         "Q8_0, BF16, MXFP4)",
                         t.type));
}

// MXFP4_R16 is a layout hetmoe makes in memory (cpu_kernels/repack.h), not a GGML type: a file naming its id is refused.
TEST(GgufReaderMalformed, InMemoryLayoutTypeIdIsRefused) {
  RawGguf g(1, 0);
  const auto id = static_cast<uint32_t>(TensorType::kMXFP4_R16);
  const auto t = g.tensor("blk.0.ffn_up_exps.weight", {64, 16, 1}, id, 0);
  g.zeros(1024);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported,
                         "type id " + std::to_string(id) + " is not supported (expected one of F32, F16, Q8_0, BF16, "
                         "MXFP4)",
                         t.type));
}

TEST(GgufReaderMalformed, UnknownTensorTypeIdBeyondGgml) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {4}, 0xdeadbeefu, 0);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kUnsupported, "type id 3735928559 is not supported", t.type));
}

TEST(GgufReaderMalformed, AlignmentZero) {
  RawGguf g(0, 1);
  const auto kv = g.kv_u32("general.alignment", 0);
  g.pad(32);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "general.alignment = 0 (expected a nonzero power of two)",
                         kv.value));
}

TEST(GgufReaderMalformed, AlignmentNotPowerOfTwo) {
  RawGguf g(0, 1);
  const auto kv = g.kv_u32("general.alignment", 3);
  g.pad(32);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "general.alignment = 3", kv.value));
}

TEST(GgufReaderMalformed, AlignmentWrongType) {
  RawGguf g(0, 1);
  const auto kv = g.kv("general.alignment", static_cast<uint32_t>(ValueType::kUint64));
  g.u64(32);
  g.pad(32);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "key 'general.alignment' has type UINT64 (expected UINT32)",
                         kv.type));
}

TEST(GgufReaderMalformed, TensorOffsetNotAligned) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {4}, kF32, 4);
  g.pad(32);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "data offset 4 is not a multiple of the alignment 32",
                         t.offset));
}

TEST(GgufReaderMalformed, TensorOffsetNotAlignedToCustomAlignment) {
  RawGguf g(1, 1);
  g.kv_u32("general.alignment", 64);
  const auto t = g.tensor("t", {4}, kF32, 32);
  g.pad(64);
  g.zeros(128);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "data offset 32 is not a multiple of the alignment 64",
                         t.offset));
}

TEST(GgufReaderMalformed, TensorOffsetOutOfRange) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {4}, kF32, 1024);
  g.pad(32);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 't': data [1024, 1040) is out of range", t.offset));
}

TEST(GgufReaderMalformed, TensorOffsetPlusSizeOverflows) {
  RawGguf g(1, 0);
  const auto t = g.tensor("t", {64}, kF32, std::numeric_limits<uint64_t>::max() - 31);  // aligned, + 256 wraps
  g.pad(32);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "+ size 256 overflows 64 bits", t.offset));
}

TEST(GgufReaderMalformed, OverlappingTensors) {
  RawGguf g(2, 0);
  g.tensor("a", {16}, kF32, 0);  // [0, 64)
  const auto b = g.tensor("b", {8}, kF32, 32);  // [32, 64)
  g.pad(32);
  g.zeros(64);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 'b': data [32, 64) overlaps tensor 'a' [0, 64)",
                         b.offset));
}

TEST(GgufReaderMalformed, TensorNestedInsideAnotherListedLater) {
  RawGguf g(2, 0);
  const auto small = g.tensor("small", {8}, kF32, 64);  // [64, 96)
  g.tensor("big", {64}, kF32, 0);                       // [0, 256)
  g.pad(32);
  g.zeros(256);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "tensor 'small': data [64, 96) overlaps tensor 'big' [0, 256)",
                         small.offset));
}

TEST(GgufReaderMalformed, BoolValueTwo) {
  RawGguf g(0, 1);
  const auto kv = g.kv("flag", static_cast<uint32_t>(ValueType::kBool));
  g.u8(2);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "key 'flag': BOOL value 2 (expected 0 or 1)", kv.value));
}

TEST(GgufReaderMalformed, BoolArrayElementTwo) {
  RawGguf g(0, 1);
  g.kv("flags", static_cast<uint32_t>(ValueType::kArray));
  g.u32(static_cast<uint32_t>(ValueType::kBool));
  g.u64(3);
  const uint64_t first = g.u8(1);
  g.u8(0), g.u8(2);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "BOOL array element 2 is 2", first + 2));
}

TEST(GgufReaderMalformed, NonPrintableKeyIsEscapedInMessage) {
  RawGguf g(0, 2);
  g.kv_u32(std::string_view("k\n\xff", 3), 1);
  const auto second = g.kv_u32(std::string_view("k\n\xff", 3), 2);
  EXPECT_TRUE(fails_with(g.bytes(), ErrorCode::kFormat, "duplicate key 'k\\x0a\\xff'", second.start));
}

// ---------------------------------------------------------------------------------------------------------------
// Sweeps over a small valid file

void expect_clean_failure_or_consistent_file(const Expected<File>& file, uint64_t size) {
  if (!file) {
    const Error& e = file.error();
    EXPECT_TRUE(e.code == ErrorCode::kFormat || e.code == ErrorCode::kUnsupported) << e.message;
    ASSERT_TRUE(e.file_offset.has_value()) << e.message;
    EXPECT_LE(*e.file_offset, size) << e.message;
    EXPECT_EQ(e.message.rfind(std::string(kBadName) + ": ", 0), 0u) << e.message;
    return;
  }
  uint64_t sum = 0;
  for (const auto& t : file->tensors())
    for (uint64_t i = 0; i < t.num_bytes; ++i) sum += t.data[i];
  for (const auto& kv : file->metadata()) {
    for (std::string_view s : kv.value.array_strings) sum += s.size();
    sum += kv.value.str.size();
  }
  volatile uint64_t sink = sum;  // the reads above are what ASan checks
  (void)sink;
}

TEST(GgufReaderSweep, EveryPrefixOfSmallFileFailsCleanly) {
  const std::vector<uint8_t> bytes = write_small_file(32);
  ASSERT_LT(bytes.size(), 4096u);
  std::vector<uint8_t> storage;
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto file = parse(std::span(bytes).first(n), storage);
    ASSERT_FALSE(file) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(file.error().code, ErrorCode::kFormat) << n << ": " << file.error().message;
    ASSERT_TRUE(file.error().file_offset.has_value());
    EXPECT_LE(*file.error().file_offset, n) << file.error().message;
  }
}

TEST(GgufReaderSweep, EveryByteFlippedParsesOrFailsCleanly) {
  const std::vector<uint8_t> bytes = write_small_file(32);
  std::vector<uint8_t> flipped;
  std::vector<uint8_t> storage;
  size_t failures = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    flipped = bytes;
    flipped[i] ^= 0xff;
    auto file = parse(flipped, storage);
    SCOPED_TRACE("byte " + std::to_string(i));
    expect_clean_failure_or_consistent_file(file, flipped.size());
    failures += file ? 0 : 1;
  }
  EXPECT_GT(failures, 0u);
  EXPECT_LT(failures, bytes.size());  // flips inside tensor data and padding still parse
}

}  // namespace
}  // namespace hetmoe::gguf

namespace hetmoe::gguf {
namespace {

TEST(GgufReaderLoadModes, MemoryAndMmapGiveTheSameTensorBytes) {
  const std::string path = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
  auto mapped = File::open(path, File::LoadMode::kMmap);
  auto loaded = File::open(path, File::LoadMode::kMemory);
  auto automatic = File::open(path, File::LoadMode::kAuto);
  ASSERT_TRUE(mapped.has_value() && loaded.has_value() && automatic.has_value());
  EXPECT_FALSE(mapped->in_memory());
  EXPECT_TRUE(loaded->in_memory());
  EXPECT_TRUE(automatic->in_memory());  // 6.5 MB fits in any test machine's RAM
  ASSERT_EQ(mapped->tensors().size(), loaded->tensors().size());
  for (size_t i = 0; i < mapped->tensors().size(); ++i) {
    const TensorInfo& a = mapped->tensors()[i];
    const TensorInfo& b = loaded->tensors()[i];
    ASSERT_EQ(a.num_bytes, b.num_bytes);
    ASSERT_NE(a.data, b.data);
    ASSERT_EQ(std::memcmp(a.data, b.data, a.num_bytes), 0) << a.name;
  }
}

TEST(GgufReaderLoadModes, TruncatedFileLoadedIntoMemoryIsTheSameFormatError) {
  const std::string path = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string cut = ::testing::TempDir() + "/cut-memory.gguf";
  std::ofstream(cut, std::ios::binary).write(bytes.data(), 1 << 20);
  auto f = File::open(cut, File::LoadMode::kMemory);
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code, ErrorCode::kFormat);
  EXPECT_NE(f.error().message.find("token_embd.weight"), std::string::npos) << f.error().message;
}

}  // namespace
}  // namespace hetmoe::gguf
