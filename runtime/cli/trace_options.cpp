#include "runtime/cli/trace_options.h"

#include <fmt/format.h>

namespace hetmoe::cli {

void add_trace_option(CLI::App* cmd, std::string& path) {
  cmd->add_option("--trace", path,
                  "Record what the CPU workers (and GPU streams) do and write a Perfetto / chrome://tracing trace "
                  "(Trace Event JSON) to FILE at the end; `hetmoe trace-summary FILE` summarizes it")
      ->type_name("FILE");
}

Status TraceOutput::write() {
  if (!file_) return {};
  profiler::trace_stop();
  std::unique_ptr<OutputFile> file = std::move(file_);
  HETMOE_RETURN_IF_ERROR(profiler::trace_write_json(file->stream(), "--trace " + path_));
  return file->commit();
}

TraceOutput::~TraceOutput() { (void)write(); }

Expected<std::unique_ptr<TraceOutput>> start_trace(const std::string& path) {
  if (path.empty()) return std::unique_ptr<TraceOutput>();
  if (profiler::trace_enabled())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--trace {}: a trace is already being recorded in this process", path));
  HETMOE_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::open("--trace", path));
  profiler::trace_start();
  return std::make_unique<TraceOutput>(path, std::move(file));
}

Status finish_trace(std::unique_ptr<TraceOutput>& trace) {
  if (!trace) return {};
  HETMOE_RETURN_IF_ERROR(trace->write());
  const profiler::TraceStats stats = profiler::trace_stats();
  fmt::print(stderr, "trace: {} events from {} threads written to {}{} (open it in ui.perfetto.dev)\n",
             stats.num_written, stats.num_threads, trace->path(),
             stats.num_dropped ? fmt::format(", {} events dropped at the memory cap", stats.num_dropped) : "");
  trace.reset();
  return {};
}

}  // namespace hetmoe::cli
