#pragma once
// Command-line checks shared by every subcommand (docs/cli.md, "Exit codes"): validators whose messages name the
// flag and the value, and the scan of argv before CLI11 parses it (unknown commands and options with a suggestion,
// llama.cpp flags that mean something else here). A usage error exits with kExitUsage.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hetmoe::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // the command ran and failed (a file, the model, the machine)
inline constexpr int kExitUsage = 2;        // the command line is wrong; nothing was done
inline constexpr int kExitInterrupted = 130;  // SIGINT (128 + 2), after writing what the run had

/// An integer in [lo, hi]: "abc is not an integer", "-5 is out of range lo..hi". CLI11 prefixes the flag name.
CLI::Validator int_range(int64_t lo, int64_t hi);
/// A finite number > 0: "nan is not a finite number", "0 must be above 0".
CLI::Validator positive_number();
/// A byte size (runtime/base/byte_size.h). A plain number below 1 MiB other than 0 is refused as surely a mistake
/// ("512 is 512 bytes: give a unit, e.g. 512MiB").
CLI::Validator byte_size_arg();
/// A date YYYY-MM-DD that exists in the calendar.
CLI::Validator date_arg();

/// The closest of `candidates` to `word` (a prefix of one, or within a small edit distance), or nullopt.
std::optional<std::string> closest_word(const std::string& word, const std::vector<std::string>& candidates);

/// llama.cpp's multi-letter single-dash flags that hetmoe takes under their long name (CLI11 accepts one letter after
/// a single dash): -ctk → --cache-type-k, -ctv → --cache-type-v (also in the -ctk=VALUE form). Returns argv with
/// those words replaced, everything else as is (argv[0] included).
std::vector<std::string> expand_llama_cpp_aliases(int argc, const char* const* argv);

/// Scans argv before parsing: the subcommand must exist; each option must exist on it (an option CLI11 would split,
/// like -ngl into -n gl, is an unknown option); llama.cpp's -ngl/--n-gpu-layers and -cnv get a message naming the
/// flags that do that here. Returns the message for stderr when the command line is wrong, nullopt when fine.
std::optional<std::string> scan_command_line(const CLI::App& app, int argc, const char* const* argv);

}  // namespace hetmoe::cli
