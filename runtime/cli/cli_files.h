#pragma once
// The command line's one way to open files, so every command treats paths alike (docs/cli.md):
//   - an input file must exist, be readable and not be a directory (the message names the flag and the path);
//   - an output path is checked before any work: not a directory, its parent directory exists;
//   - an output that is a regular file (or does not exist yet) is written to PATH.tmp in the same directory and
//     renamed over PATH when complete, so a failed run leaves neither a partial file nor the temporary; anything
//     else (/dev/null, /dev/stdout, a FIFO, a symbolic link's target) is written through, never replaced.

#include <cstdio>
#include <memory>
#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::cli {

/// Checks that `path` (given with `flag`, e.g. "--config") can be read as a file. "-" (stdin) passes when
/// `allow_stdin`. Errors: kIo "FLAG PATH: no such file", "... is a directory", "... cannot be read: REASON".
Status check_input_file(const std::string& flag, const std::string& path, bool allow_stdin = false);

/// Reads the whole file (or stdin for "-" when `allow_stdin`). Errors: check_input_file's; kIo on a read error.
Expected<std::string> read_input_file(const std::string& flag, const std::string& path, bool allow_stdin = false);

/// Checks, before any work, that `path` can be written: it is not a directory and its directory exists.
/// Errors: kIo "FLAG PATH: is a directory" / "FLAG PATH: the directory DIR does not exist" / "... is not writable".
Status check_output_path(const std::string& flag, const std::string& path);

/// An output file written as the header comment says. open() then write() ... commit(); destroying it uncommitted
/// removes the temporary (a write-through target is left as written so far).
class OutputFile {
 public:
  OutputFile() = default;
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  /// Errors: check_output_path's; kIo when the file (or PATH.tmp) cannot be created.
  static Expected<std::unique_ptr<OutputFile>> open(const std::string& flag, const std::string& path);
  /// Errors: kIo "FLAG PATH: write failed: REASON".
  Status write(const void* data, size_t num_bytes);
  /// Flushes, closes and (for a regular file) renames the temporary over the path. Errors: kIo.
  Status commit();
  /// The open file, for writers that take a FILE* (profiler::trace_write_json); nullptr after commit().
  std::FILE* stream() const { return file_; }
  /// True when the path is written through (not a regular file).
  bool write_through() const { return write_through_; }

 private:
  std::string flag_, path_, tmp_path_;
  std::FILE* file_ = nullptr;
  bool write_through_ = false;
};

/// OutputFile::open, write(text), commit(): a whole text file written as the header comment says.
Status write_output_file(const std::string& flag, const std::string& path, const std::string& text);

}  // namespace hetmoe::cli
