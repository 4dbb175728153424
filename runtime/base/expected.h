#pragma once
// Error values for library code: functions return Expected<T>; only the CLI decides to exit.

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace hetmoe {

enum class ErrorCode {
  kIo,              // open/read/mmap/write failed (errno text in the message)
  kFormat,          // a file is malformed (bad magic, value out of range, truncated, ...)
  kUnsupported,     // well-formed but not supported (unknown tensor type, big-endian, ...)
  kMissing,         // a required key or tensor is absent
  kShape,           // a tensor or buffer has the wrong shape or type
  kInvalidArgument, // a caller-supplied value is out of range (context too long, bad id, ...)
};

/// An error: a code, a human-readable message that names the file/key/value and what was expected,
/// and, for file-format errors, the byte offset in the file where the problem was found.
struct Error {
  ErrorCode code = ErrorCode::kFormat;
  std::string message;
  std::optional<uint64_t> file_offset;

  /// Full text, e.g. "model.gguf: offset 24: tensor count 2^60 exceeds ...".
  std::string to_string() const {
    if (file_offset) return "offset " + std::to_string(*file_offset) + ": " + message;
    return message;
  }
};

inline Error make_error(ErrorCode code, std::string message,
                        std::optional<uint64_t> file_offset = std::nullopt) {
  return Error{code, std::move(message), file_offset};
}

/// Either a T or an Error (a small std::expected stand-in; C++20 has none).
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}              // NOLINT: implicit by design
  Expected(Error error) : v_(std::move(error)) {}          // NOLINT: implicit by design
  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { assert(has_value()); return std::get<0>(v_); }
  const T& value() const& { assert(has_value()); return std::get<0>(v_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { assert(!has_value()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

/// Expected<void>: success or an Error.
template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)) {}      // NOLINT: implicit by design
  bool has_value() const { return !error_.has_value(); }
  explicit operator bool() const { return has_value(); }
  const Error& error() const { assert(error_); return *error_; }

 private:
  std::optional<Error> error_;
};

using Status = Expected<void>;

}  // namespace hetmoe

// Propagation helpers for functions returning Expected<...>/Status.
#define HETMOE_CONCAT_INNER(a, b) a##b
#define HETMOE_CONCAT(a, b) HETMOE_CONCAT_INNER(a, b)
/// Evaluates `expr` (an Expected<T>); on error returns the error, else assigns the value to `lhs`.
#define HETMOE_ASSIGN_OR_RETURN(lhs, expr)                                  \
  auto HETMOE_CONCAT(hetmoe_tmp_, __LINE__) = (expr);                       \
  if (!HETMOE_CONCAT(hetmoe_tmp_, __LINE__)) return HETMOE_CONCAT(hetmoe_tmp_, __LINE__).error(); \
  lhs = std::move(*HETMOE_CONCAT(hetmoe_tmp_, __LINE__))
/// Evaluates `expr` (a Status); on error returns it.
#define HETMOE_RETURN_IF_ERROR(expr)                                              \
  do {                                                                            \
    if (auto hetmoe_status_ = (expr); !hetmoe_status_) return hetmoe_status_.error(); \
  } while (0)
