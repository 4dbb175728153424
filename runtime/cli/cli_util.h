#pragma once
// Small helpers shared by the subcommands: error printing, byte formatting, thread counts.

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <thread>

#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"

namespace hetmoe::cli {

/// Prints "hetmoe <command>: <error>" to stderr and returns the exit code 1.
inline int report_error(std::string_view command, const Error& error) {
  fmt::print(stderr, "hetmoe {}: {}\n", command, error.to_string());
  return 1;
}

/// "12.1 GB" / "423.0 MB" / "10.0 KiB" style, decimal units above 1 MB as llama.cpp prints them.
inline std::string format_bytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} KB", b / 1e3);
  return fmt::format("{} B", bytes);
}

/// --threads default: the hardware concurrency (at least 1).
inline int default_num_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

/// --load: "auto" (weights copied into huge-page memory when they fit in RAM), "mmap" or "memory".
inline Expected<gguf::File::LoadMode> parse_load_mode(std::string_view text) {
  if (text == "auto") return gguf::File::LoadMode::kAuto;
  if (text == "mmap") return gguf::File::LoadMode::kMmap;
  if (text == "memory") return gguf::File::LoadMode::kMemory;
  return make_error(ErrorCode::kInvalidArgument,
                    fmt::format("--load {}: expected auto, mmap or memory", text));
}

inline constexpr const char* kLoadHelp =
    "How weights are loaded: auto (copied into huge-page memory when they fit in RAM: faster decode), mmap, memory";

}  // namespace hetmoe::cli
