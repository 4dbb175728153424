// hetmoe: run Mixture-of-Experts language models (gpt-oss) on CPU and GPU.
// Exit codes (docs/cli.md): 0 success, 1 error, 2 usage error, 130 interrupted (runtime/cli/cli_args.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/cli/cli_args.h"
#include "runtime/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"hetmoe: runs gpt-oss Mixture-of-Experts models from GGUF files on CPU and GPU", "hetmoe"};
  app.set_version_flag("--version", "hetmoe 0.1.0");
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 error, 2 usage error, 130 interrupted (Ctrl-C).");
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
  // -ctk/-ctv (llama.cpp's names) → --cache-type-k/-v: CLI11 takes one letter after a single dash.
  const std::vector<std::string> args = hetmoe::cli::expand_llama_cpp_aliases(argc, argv);
  std::vector<const char*> arg_ptrs;
  for (const std::string& a : args) arg_ptrs.push_back(a.c_str());
  argc = static_cast<int>(arg_ptrs.size());
  const char* const* const expanded_argv = arg_ptrs.data();
  if (auto message = hetmoe::cli::scan_command_line(app, argc, expanded_argv)) {
    fmt::print(stderr, "hetmoe: {}\n", *message);
    return hetmoe::cli::kExitUsage;
  }
  try {
    app.parse(argc, expanded_argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: printed on stdout
    std::string command = "hetmoe";
    for (const CLI::App* sub : app.get_subcommands()) command += " " + sub->get_name();
    fmt::print(stderr, "{}: {}\n({} --help lists the options)\n", command, e.what(), command);
    return hetmoe::cli::kExitUsage;
  }
  // Output that could not be written (a full disk, a closed stdout) is an error, never a silent success.
  if ((std::fflush(stdout) != 0 || std::ferror(stdout)) && exit_code == 0) {
    fmt::print(stderr, "hetmoe: writing to stdout failed: {}\n", std::strerror(errno));
    exit_code = hetmoe::cli::kExitError;
  }
  return exit_code;
}
