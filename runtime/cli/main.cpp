// hetmoe: run Mixture-of-Experts language models (gpt-oss) on CPU and GPU.
#include <CLI/CLI.hpp>

#include "runtime/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"hetmoe: runs gpt-oss Mixture-of-Experts models from GGUF files on CPU and GPU", "hetmoe"};
  app.set_version_flag("--version", "hetmoe 0.1.0");
  app.require_subcommand(1);
  int exit_code = 0;
  hetmoe::cli::add_info_command(app, exit_code);
  hetmoe::cli::add_eval_command(app, exit_code);
  hetmoe::cli::add_synth_command(app, exit_code);
  hetmoe::cli::add_generate_command(app, exit_code);
  hetmoe::cli::add_tokenize_command(app, exit_code);
  hetmoe::cli::add_chat_command(app, exit_code);
  hetmoe::cli::add_bench_command(app, exit_code);
  hetmoe::cli::add_config_command(app, exit_code);
  hetmoe::cli::add_probe_command(app, exit_code);
  hetmoe::cli::add_plan_command(app, exit_code);
  hetmoe::cli::add_profile_command(app, exit_code);
  hetmoe::cli::add_trace_summary_command(app, exit_code);
  hetmoe::cli::add_serve_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
