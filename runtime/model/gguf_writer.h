#pragma once
// Streaming GGUF v3 writer (format in runtime/model/gguf.h). Metadata and tensor infos are declared first;
// then the header is written and each tensor's data is streamed in declaration order, in chunks of any
// size, so a 12 GB file never has to be held in memory. Padding between tensors is inserted by the writer.

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/expected.h"
#include "runtime/base/ggml_types.h"

namespace hetmoe::gguf {

class Writer {
 public:
  explicit Writer(uint32_t alignment = 32);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Metadata, in the order written. (general.alignment is added automatically if alignment != 32.)
  void add_u8(std::string_view key, uint8_t v);
  void add_u32(std::string_view key, uint32_t v);
  void add_i32(std::string_view key, int32_t v);
  void add_u64(std::string_view key, uint64_t v);
  void add_f32(std::string_view key, float v);
  void add_bool(std::string_view key, bool v);
  void add_string(std::string_view key, std::string_view v);
  void add_string_array(std::string_view key, std::span<const std::string> v);
  void add_i32_array(std::string_view key, std::span<const int32_t> v);
  void add_f32_array(std::string_view key, std::span<const float> v);

  /// Declares a tensor; shape in ggml order (ne0 contiguous), 1..4 dims, ne0 a multiple of the
  /// type's block size. Returns its size in bytes.
  uint64_t add_tensor(std::string_view name, TensorType type, std::span<const uint64_t> shape);

  /// Bytes of everything before the data section (header, metadata, tensor infos, padding).
  uint64_t header_bytes() const;
  /// Total file size once every tensor is written.
  uint64_t total_bytes() const;

  /// Output to a file (created/truncated) or to memory. Call exactly one, before write_header().
  Status open_file(const std::string& path);
  void open_memory(std::vector<uint8_t>* out);

  Status write_header();
  /// Appends the next chunk of tensor data; a tensor may be split over several calls, but a call never
  /// spans two tensors. Errors: kInvalidArgument if more bytes are given than the current tensor has.
  Status write_tensor_data(std::span<const uint8_t> chunk);
  /// Checks every tensor was written completely and closes the file.
  Status finish();

 private:
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<uint64_t> shape;
    uint64_t offset;
    uint64_t num_bytes;
  };
  Status write_raw(const void* data, size_t n);
  Status write_padding(uint64_t n);
  void begin_kv(std::string_view key, uint32_t type);

  uint32_t alignment_;
  uint64_t num_kv_ = 0;
  std::vector<uint8_t> kv_blob_;  // serialized metadata, excluding general.alignment
  std::vector<PendingTensor> tensors_;
  uint64_t data_bytes_ = 0;  // data section size so far (with padding)

  std::FILE* file_ = nullptr;
  std::string path_;
  std::vector<uint8_t>* mem_ = nullptr;
  size_t current_tensor_ = 0;
  uint64_t current_written_ = 0;
  uint64_t data_written_ = 0;  // bytes written into the data section, padding included
  bool header_written_ = false;
};

}  // namespace hetmoe::gguf
