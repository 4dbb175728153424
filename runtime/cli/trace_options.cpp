#include "runtime/cli/trace_options.h"

#include <fmt/format.h>

namespace hetmoe::cli {

void add_trace_option(CLI::App* cmd, std::string& path) {
  cmd->add_option("--trace", path,
                  "Record what the CPU workers (and GPU streams) do and write a Perfetto / chrome://tracing trace "
                  "(Trace Event JSON) to FILE at the end; `hetmoe trace-summary FILE` summarizes it")
      ->type_name("FILE");
}

Expected<std::unique_ptr<profiler::TraceSession>> start_trace(const std::string& path) {
  if (path.empty()) return std::unique_ptr<profiler::TraceSession>();
  return profiler::TraceSession::start(path);
}

Status finish_trace(std::unique_ptr<profiler::TraceSession>& trace) {
  if (!trace) return {};
  HETMOE_RETURN_IF_ERROR(trace->finish());
  const profiler::TraceStats stats = profiler::trace_stats();
  fmt::print(stderr, "trace: {} events from {} threads written to {}{} (open it in ui.perfetto.dev)\n",
             stats.num_written, stats.num_threads, trace->path(),
             stats.num_dropped ? fmt::format(", {} events dropped at the memory cap", stats.num_dropped) : "");
  trace.reset();
  return {};
}

}  // namespace hetmoe::cli
