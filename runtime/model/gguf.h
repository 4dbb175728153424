#pragma once
// GGUF v2/v3 reader: memory-mapped, validated, zero-copy tensor views.
//
// Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian only).
//   header    : magic "GGUF" (u32 0x46554747), version u32 (2 or 3), n_tensors u64, n_kv u64
//   kv[n_kv]  : key (gguf string), value type u32, value
//   ti[n_ten] : name (gguf string), n_dims u32 (1..4), ne[n_dims] u64, type u32, offset u64
//   padding to general.alignment (u32 key, default 32, power of two), then the data section;
//   each tensor's offset is relative to the data section start and a multiple of the alignment.
//   gguf string = u64 length + bytes (no terminator).
//
// Every field is validated before use (hostile input is normal input): counts against the bytes left,
// string/array lengths, value types, duplicate keys/tensor names, dims overflow, types, offsets and
// sizes inside the data section, overlaps, alignment. A failure is an Error with code kFormat or
// kUnsupported (kIo for open/mmap failures), the file offset where it was found, and a message naming
// the file, the key/tensor and what was expected. No allocation is sized by an unchecked field.
// Choices where the format is silent: BOOL values (and BOOL array elements) must be 0 or 1; a dimension may be 0
// (a tensor with no bytes, which overlaps nothing); a file without tensors may end before the padding that follows
// its tensor infos (data_offset() is then the file size). Tensor data is never read by the parser.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/expected.h"
#include "runtime/base/ggml_types.h"

namespace hetmoe::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;

enum class ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

/// "UINT32", "STRING", ... ("type<id>" for an unknown id).
std::string value_type_name(uint32_t type_id);

/// One metadata value. Scalars are decoded; strings and arrays are views into the mapping.
struct Value {
  ValueType type = ValueType::kUint8;
  // Scalars (the one matching `type` is set; integers are widened).
  uint64_t u64 = 0;      // kUint8/16/32/64, kBool (0/1)
  int64_t i64 = 0;       // kInt8/16/32/64
  double f64 = 0.0;      // kFloat32/64
  std::string_view str;  // kString
  // Arrays (type == kArray). Nested arrays are rejected at parse time (kUnsupported).
  ValueType array_type = ValueType::kUint8;
  uint64_t array_count = 0;
  const uint8_t* array_data = nullptr;          // first element (numeric arrays), little-endian
  std::vector<std::string_view> array_strings;  // array_type == kString: all elements, validated
};

struct KeyValue {
  std::string key;
  Value value;
  uint64_t file_offset = 0;  // offset of the key's length field
};

/// One tensor. Shape in ggml order: ne[0] is contiguous; {K, N} = N rows of K elements.
struct TensorInfo {
  std::string name;
  TensorType type = TensorType::kF32;
  uint32_t n_dims = 0;
  uint64_t ne[kMaxDims] = {1, 1, 1, 1};  // dims beyond n_dims are 1
  uint64_t offset = 0;    // bytes, relative to the data section
  uint64_t num_bytes = 0; // bytes of tensor data
  uint64_t num_elements = 0;
  const uint8_t* data = nullptr;  // zero-copy view into the mapping, num_bytes long
  uint64_t info_file_offset = 0;  // where this tensor's info record starts in the file
};

/// A parsed, validated GGUF file. Move-only; owns the mapping (when opened from a path).
class File {
 public:
  /// How the bytes of a file are made addressable.
  enum class LoadMode {
    kMmap,    // map the file read-only (pages come from the page cache on first touch; 4 KiB pages)
    kMemory,  // read it into anonymous memory advised for transparent huge pages (fewer TLB misses: the CPU
              // kernels stream weights about 30 % faster than from 4 KiB file pages)
    kAuto,    // kMemory when the file fits in MemAvailable with 2 GiB to spare, else kMmap
  };

  /// Called while the file is read into memory (kMemory): bytes read so far and the file size, in bytes; at least
  /// once at 0 and once at the end. Not called for a mapped file (nothing is read up front).
  using LoadProgress = std::function<void(uint64_t bytes_done, uint64_t total_bytes)>;

  /// Opens and parses `path` (mapped by default). Errors: kIo (open/stat/mmap/read/allocation), kFormat,
  /// kUnsupported.
  static Expected<File> open(const std::string& path, LoadMode mode = LoadMode::kMmap,
                             const LoadProgress& progress = {});

  /// True when the bytes live in anonymous memory (LoadMode::kMemory, or kAuto that chose it).
  bool in_memory() const { return in_memory_; }

  /// Parses a buffer the caller keeps alive for the File's lifetime (tests, fuzzing).
  /// `name` is used in error messages in place of a path.
  static Expected<File> from_memory(std::span<const uint8_t> bytes, std::string name = "<memory>");

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section in the file

  const std::vector<KeyValue>& metadata() const { return kvs_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  /// nullptr if absent.
  const KeyValue* find(std::string_view key) const;
  const TensorInfo* find_tensor(std::string_view name) const;

  // Typed getters. Errors: kMissing if absent, kFormat if the stored type does not fit
  // (any unsigned/signed integer type converts if the value is in range; FLOAT32/FLOAT64 for get_f32).
  Expected<uint32_t> get_u32(std::string_view key) const;
  Expected<uint64_t> get_u64(std::string_view key) const;
  Expected<float> get_f32(std::string_view key) const;
  Expected<bool> get_bool(std::string_view key) const;
  Expected<std::string_view> get_string(std::string_view key) const;
  /// STRING array elements (views into the mapping).
  Expected<std::span<const std::string_view>> get_string_array(std::string_view key) const;
  /// A numeric array converted to int32 (INT32/UINT32/INT8/UINT8/... elements in int32 range).
  Expected<std::vector<int32_t>> get_i32_array(std::string_view key) const;
  /// A FLOAT32 array.
  Expected<std::vector<float>> get_f32_array(std::string_view key) const;

 private:
  File() = default;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  bool in_memory_ = false;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  friend class Parser;
};

}  // namespace hetmoe::gguf
