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
    kAuto,    // kMemory when the file and a reserve fit in what the process can use (choose_load_mode), else kMmap
  };

  /// Bytes kAuto keeps free beside the file by default: KV cache, activations and buffers of a run at a default
  /// context (the 20b at 8,192 tokens needs about 0.5 GiB; the rest is margin for the desktop's fluctuations).
  static constexpr uint64_t kDefaultReserveBytes = 2ull << 30;

  /// kAuto's rule, bytes: kMemory when file_bytes + reserve_bytes ≤ room_bytes (room: what the process can use,
  /// profiler::MemoryRoom::bytes(): min(MemAvailable, the cgroup's room)), else kMmap. room 0 (unknown) → kMmap.
  static LoadMode choose_load_mode(uint64_t file_bytes, uint64_t room_bytes, uint64_t reserve_bytes);

  /// Whether a copy into memory drops the file's page cache chunk by chunk as it goes (posix_fadvise DONTNEED), so
  /// the file is never held twice: when the copy and the cached file together would not fit in room
  /// (2 · file_bytes + reserve_bytes > room_bytes), or when a cgroup limit applies (its page cache is charged to
  /// the process). Otherwise the cache is kept, so the next run loads from memory rather than disk.
  static bool drop_cache_while_copying(uint64_t file_bytes, uint64_t room_bytes, uint64_t reserve_bytes,
                                       bool cgroup_limited);

  /// Called while the file is read into memory (kMemory): bytes read so far and the file size, in bytes; at least
  /// once at 0 and once at the end. Not called for a mapped file (nothing is read up front).
  using LoadProgress = std::function<void(uint64_t bytes_done, uint64_t total_bytes)>;

  /// Opens and parses `path` (mapped by default). Errors: kIo (open/stat/mmap/read/allocation), kFormat,
  /// kUnsupported.
  /// `reserve_bytes`: kAuto's reserve (choose_load_mode).
  static Expected<File> open(const std::string& path, LoadMode mode = LoadMode::kMmap,
                             const LoadProgress& progress = {}, uint64_t reserve_bytes = kDefaultReserveBytes);

  /// How open made the bytes addressable and why, one line for start-up output: e.g. "copied into memory (12.1 GB
  /// file + 2.0 GiB reserve fit in 20.3 GiB: ...)" or "mapped (...)".
  const std::string& load_note() const { return load_note_; }

  /// File byte range [offset, offset + num_bytes).
  struct ByteRange {
    uint64_t offset = 0;
    uint64_t num_bytes = 0;
  };

  /// What make_resident did, bytes.
  struct ResidentResult {
    uint64_t resident_bytes = 0;  // copied into anonymous memory (page-rounded ranges, merged)
    uint64_t locked_bytes = 0;    // of those, locked with mlock (0 when RLIMIT_MEMLOCK refused)
    std::string lock_note;        // why not locked, when locked_bytes < resident_bytes; else empty
  };

  /// For a mapped file (not in_memory()): replaces the pages of `ranges` (rounded out to whole pages, merged) with
  /// anonymous copies of the same bytes at the same addresses (huge pages advised), so they stay in memory whatever
  /// the page cache does, and locks them (mlock) when `lock` and RLIMIT_MEMLOCK allow. Tensor pointers stay valid;
  /// the rest of the file stays paged from disk. The file's page cache of each range is dropped after the copy.
  /// `progress` as for open (bytes of the ranges). Errors: kIo naming the file and offset (reopen, mmap, read);
  /// kInvalidArgument for a range past the end of the file. A file in memory already returns {} with nothing done.
  /// Logically const: the bytes at every address stay the same.
  Expected<ResidentResult> make_resident(std::vector<ByteRange> ranges, bool lock,
                                         const LoadProgress& progress = {}) const;

  /// For a mapped file: drops this process's pages of `ranges` (whole pages inside each range, not those made
  /// resident) with madvise(MADV_DONTNEED); the bytes stay readable (a later read faults them in from the file
  /// again). For weights copied to a GPU, which the CPU no longer reads. Returns the bytes released; 0 for a file
  /// in memory (anonymous pages cannot be refetched) or from_memory.
  uint64_t release_pages(std::span<const ByteRange> ranges) const;
  /// Bytes make_resident has copied into anonymous memory so far (page-rounded; 0 for a file in memory).
  uint64_t resident_bytes() const;
  /// For a file in memory (in_memory()): makes its pages writable, calls `rewrite` (which may change tensor bytes
  /// through their data pointers, e.g. an in-memory layout: runtime/model/weights_repack.h), and makes them read-only
  /// again. Not logically const: the caller owns what the bytes then mean. Errors: kUnsupported for a mapped file
  /// (its pages are the page cache's); kIo naming the file when mprotect fails (rewrite not called).
  Status rewrite_in_memory(const std::function<void()>& rewrite) const;
  /// For a mapped file with resident ranges (make_resident): makes those ranges writable, calls `rewrite` (which may
  /// change bytes inside them only, as rewrite_in_memory's), and makes them read-only again. Errors: kUnsupported for
  /// a file in memory or one with nothing resident; kIo naming the file when mprotect fails (rewrite not called).
  Status rewrite_resident(const std::function<void()>& rewrite) const;
  /// Whether the file's bytes [offset, offset + num_bytes) are this process's own memory: the whole file when
  /// in_memory(), else inside one range make_resident copied.
  bool is_resident(uint64_t offset, uint64_t num_bytes) const;

  /// True when the bytes live in anonymous memory (LoadMode::kMemory, or kAuto that chose it).
  bool in_memory() const { return in_memory_; }

  /// The mode open was asked for (kAuto when it chose): a RAM tier is planned only for a file kAuto mapped.
  LoadMode requested_mode() const { return requested_mode_; }

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
  std::string load_note_;
  LoadMode requested_mode_ = LoadMode::kMmap;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  friend class Parser;
};

}  // namespace hetmoe::gguf
