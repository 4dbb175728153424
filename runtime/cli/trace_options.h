#pragma once
// --trace FILE for the commands that run a model (generate, chat, bench, serve): the file is checked (its temporary
// created) before any work, recording runs for the whole command, and the trace is written at its end
// (profiler/trace.h) as every output file is (runtime/cli/cli_files.h: FILE.tmp renamed over FILE when complete).

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "profiler/trace.h"
#include "runtime/base/expected.h"
#include "runtime/cli/cli_files.h"

namespace hetmoe::cli {

/// Adds --trace FILE, stored in `path`.
void add_trace_option(CLI::App* cmd, std::string& path);

/// A trace being recorded for --trace FILE. Destroyed without finish_trace() (an error path), it stops recording and
/// writes what was recorded, ignoring write errors.
class TraceOutput {
 public:
  TraceOutput(std::string path, std::unique_ptr<OutputFile> file) : path_(std::move(path)), file_(std::move(file)) {}
  ~TraceOutput();
  TraceOutput(const TraceOutput&) = delete;
  TraceOutput& operator=(const TraceOutput&) = delete;
  /// Stops recording, writes the trace and commits the file. Errors: kIo naming the path.
  Status write();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<OutputFile> file_;  // nullptr once written
};

/// Starts recording into `path`, or returns nullptr when `path` is empty. Errors: OutputFile::open's (the message
/// names --trace and the path); kInvalidArgument if a trace is already recording in this process.
Expected<std::unique_ptr<TraceOutput>> start_trace(const std::string& path);

/// Writes the trace, if one is recording, and says on stderr where it went and how many events it holds (and how
/// many were dropped at the recorder's memory cap, profiler::kTraceMaxBytes). Errors: the write's.
Status finish_trace(std::unique_ptr<TraceOutput>& trace);

}  // namespace hetmoe::cli
