#include "runtime/model/gguf_writer.h"

#include <cerrno>
#include <cstring>

#include "runtime/model/gguf.h"

namespace hetmoe::gguf {
namespace {

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

Writer::Writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment_ != kDefaultAlignment) add_u32("general.alignment", alignment_);
}

Writer::~Writer() {
  if (file_) std::fclose(file_);
}

void Writer::begin_kv(std::string_view key, uint32_t type) {
  ++num_kv_;
  put_string(kv_blob_, key);
  put<uint32_t>(kv_blob_, type);
}

void Writer::add_u8(std::string_view key, uint8_t v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kUint8));
  put<uint8_t>(kv_blob_, v);
}
void Writer::add_u32(std::string_view key, uint32_t v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kUint32));
  put<uint32_t>(kv_blob_, v);
}
void Writer::add_i32(std::string_view key, int32_t v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kInt32));
  put<int32_t>(kv_blob_, v);
}
void Writer::add_u64(std::string_view key, uint64_t v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kUint64));
  put<uint64_t>(kv_blob_, v);
}
void Writer::add_f32(std::string_view key, float v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kFloat32));
  put<float>(kv_blob_, v);
}
void Writer::add_bool(std::string_view key, bool v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kBool));
  put<uint8_t>(kv_blob_, v ? 1 : 0);
}
void Writer::add_string(std::string_view key, std::string_view v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kString));
  put_string(kv_blob_, v);
}
void Writer::add_string_array(std::string_view key, std::span<const std::string> v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kArray));
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::kString));
  put<uint64_t>(kv_blob_, v.size());
  for (const auto& s : v) put_string(kv_blob_, s);
}
void Writer::add_i32_array(std::string_view key, std::span<const int32_t> v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kArray));
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::kInt32));
  put<uint64_t>(kv_blob_, v.size());
  for (int32_t x : v) put<int32_t>(kv_blob_, x);
}
void Writer::add_f32_array(std::string_view key, std::span<const float> v) {
  begin_kv(key, static_cast<uint32_t>(ValueType::kArray));
  put<uint32_t>(kv_blob_, static_cast<uint32_t>(ValueType::kFloat32));
  put<uint64_t>(kv_blob_, v.size());
  for (float x : v) put<float>(kv_blob_, x);
}

uint64_t Writer::add_tensor(std::string_view name, TensorType type, std::span<const uint64_t> shape) {
  const auto& traits = tensor_type_traits(type);
  uint64_t num_elements = 1;
  for (uint64_t d : shape) num_elements *= d;
  const uint64_t num_bytes = num_elements / traits.block_elems * traits.block_bytes;
  data_bytes_ = align_up(data_bytes_, alignment_);
  tensors_.push_back(PendingTensor{std::string(name), type, {shape.begin(), shape.end()}, data_bytes_, num_bytes});
  data_bytes_ += num_bytes;
  return num_bytes;
}

uint64_t Writer::header_bytes() const {
  uint64_t n = 4 + 4 + 8 + 8 + kv_blob_.size();
  for (const auto& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
  return align_up(n, alignment_);
}

uint64_t Writer::total_bytes() const { return header_bytes() + data_bytes_; }

Status Writer::open_file(const std::string& path) {
  path_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) return make_error(ErrorCode::kIo, path + ": cannot create: " + std::strerror(errno));
  static thread_local std::vector<char> buffer;  // large stdio buffer: fewer syscalls for 12 GB
  buffer.resize(8u << 20);
  std::setvbuf(file_, buffer.data(), _IOFBF, buffer.size());
  return {};
}

void Writer::open_memory(std::vector<uint8_t>* out) {
  mem_ = out;
  mem_->clear();
}

Status Writer::write_raw(const void* data, size_t n) {
  if (mem_) {
    const auto* p = static_cast<const uint8_t*>(data);
    mem_->insert(mem_->end(), p, p + n);
    return {};
  }
  if (!file_) return make_error(ErrorCode::kInvalidArgument, "gguf writer: no output opened");
  if (std::fwrite(data, 1, n, file_) != n)
    return make_error(ErrorCode::kIo, path_ + ": write failed: " + std::strerror(errno));
  return {};
}

Status Writer::write_padding(uint64_t n) {
  static const uint8_t zeros[256] = {};
  while (n > 0) {
    const size_t k = n < sizeof(zeros) ? static_cast<size_t>(n) : sizeof(zeros);
    if (auto s = write_raw(zeros, k); !s) return s;
    n -= k;
  }
  return {};
}

Status Writer::write_header() {
  std::vector<uint8_t> head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, num_kv_);
  head.insert(head.end(), kv_blob_.begin(), kv_blob_.end());
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.shape.size()));
    for (uint64_t d : t.shape) put<uint64_t>(head, d);
    put<uint32_t>(head, static_cast<uint32_t>(t.type));
    put<uint64_t>(head, t.offset);
  }
  head.resize(align_up(head.size(), alignment_), 0);
  header_written_ = true;
  current_tensor_ = 0;
  current_written_ = 0;
  data_written_ = 0;
  return write_raw(head.data(), head.size());
}

Status Writer::write_tensor_data(std::span<const uint8_t> chunk) {
  if (!header_written_) return make_error(ErrorCode::kInvalidArgument, "gguf writer: header not written");
  if (chunk.empty()) return {};
  // Skip past completed tensors (a zero-sized tensor is complete from the start).
  while (current_tensor_ < tensors_.size() && current_written_ == tensors_[current_tensor_].num_bytes) {
    ++current_tensor_;
    current_written_ = 0;
  }
  if (current_tensor_ >= tensors_.size())
    return make_error(ErrorCode::kInvalidArgument, "gguf writer: more data than tensors declared");
  const PendingTensor& t = tensors_[current_tensor_];
  if (current_written_ == 0) {
    if (auto s = write_padding(t.offset - data_written_); !s) return s;
    data_written_ = t.offset;
  }
  if (current_written_ + chunk.size() > t.num_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      "gguf writer: chunk of " + std::to_string(chunk.size()) + " bytes overruns tensor '" + t.name +
                          "' (" + std::to_string(t.num_bytes - current_written_) + " bytes left)");
  current_written_ += chunk.size();
  data_written_ += chunk.size();
  return write_raw(chunk.data(), chunk.size());
}

Status Writer::finish() {
  while (current_tensor_ < tensors_.size() && current_written_ == tensors_[current_tensor_].num_bytes) {
    ++current_tensor_;
    current_written_ = 0;
  }
  if (current_tensor_ < tensors_.size())
    return make_error(ErrorCode::kInvalidArgument,
                      "gguf writer: tensor '" + tensors_[current_tensor_].name + "' incomplete (" +
                          std::to_string(current_written_) + " of " +
                          std::to_string(tensors_[current_tensor_].num_bytes) + " bytes)");
  if (file_) {
    const bool ok = std::fflush(file_) == 0;
    const int close_rc = std::fclose(file_);
    file_ = nullptr;
    if (!ok || close_rc != 0) return make_error(ErrorCode::kIo, path_ + ": close failed: " + std::strerror(errno));
  }
  return {};
}

}  // namespace hetmoe::gguf
