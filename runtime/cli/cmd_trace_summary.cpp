// hetmoe trace-summary FILE [--top N]: what a trace written by --trace says, as text: time per layer and per device,
// the top ops, the counters and the overlap efficiency of each layer (definitions in profiler/trace_summary.h).
#include <fmt/format.h>

#include "profiler/trace_summary.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"

namespace hetmoe::cli {
namespace {

struct TraceSummaryArgs {
  std::string path;
  size_t top_n = 15;
};

int run_trace_summary(const TraceSummaryArgs& args) {
  if (auto s = check_input_file("FILE", args.path); !s) return report_error("trace-summary", s.error());
  auto summary = profiler::summarize_trace_file(args.path);
  if (!summary) return report_error("trace-summary", summary.error());
  fmt::print("{}", profiler::format_trace_summary(*summary, args.top_n));
  return 0;
}

}  // namespace

void add_trace_summary_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("trace-summary", "Summarize a trace written by --trace: time per layer and per "
                                                  "device, top ops, counters, overlap efficiency");
  auto args = std::make_shared<TraceSummaryArgs>();
  cmd->add_option("FILE", args->path, "Trace file (Trace Event JSON)")->required();
  cmd->add_option("--top", args->top_n, "How many ops to list")->check(int_range(1, 100000))->capture_default_str();
  cmd->callback([args, &exit_code] { exit_code = run_trace_summary(*args); });
}

}  // namespace hetmoe::cli
