#pragma once
// --trace FILE for the commands that run a model (generate, chat, bench): the file is checked (created) before any
// work, recording runs for the whole command, and the trace is written at its end (profiler/trace.h).

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "profiler/trace.h"
#include "runtime/base/expected.h"

namespace hetmoe::cli {

/// Adds --trace FILE, stored in `path`.
void add_trace_option(CLI::App* cmd, std::string& path);

/// Starts recording into `path`, or returns nullptr when `path` is empty. Errors: TraceSession::start()'s (the file
/// cannot be created or written: the message names it).
Expected<std::unique_ptr<profiler::TraceSession>> start_trace(const std::string& path);

/// Writes the trace, if one is recording, and says on stderr where it went and how many events it holds.
/// Errors: the write's.
Status finish_trace(std::unique_ptr<profiler::TraceSession>& trace);

}  // namespace hetmoe::cli
