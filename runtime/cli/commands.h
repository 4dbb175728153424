#pragma once
// Subcommands of the hetmoe program. Each add_*_command registers one CLI11 subcommand whose callback runs
// the command and stores its process exit code in `exit_code` (0 on success). Errors go to stderr.

#include <CLI/CLI.hpp>

#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::cli {

void add_info_command(CLI::App& app, int& exit_code);
void add_eval_command(CLI::App& app, int& exit_code);
void add_synth_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_chat_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_config_command(CLI::App& app, int& exit_code);
void add_probe_command(CLI::App& app, int& exit_code);
void add_plan_command(CLI::App& app, int& exit_code);
void add_profile_command(CLI::App& app, int& exit_code);
void add_trace_summary_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace hetmoe::cli
