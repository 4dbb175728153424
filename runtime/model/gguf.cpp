#include "runtime/model/gguf.h"

#include "profiler/bandwidth.h"
#include "profiler/memory_limit.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_map>

namespace hetmoe::gguf {

static_assert(std::endian::native == std::endian::little, "the GGUF reader decodes little-endian fields in place");

/// An mmap'ed file region, unmapped on destruction.
struct File::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  std::vector<File::ByteRange> resident;  // page-rounded ranges make_resident replaced with anonymous copies
  Mapping(void* a, size_t n) : addr(a), size(n) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

namespace {

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                 // empty key, value type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, one ne, type, offset
constexpr uint64_t kStringLengthBytes = 8;
constexpr uint32_t kMaxValueTypeId = 12;
constexpr size_t kMaxQuotedBytes = 96;
constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
// Counts are checked against the bytes left before anything is reserved, and reservations are capped as well:
// beyond the cap, tables grow only as records are actually parsed.
constexpr uint64_t kMaxReserve = uint64_t{1} << 16;

size_t capped_reserve(uint64_t n) { return static_cast<size_t>(std::min(n, kMaxReserve)); }

/// Size in bytes of a scalar value type; 0 for STRING, ARRAY and unknown ids.
uint64_t scalar_size(uint32_t type_id) {
  switch (static_cast<ValueType>(type_id)) {
    case ValueType::kUint8: case ValueType::kInt8: case ValueType::kBool: return 1;
    case ValueType::kUint16: case ValueType::kInt16: return 2;
    case ValueType::kUint32: case ValueType::kInt32: case ValueType::kFloat32: return 4;
    case ValueType::kUint64: case ValueType::kInt64: case ValueType::kFloat64: return 8;
    case ValueType::kString: case ValueType::kArray: return 0;
  }
  return 0;
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::kUint8: case ValueType::kInt8: case ValueType::kUint16: case ValueType::kInt16:
    case ValueType::kUint32: case ValueType::kInt32: case ValueType::kUint64: case ValueType::kInt64: return true;
    default: return false;
  }
}

bool is_signed_type(ValueType t) {
  return t == ValueType::kInt8 || t == ValueType::kInt16 || t == ValueType::kInt32 || t == ValueType::kInt64;
}

/// Decodes one little-endian integer element of an integer type: sign-extended for signed types.
int64_t decode_signed(const uint8_t* p, ValueType t) {
  switch (t) {
    case ValueType::kInt8: { int8_t v; std::memcpy(&v, p, 1); return v; }
    case ValueType::kInt16: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case ValueType::kInt32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    default: { int64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

uint64_t decode_unsigned(const uint8_t* p, ValueType t) {
  switch (t) {
    case ValueType::kUint8: return *p;
    case ValueType::kUint16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case ValueType::kUint32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

/// Names of the ggml type ids hetmoe does not read, for error messages ("" where the id is unused).
std::string_view ggml_type_label(uint32_t id) {
  static constexpr std::string_view kNames[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",  "",       "",     "Q5_0",   "Q5_1",   "Q8_0",   "Q8_1",
      "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",  "Q6_K",   "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS", "I8",    "I16",  "I32",    "I64",    "F64",    "IQ1_M",
      "BF16",    "",       "",        "",      "TQ1_0",  "TQ2_0", "",      "",       "",       "MXFP4"};
  return id < std::size(kNames) ? kNames[id] : std::string_view();
}

/// `s` in single quotes, with bytes outside printable ASCII escaped and long text cut short.
std::string quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  const size_t n = std::min(s.size(), kMaxQuotedBytes);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > n) out += "...(" + std::to_string(s.size()) + " bytes)";
  out += "'";
  return out;
}

std::string hex32(uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += kHex[(v >> shift) & 15];
  return out;
}

/// "ARRAY of STRING" for arrays, the plain type name otherwise.
std::string type_label(const Value& v) {
  std::string s = value_type_name(static_cast<uint32_t>(v.type));
  if (v.type == ValueType::kArray) s += " of " + value_type_name(static_cast<uint32_t>(v.array_type));
  return s;
}

std::string supported_tensor_types() {
  std::string s;
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kQ8_0, TensorType::kBF16, TensorType::kMXFP4}) {
    if (!s.empty()) s += ", ";
    s += tensor_type_traits(t).name;
  }
  return s;
}

}  // namespace

std::string value_type_name(uint32_t type_id) {
  static constexpr std::string_view kNames[] = {"UINT8", "INT8",   "UINT16", "INT16", "UINT32", "INT32",  "FLOAT32",
                                                "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64", "FLOAT64"};
  if (type_id < std::size(kNames)) return std::string(kNames[type_id]);
  return "type" + std::to_string(type_id);
}

/// Parses and validates the bytes of a File (base_, size_, path_ set) into its metadata and tensor tables.
/// Every read is bounds-checked against the file size; the first problem found ends the parse with an Error.
class Parser {
 public:
  explicit Parser(File& file) : f_(file), base_(file.base_), size_(file.size_) {}

  Status parse() {
    if (!parse_header() || !parse_metadata() || !parse_tensor_infos() || !place_tensor_data()) return *error_;
    return {};
  }

 private:
  enum class Section { kHeader, kKey, kValue, kTensorInfo };

  // ---- errors ----

  bool fail(ErrorCode code, uint64_t offset, const std::string& what) {
    error_ = make_error(code, f_.path_ + ": " + what, offset);
    return false;
  }

  /// Describes the record being parsed, for truncation messages.
  std::string where() const {
    switch (section_) {
      case Section::kHeader: return "the header";
      case Section::kKey:
        return "metadata entry #" + std::to_string(index_) + (subject_.data() ? " (key " + quote(subject_) + ")" : "");
      case Section::kValue: return "the value of key " + quote(subject_);
      case Section::kTensorInfo:
        return "tensor info #" + std::to_string(index_) + (subject_.data() ? " (" + quote(subject_) + ")" : "");
    }
    return {};
  }

  // ---- bounds-checked reads at pos_ ----

  uint64_t remaining() const { return size_ - pos_; }

  bool need(uint64_t n, const char* what) {
    if (n <= remaining()) return true;
    return fail(ErrorCode::kFormat, pos_,
                "truncated in " + where() + ": " + what + " needs " + std::to_string(n) + " bytes at offset " +
                    std::to_string(pos_) + " but the file ends at " + std::to_string(size_));
  }

  template <class T>
  bool read(T& out, const char* what) {
    if (!need(sizeof(T), what)) return false;
    std::memcpy(&out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  bool read_string(std::string_view& out, const char* what) {
    const uint64_t len_pos = pos_;
    uint64_t len = 0;
    if (!read(len, what)) return false;
    if (len > remaining()) {
      return fail(ErrorCode::kFormat, len_pos,
                  "truncated in " + where() + ": " + what + " " + std::to_string(len) + " at offset " +
                      std::to_string(len_pos) + " exceeds the " + std::to_string(remaining()) +
                      " bytes left in the file");
    }
    out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return true;
  }

  // ---- header ----

  bool parse_header() {
    section_ = Section::kHeader;
    if (!need(4, "the magic")) return false;
    if (std::memcmp(base_, "GGUF", 4) != 0) {
      uint32_t magic = 0;
      std::memcpy(&magic, base_, 4);
      return fail(ErrorCode::kFormat, 0,
                  "bad magic " + quote(std::string_view(reinterpret_cast<const char*>(base_), 4)) + " (" +
                      hex32(magic) + "), expected 'GGUF' (not a GGUF file)");
    }
    pos_ = 4;
    uint32_t version = 0;
    if (!read(version, "the version")) return false;
    f_.version_ = version;
    if (version != 2 && version != 3) {
      const uint32_t swapped = __builtin_bswap32(version);
      if (swapped >= 1 && swapped <= 3) {
        return fail(ErrorCode::kUnsupported, 4,
                    "big-endian GGUF is not supported (version field " + hex32(version) + " reads as " +
                        std::to_string(swapped) + " byte-swapped; expected a little-endian file)");
      }
      return fail(ErrorCode::kUnsupported, 4,
                  "GGUF version " + std::to_string(version) + " is not supported (expected 2 or 3)");
    }
    if (!read(n_tensors_, "the tensor count") || !read(n_kv_, "the metadata count")) return false;
    const uint64_t left = remaining();
    if (n_tensors_ > left / kMinTensorInfoBytes) {
      return fail(ErrorCode::kFormat, 8,
                  "tensor count " + std::to_string(n_tensors_) + " is impossible: each tensor info takes at least " +
                      std::to_string(kMinTensorInfoBytes) + " bytes and only " + std::to_string(left) +
                      " bytes follow the header");
    }
    if (n_kv_ > left / kMinKvBytes) {
      return fail(ErrorCode::kFormat, 16,
                  "metadata count " + std::to_string(n_kv_) + " is impossible: each entry takes at least " +
                      std::to_string(kMinKvBytes) + " bytes and only " + std::to_string(left) +
                      " bytes follow the header");
    }
    return true;
  }

  // ---- metadata ----

  bool parse_metadata() {
    f_.kvs_.reserve(capped_reserve(n_kv_));  // n_kv_ <= file size / kMinKvBytes
    std::unordered_map<std::string_view, uint64_t> seen;
    seen.reserve(capped_reserve(n_kv_));
    for (uint64_t i = 0; i < n_kv_; ++i) {
      section_ = Section::kKey;
      index_ = i;
      subject_ = {};
      const uint64_t kv_pos = pos_;
      std::string_view key;
      if (!read_string(key, "the key length")) return false;
      if (auto [it, inserted] = seen.emplace(key, kv_pos); !inserted) {
        return fail(ErrorCode::kFormat, kv_pos,
                    "duplicate key " + quote(key) + " (first defined at offset " + std::to_string(it->second) +
                        "; expected each key once)");
      }
      subject_ = key;
      const uint64_t type_pos = pos_;
      uint32_t type_id = 0;
      if (!read(type_id, "the value type")) return false;
      section_ = Section::kValue;
      KeyValue kv;
      kv.key = std::string(key);
      kv.file_offset = kv_pos;
      const uint64_t value_pos = pos_;
      if (!read_value(type_id, type_pos, kv.value)) return false;
      if (key == "general.alignment" && !check_alignment(kv.value, type_pos, value_pos)) return false;
      f_.kvs_.push_back(std::move(kv));
    }
    return true;
  }

  bool check_alignment(const Value& v, uint64_t type_pos, uint64_t value_pos) {
    if (v.type != ValueType::kUint32) {
      return fail(ErrorCode::kFormat, type_pos,
                  "key 'general.alignment' has type " + type_label(v) + " (expected UINT32)");
    }
    if (v.u64 == 0 || !std::has_single_bit(v.u64)) {
      return fail(ErrorCode::kFormat, value_pos,
                  "general.alignment = " + std::to_string(v.u64) + " (expected a nonzero power of two)");
    }
    f_.alignment_ = static_cast<uint32_t>(v.u64);
    return true;
  }

  bool read_scalar(ValueType t, Value& v) {
    const uint64_t value_pos = pos_;
    const uint64_t n = scalar_size(static_cast<uint32_t>(t));
    if (!need(n, "the value")) return false;
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    switch (t) {
      case ValueType::kFloat32: { float x; std::memcpy(&x, p, 4); v.f64 = x; break; }
      case ValueType::kFloat64: std::memcpy(&v.f64, p, 8); break;
      case ValueType::kBool:
        if (*p > 1) {
          return fail(ErrorCode::kFormat, value_pos,
                      "key " + quote(subject_) + ": BOOL value " + std::to_string(*p) + " (expected 0 or 1)");
        }
        v.u64 = *p;
        break;
      default:
        if (is_signed_type(t)) v.i64 = decode_signed(p, t);
        else v.u64 = decode_unsigned(p, t);
        break;
    }
    return true;
  }

  bool read_value(uint32_t type_id, uint64_t type_pos, Value& v) {
    if (type_id > kMaxValueTypeId) {
      return fail(ErrorCode::kFormat, type_pos,
                  "key " + quote(subject_) + ": unknown value type id " + std::to_string(type_id) + " (expected 0.." +
                      std::to_string(kMaxValueTypeId) + ")");
    }
    v.type = static_cast<ValueType>(type_id);
    if (v.type == ValueType::kString) return read_string(v.str, "the string length");
    if (v.type != ValueType::kArray) return read_scalar(v.type, v);

    const uint64_t elem_pos = pos_;
    uint32_t elem_id = 0;
    if (!read(elem_id, "the array element type")) return false;
    if (elem_id == static_cast<uint32_t>(ValueType::kArray)) {
      return fail(ErrorCode::kUnsupported, elem_pos,
                  "key " + quote(subject_) + ": nested arrays are not supported (expected an array of scalars or "
                  "strings)");
    }
    if (elem_id > kMaxValueTypeId) {
      return fail(ErrorCode::kFormat, elem_pos,
                  "key " + quote(subject_) + ": unknown array element type id " + std::to_string(elem_id) +
                      " (expected 0.." + std::to_string(kMaxValueTypeId) + ")");
    }
    v.array_type = static_cast<ValueType>(elem_id);
    const uint64_t count_pos = pos_;
    if (!read(v.array_count, "the array length")) return false;
    const uint64_t elem_min = v.array_type == ValueType::kString ? kStringLengthBytes : scalar_size(elem_id);
    if (v.array_count > remaining() / elem_min) {
      return fail(ErrorCode::kFormat, count_pos,
                  "key " + quote(subject_) + ": array of " + std::to_string(v.array_count) + " " +
                      value_type_name(elem_id) + " needs at least " + std::to_string(elem_min) +
                      " bytes per element but only " + std::to_string(remaining()) + " bytes are left in the file");
    }
    if (v.array_type == ValueType::kString) {
      // count <= bytes left / 8; a vocabulary (~201k strings) fits under the larger cap in one allocation.
      v.array_strings.reserve(static_cast<size_t>(std::min(v.array_count, kMaxReserve * 16)));
      for (uint64_t i = 0; i < v.array_count; ++i) {
        std::string_view s;
        if (!read_string(s, "an array string length")) return false;
        v.array_strings.push_back(s);
      }
      return true;
    }
    v.array_data = base_ + pos_;
    if (v.array_type == ValueType::kBool) {
      for (uint64_t i = 0; i < v.array_count; ++i) {
        if (v.array_data[i] > 1) {
          return fail(ErrorCode::kFormat, pos_ + i,
                      "key " + quote(subject_) + ": BOOL array element " + std::to_string(i) + " is " +
                          std::to_string(v.array_data[i]) + " (expected 0 or 1)");
        }
      }
    }
    pos_ += v.array_count * elem_min;
    return true;
  }

  // ---- tensor infos ----

  bool parse_tensor_infos() {
    section_ = Section::kTensorInfo;
    subject_ = {};
    if (n_tensors_ > remaining() / kMinTensorInfoBytes) {
      return fail(ErrorCode::kFormat, 8,
                  "tensor count " + std::to_string(n_tensors_) + " needs at least " +
                      std::to_string(n_tensors_ * kMinTensorInfoBytes) + " bytes of tensor infos but only " +
                      std::to_string(remaining()) + " bytes follow the metadata (which ends at offset " +
                      std::to_string(pos_) + ")");
    }
    f_.tensors_.reserve(capped_reserve(n_tensors_));  // n_tensors_ <= bytes left / kMinTensorInfoBytes
    offset_field_pos_.reserve(capped_reserve(n_tensors_));
    std::unordered_map<std::string_view, uint64_t> seen;
    seen.reserve(capped_reserve(n_tensors_));
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      index_ = i;
      subject_ = {};
      TensorInfo t;
      t.info_file_offset = pos_;
      std::string_view name;
      if (!read_string(name, "the name length")) return false;
      subject_ = name;
      if (auto [it, inserted] = seen.emplace(name, t.info_file_offset); !inserted) {
        return fail(ErrorCode::kFormat, t.info_file_offset,
                    "duplicate tensor name " + quote(name) + " (first defined at offset " +
                        std::to_string(it->second) + "; expected each name once)");
      }
      t.name = std::string(name);
      const std::string label = "tensor " + quote(name);

      const uint64_t ndims_pos = pos_;
      if (!read(t.n_dims, "n_dims")) return false;
      if (t.n_dims < 1 || t.n_dims > kMaxDims) {
        return fail(ErrorCode::kFormat, ndims_pos,
                    label + ": n_dims = " + std::to_string(t.n_dims) + " (expected 1.." + std::to_string(kMaxDims) +
                        ")");
      }
      const uint64_t ne0_pos = pos_;
      uint64_t num_elements = 1;
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        const uint64_t ne_pos = pos_;
        if (!read(t.ne[d], "a dimension")) return false;
        if (t.ne[d] > kInt64Max) {
          return fail(ErrorCode::kFormat, ne_pos,
                      label + ": ne[" + std::to_string(d) + "] = " + std::to_string(t.ne[d]) +
                          " (expected at most INT64_MAX)");
        }
        if (__builtin_mul_overflow(num_elements, t.ne[d], &num_elements) || num_elements > kInt64Max) {
          return fail(ErrorCode::kFormat, ne_pos,
                      label + ": element count overflows at ne[" + std::to_string(d) + "] = " +
                          std::to_string(t.ne[d]) + " (expected a product of dimensions at most INT64_MAX)");
        }
      }
      t.num_elements = num_elements;

      const uint64_t type_pos = pos_;
      uint32_t type_id = 0;
      if (!read(type_id, "the tensor type")) return false;
      const std::optional<TensorTypeTraits> traits = tensor_type_traits(type_id);
      if (!traits) {
        const std::string_view ggml_name = ggml_type_label(type_id);
        return fail(ErrorCode::kUnsupported, type_pos,
                    label + ": type id " + std::to_string(type_id) +
                        (ggml_name.empty() ? "" : " (" + std::string(ggml_name) + ")") +
                        " is not supported (expected one of " + supported_tensor_types() + ")");
      }
      t.type = traits->type;
      if (t.ne[0] % traits->block_elems != 0) {
        return fail(ErrorCode::kFormat, ne0_pos,
                    label + ": ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                        std::string(traits->name) + " block size " + std::to_string(traits->block_elems));
      }
      if (__builtin_mul_overflow(num_elements / traits->block_elems, uint64_t{traits->block_bytes}, &t.num_bytes)) {
        return fail(ErrorCode::kFormat, type_pos,
                    label + ": size in bytes of " + std::to_string(num_elements) + " " + std::string(traits->name) +
                        " elements overflows 64 bits");
      }

      const uint64_t offset_pos = pos_;
      if (!read(t.offset, "the data offset")) return false;
      if (t.offset % f_.alignment_ != 0) {
        return fail(ErrorCode::kFormat, offset_pos,
                    label + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                        std::to_string(f_.alignment_));
      }
      offset_field_pos_.push_back(offset_pos);
      f_.tensors_.push_back(std::move(t));
    }
    return true;
  }

  // ---- data section ----

  bool place_tensor_data() {
    const uint64_t infos_end = pos_;
    const uint64_t a = f_.alignment_;
    const uint64_t pad = (a - infos_end % a) % a;
    if (pad > size_ - infos_end) {
      if (!f_.tensors_.empty()) {
        return fail(ErrorCode::kFormat, infos_end,
                    "truncated: the data section starts at offset " + std::to_string(infos_end) + " + " +
                        std::to_string(pad) + " bytes of padding (alignment " + std::to_string(a) +
                        ") but the file ends at " + std::to_string(size_));
      }
      f_.data_offset_ = size_;  // no tensors: the trailing padding may be missing
      return true;
    }
    f_.data_offset_ = infos_end + pad;
    const uint64_t data_size = size_ - f_.data_offset_;
    for (size_t i = 0; i < f_.tensors_.size(); ++i) {
      TensorInfo& t = f_.tensors_[i];
      uint64_t end = 0;
      if (__builtin_add_overflow(t.offset, t.num_bytes, &end)) {
        return fail(ErrorCode::kFormat, offset_field_pos_[i],
                    "tensor " + quote(t.name) + ": data offset " + std::to_string(t.offset) + " + size " +
                        std::to_string(t.num_bytes) + " overflows 64 bits (expected inside the data section of " +
                        std::to_string(data_size) + " bytes)");
      }
      if (end > data_size) {
        return fail(ErrorCode::kFormat, offset_field_pos_[i],
                    "tensor " + quote(t.name) + ": data [" + std::to_string(t.offset) + ", " + std::to_string(end) +
                        ") is out of range: the data section at offset " + std::to_string(f_.data_offset_) +
                        " has only " + std::to_string(data_size) + " bytes (file truncated?)");
      }
      t.data = base_ + f_.data_offset_ + t.offset;
    }
    std::vector<size_t> order(f_.tensors_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      return f_.tensors_[x].offset != f_.tensors_[y].offset ? f_.tensors_[x].offset < f_.tensors_[y].offset : x < y;
    });
    const TensorInfo* prev = nullptr;  // the non-empty tensor with the largest end so far
    for (size_t i : order) {
      const TensorInfo& t = f_.tensors_[i];
      if (t.num_bytes == 0) continue;
      if (prev && t.offset < prev->offset + prev->num_bytes) {
        return fail(ErrorCode::kFormat, offset_field_pos_[i],
                    "tensor " + quote(t.name) + ": data [" + std::to_string(t.offset) + ", " +
                        std::to_string(t.offset + t.num_bytes) + ") overlaps tensor " + quote(prev->name) + " [" +
                        std::to_string(prev->offset) + ", " + std::to_string(prev->offset + prev->num_bytes) +
                        ") (expected disjoint tensors)");
      }
      if (!prev || t.offset + t.num_bytes > prev->offset + prev->num_bytes) prev = &t;
    }
    return true;
  }

  File& f_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  Section section_ = Section::kHeader;
  uint64_t index_ = 0;
  std::string_view subject_;  // the key or tensor name being parsed, once read
  std::vector<uint64_t> offset_field_pos_;
  std::optional<Error> error_;
};

// ---- File ----

File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;
File::~File() = default;

namespace {

constexpr uint64_t kHugePage = 2ull << 20;

double gib(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << 30); }

/// Reads [offset, offset + size) of `fd` into `dst` in 64 MiB chunks. With drop_cache, each chunk's page cache is
/// dropped once copied (posix_fadvise DONTNEED), so the file is not held twice: the copy plus its cache. `progress`
/// gets done_before + bytes read so far of `total`.
Status read_range(int fd, const std::string& path, uint8_t* dst, uint64_t offset, uint64_t size, bool drop_cache,
                  const File::LoadProgress& progress, uint64_t done_before, uint64_t total) {
  constexpr uint64_t kChunk = 64ull << 20;
  for (uint64_t off = 0; off < size;) {
    if (progress) progress(done_before + off, total);
    const uint64_t want = std::min(kChunk, size - off);
    const ssize_t got =
        ::pread(fd, dst + off, static_cast<size_t>(want), static_cast<off_t>(offset + off));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return make_error(ErrorCode::kIo, path + ": read failed at offset " + std::to_string(offset + off) + ": " +
                                            (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
    if (drop_cache)
      ::posix_fadvise(fd, static_cast<off_t>(offset + off), static_cast<off_t>(got), POSIX_FADV_DONTNEED);
    off += static_cast<uint64_t>(got);
  }
  return {};
}

/// Maps `bytes` of `fd` read-only at a 2 MiB-aligned address (so ranges made resident later can use huge pages);
/// MAP_FAILED on failure with errno set.
void* map_file_aligned(int fd, size_t bytes) {
  const size_t span = bytes + kHugePage;
  void* reserve = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED) return MAP_FAILED;
  const auto base = reinterpret_cast<uintptr_t>(reserve);
  const uintptr_t aligned = (base + kHugePage - 1) / kHugePage * kHugePage;
  void* addr = ::mmap(reinterpret_cast<void*>(aligned), bytes, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    ::munmap(reserve, span);
    errno = err;
    return MAP_FAILED;
  }
  if (aligned > base) ::munmap(reserve, aligned - base);
  const uintptr_t end = aligned + bytes, reserve_end = base + span;
  const uintptr_t end_page = (end + 4095) / 4096 * 4096;
  if (reserve_end > end_page) ::munmap(reinterpret_cast<void*>(end_page), reserve_end - end_page);
  return addr;
}

}  // namespace

File::LoadMode File::choose_load_mode(uint64_t file_bytes, uint64_t room_bytes, uint64_t reserve_bytes) {
  if (room_bytes == 0) return LoadMode::kMmap;
  return file_bytes <= room_bytes && reserve_bytes <= room_bytes - file_bytes ? LoadMode::kMemory : LoadMode::kMmap;
}

bool File::drop_cache_while_copying(uint64_t file_bytes, uint64_t room_bytes, uint64_t reserve_bytes,
                                    bool cgroup_limited) {
  if (cgroup_limited) return true;
  const uint64_t need = 2 * file_bytes + reserve_bytes;
  return room_bytes < need;
}

Expected<File> File::open(const std::string& path, LoadMode mode, const LoadProgress& progress,
                          uint64_t reserve_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return make_error(ErrorCode::kIo, path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::kIo, path + ": not a regular file");
  }
  File file;
  file.path_ = path;
  file.size_ = static_cast<uint64_t>(st.st_size);
  file.requested_mode_ = mode;
  bool drop_cache = false;
  if (mode == LoadMode::kAuto || mode == LoadMode::kMemory) {
    const profiler::MemoryRoom room = profiler::memory_room();
    const bool auto_mode = mode == LoadMode::kAuto;
    if (auto_mode) mode = choose_load_mode(file.size_, room.bytes(), reserve_bytes);
    drop_cache = drop_cache_while_copying(file.size_, room.bytes(), reserve_bytes, room.cgroup.has_value());
    file.load_note_ = fmt::format(
        "{} ({:.1f} GiB file + {:.1f} GiB reserve {} {}{})",
        mode == LoadMode::kMemory ? "copied into memory" : "mapped, paged from disk", gib(file.size_),
        gib(reserve_bytes), mode == LoadMode::kMemory ? "fit in" : "exceed", room.describe(),
        !auto_mode ? ", --load memory asked" : mode == LoadMode::kMemory && drop_cache ? "; page cache dropped behind the copy" : "");
  } else {
    file.load_note_ = "mapped, paged from disk (--load mmap)";
  }
  if (file.size_ > 0 && mode == LoadMode::kMemory) {
    const auto bytes = static_cast<size_t>((file.size_ + kHugePage - 1) / kHugePage * kHugePage);
    void* addr = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return make_error(ErrorCode::kIo, path + ": cannot allocate " + std::to_string(bytes) +
                                            " bytes to load the file (try mmap): " + std::strerror(err));
    }
    file.mapping_ = std::make_unique<Mapping>(addr, bytes);
    ::madvise(addr, bytes, MADV_HUGEPAGE);  // advice only: without THP the copy still works
    if (drop_cache) ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (progress) progress(0, file.size_);
    if (Status s = read_range(fd, path, static_cast<uint8_t*>(addr), 0, file.size_, drop_cache, progress, 0,
                              file.size_);
        !s) {
      ::close(fd);
      return s.error();
    }
    if (progress) progress(file.size_, file.size_);
    ::mprotect(addr, bytes, PROT_READ);  // the weights are read-only from here on
    file.base_ = static_cast<const uint8_t*>(addr);
    file.in_memory_ = true;
  } else if (file.size_ > 0) {
    void* addr = map_file_aligned(fd, static_cast<size_t>(file.size_));
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return make_error(ErrorCode::kIo, path + ": cannot mmap " + std::to_string(file.size_) +
                                            " bytes: " + std::strerror(err));
    }
    file.mapping_ = std::make_unique<Mapping>(addr, static_cast<size_t>(file.size_));
    file.base_ = static_cast<const uint8_t*>(addr);
  }
  ::close(fd);
  Parser parser(file);
  if (Status s = parser.parse(); !s) return s.error();
  return file;
}

Expected<File::ResidentResult> File::make_resident(std::vector<ByteRange> ranges, bool lock,
                                                   const LoadProgress& progress) const {
  ResidentResult result;
  if (in_memory_ || mapping_ == nullptr || ranges.empty()) return result;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (ByteRange& r : ranges) {
    if (r.offset > size_ || r.num_bytes > size_ - r.offset)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: resident range [{}, {}) is past the end of the file ({} bytes)", path_,
                                    r.offset, r.offset + r.num_bytes, size_));
    const uint64_t begin = r.offset / page * page;
    const uint64_t end = std::min((r.offset + r.num_bytes + page - 1) / page * page, (size_ + page - 1) / page * page);
    r = {begin, end - begin};
  }
  std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> merged;
  for (const ByteRange& r : ranges) {
    if (r.num_bytes == 0) continue;
    if (!merged.empty() && r.offset <= merged.back().offset + merged.back().num_bytes)
      merged.back().num_bytes = std::max(merged.back().offset + merged.back().num_bytes, r.offset + r.num_bytes) -
                                merged.back().offset;
    else
      merged.push_back(r);
  }
  // Ranges made resident before (a second forward pass of the same model) are not copied again.
  std::erase_if(merged, [&](const ByteRange& r) {
    return std::any_of(mapping_->resident.begin(), mapping_->resident.end(), [&](const ByteRange& res) {
      return res.offset <= r.offset && r.offset + r.num_bytes <= res.offset + res.num_bytes;
    });
  });
  uint64_t total = 0;
  for (const ByteRange& r : merged) total += r.num_bytes;
  if (total == 0) return result;
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kIo, path_ + ": cannot reopen to load resident weights: " + std::strerror(errno));
  // RLIMIT_MEMLOCK bounds what an unprivileged process may lock; with CAP_IPC_LOCK it does not apply, so mlock is
  // tried whatever the limit says and its refusal reported.
  struct rlimit memlock {};
  const bool have_limit = ::getrlimit(RLIMIT_MEMLOCK, &memlock) == 0;
  uint64_t done = 0;
  if (progress) progress(0, total);
  for (const ByteRange& r : merged) {
    // The bytes read past the end of the file in the last page are zeros in the file mapping too.
    const uint64_t read_bytes = std::min(r.num_bytes, size_ - r.offset);
    auto* at = const_cast<uint8_t*>(base_) + r.offset;
    void* anon = ::mmap(at, r.num_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (anon == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      // MAP_FIXED failing leaves the old mapping in place: the weights are still readable from the file.
      return make_error(ErrorCode::kIo, fmt::format("{}: cannot allocate {} bytes for resident weights at offset {}: "
                                                    "{}", path_, r.num_bytes, r.offset, std::strerror(err)));
    }
    ::madvise(anon, r.num_bytes, MADV_HUGEPAGE);
    if (Status s = read_range(fd, path_, static_cast<uint8_t*>(anon), r.offset, read_bytes, true, progress, done,
                              total);
        !s) {
      ::close(fd);
      return s.error();  // the range holds what was read so far: the caller must not use this File
    }
    ::mprotect(anon, r.num_bytes, PROT_READ);
    mapping_->resident.push_back(r);
    done += r.num_bytes;
    result.resident_bytes += r.num_bytes;
    if (lock && result.lock_note.empty()) {
      if (::mlock(anon, r.num_bytes) == 0) {
        result.locked_bytes += r.num_bytes;
      } else {
        const int err = errno;
        result.lock_note =
            have_limit && memlock.rlim_cur != RLIM_INFINITY
                ? fmt::format("not locked: mlock: {} (RLIMIT_MEMLOCK {} bytes, below the {} resident: ulimit -l)",
                              std::strerror(err), memlock.rlim_cur, total)
                : fmt::format("not locked: mlock: {}", std::strerror(err));
      }
    }
  }
  if (progress) progress(total, total);
  ::close(fd);
  return result;
}

Status File::rewrite_in_memory(const std::function<void()>& rewrite) const {
  if (!in_memory_ || mapping_ == nullptr)
    return make_error(ErrorCode::kUnsupported,
                      path_ + ": the weights are mapped from the file, not copied into memory: they cannot be rewritten");
  if (::mprotect(mapping_->addr, mapping_->size, PROT_READ | PROT_WRITE) != 0)
    return make_error(ErrorCode::kIo, path_ + ": cannot make the weights' memory writable: " + std::strerror(errno));
  rewrite();
  ::mprotect(mapping_->addr, mapping_->size, PROT_READ);
  return {};
}

Status File::rewrite_resident(const std::function<void()>& rewrite) const {
  if (in_memory_ || mapping_ == nullptr || mapping_->resident.empty())
    return make_error(ErrorCode::kUnsupported,
                      path_ + ": no weights of the mapped file were made resident: there is nothing to rewrite");
  const auto protect = [&](int prot) {
    for (const ByteRange& r : mapping_->resident)
      if (::mprotect(const_cast<uint8_t*>(base_) + r.offset, r.num_bytes, prot) != 0) return false;
    return true;
  };
  if (!protect(PROT_READ | PROT_WRITE)) {
    const int err = errno;
    protect(PROT_READ);
    return make_error(ErrorCode::kIo, path_ + ": cannot make the resident weights writable: " + std::strerror(err));
  }
  rewrite();
  protect(PROT_READ);
  return {};
}

bool File::is_resident(uint64_t offset, uint64_t num_bytes) const {
  if (offset > size_ || num_bytes > size_ - offset) return false;
  if (in_memory_) return true;
  if (mapping_ == nullptr) return false;
  return std::any_of(mapping_->resident.begin(), mapping_->resident.end(), [&](const ByteRange& r) {
    return r.offset <= offset && offset + num_bytes <= r.offset + r.num_bytes;
  });
}

uint64_t File::resident_bytes() const {
  uint64_t total = 0;
  if (mapping_ != nullptr)
    for (const ByteRange& r : mapping_->resident) total += r.num_bytes;
  return total;
}

uint64_t File::release_pages(std::span<const ByteRange> ranges) const {
  if (in_memory_ || mapping_ == nullptr) return 0;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t released = 0;
  for (const ByteRange& r : ranges) {
    if (r.offset >= size_) continue;
    uint64_t begin = (r.offset + page - 1) / page * page;
    const uint64_t end = std::min(r.offset + std::min(r.num_bytes, size_ - r.offset), size_) / page * page;
    while (begin < end) {
      // The next resident range at or after `begin` bounds this piece; a resident range covering `begin` skips.
      uint64_t piece_end = end;
      bool skip = false;
      for (const ByteRange& res : mapping_->resident) {
        if (res.offset <= begin && begin < res.offset + res.num_bytes) {
          skip = true;
          piece_end = std::min(end, res.offset + res.num_bytes);
          break;
        }
        if (res.offset > begin) piece_end = std::min(piece_end, res.offset);
      }
      if (!skip && ::madvise(const_cast<uint8_t*>(base_) + begin, piece_end - begin, MADV_DONTNEED) == 0)
        released += piece_end - begin;
      begin = piece_end;
    }
  }
  return released;
}

Expected<File> File::from_memory(std::span<const uint8_t> bytes, std::string name) {
  File file;
  file.path_ = std::move(name);
  file.base_ = bytes.data();
  file.size_ = bytes.size();
  Parser parser(file);
  if (Status s = parser.parse(); !s) return s.error();
  return file;
}

const KeyValue* File::find(std::string_view key) const {
  for (const KeyValue& kv : kvs_)
    if (kv.key == key) return &kv;
  return nullptr;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

Error missing_key(const std::string& path, std::string_view key) {
  return make_error(ErrorCode::kMissing, path + ": key " + quote(key) + " not found");
}

Error wrong_type(const std::string& path, const KeyValue& kv, std::string_view expected) {
  return make_error(ErrorCode::kFormat,
                    path + ": key " + quote(kv.key) + " has type " + type_label(kv.value) + " (expected " +
                        std::string(expected) + ")",
                    kv.file_offset);
}

/// An integer value checked to be non-negative and at most `max`; `target` names the requested type.
Expected<uint64_t> unsigned_value(const std::string& path, const KeyValue& kv, uint64_t max, const char* target) {
  const Value& v = kv.value;
  if (!is_integer_type(v.type)) return wrong_type(path, kv, std::string("an integer type convertible to ") + target);
  if (is_signed_type(v.type) && v.i64 < 0) {
    return make_error(ErrorCode::kFormat,
                      path + ": key " + quote(kv.key) + " = " + std::to_string(v.i64) + " is negative (expected a " +
                          target + ")",
                      kv.file_offset);
  }
  const uint64_t x = is_signed_type(v.type) ? static_cast<uint64_t>(v.i64) : v.u64;
  if (x > max) {
    return make_error(ErrorCode::kFormat,
                      path + ": key " + quote(kv.key) + " = " + std::to_string(x) + " does not fit in " + target,
                      kv.file_offset);
  }
  return x;
}

}  // namespace

Expected<uint32_t> File::get_u32(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  auto x = unsigned_value(path_, *kv, std::numeric_limits<uint32_t>::max(), "UINT32");
  if (!x) return x.error();
  return static_cast<uint32_t>(*x);
}

Expected<uint64_t> File::get_u64(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  return unsigned_value(path_, *kv, std::numeric_limits<uint64_t>::max(), "UINT64");
}

Expected<float> File::get_f32(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  if (kv->value.type != ValueType::kFloat32 && kv->value.type != ValueType::kFloat64)
    return wrong_type(path_, *kv, "FLOAT32 or FLOAT64");
  const double x = kv->value.f64;
  if (std::isfinite(x) && std::fabs(x) > static_cast<double>(std::numeric_limits<float>::max())) {
    return make_error(ErrorCode::kFormat,
                      path_ + ": key " + quote(kv->key) + " = " + std::to_string(x) + " does not fit in FLOAT32",
                      kv->file_offset);
  }
  return static_cast<float>(x);
}

Expected<bool> File::get_bool(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  if (kv->value.type != ValueType::kBool) return wrong_type(path_, *kv, "BOOL");
  return kv->value.u64 != 0;
}

Expected<std::string_view> File::get_string(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  if (kv->value.type != ValueType::kString) return wrong_type(path_, *kv, "STRING");
  return kv->value.str;
}

Expected<std::span<const std::string_view>> File::get_string_array(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  if (kv->value.type != ValueType::kArray || kv->value.array_type != ValueType::kString)
    return wrong_type(path_, *kv, "ARRAY of STRING");
  return std::span<const std::string_view>(kv->value.array_strings);
}

Expected<std::vector<int32_t>> File::get_i32_array(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  const Value& v = kv->value;
  if (v.type != ValueType::kArray || !is_integer_type(v.array_type))
    return wrong_type(path_, *kv, "ARRAY of an integer type");
  const uint64_t elem_bytes = scalar_size(static_cast<uint32_t>(v.array_type));
  const bool is_signed = is_signed_type(v.array_type);
  std::vector<int32_t> out(static_cast<size_t>(v.array_count));
  for (uint64_t i = 0; i < v.array_count; ++i) {
    const uint8_t* p = v.array_data + i * elem_bytes;
    std::string bad;  // the element's value when it does not fit
    if (is_signed) {
      const int64_t x = decode_signed(p, v.array_type);
      if (x >= std::numeric_limits<int32_t>::min() && x <= std::numeric_limits<int32_t>::max()) {
        out[i] = static_cast<int32_t>(x);
      } else {
        bad = std::to_string(x);
      }
    } else {
      const uint64_t x = decode_unsigned(p, v.array_type);
      if (x <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        out[i] = static_cast<int32_t>(x);
      } else {
        bad = std::to_string(x);
      }
    }
    if (!bad.empty()) {
      return make_error(ErrorCode::kFormat,
                        path_ + ": key " + quote(kv->key) + ": element " + std::to_string(i) + " = " + bad +
                            " does not fit in INT32",
                        kv->file_offset);
    }
  }
  return out;
}

Expected<std::vector<float>> File::get_f32_array(std::string_view key) const {
  const KeyValue* kv = find(key);
  if (!kv) return missing_key(path_, key);
  const Value& v = kv->value;
  if (v.type != ValueType::kArray || v.array_type != ValueType::kFloat32)
    return wrong_type(path_, *kv, "ARRAY of FLOAT32");
  std::vector<float> out(static_cast<size_t>(v.array_count));
  if (!out.empty()) std::memcpy(out.data(), v.array_data, out.size() * sizeof(float));
  return out;
}

}  // namespace hetmoe::gguf
