// hetmoe config: prints the commented default configuration file, or checks a file and prints the keys it sets.
#include <fmt/format.h>

#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/app/config.h"

namespace hetmoe::cli {
namespace {

int run_check(const std::string& path) {
  if (auto s = check_input_file("--check", path); !s) return report_error("config", s.error());
  auto config = load_config(path);
  if (!config) return report_error("config", config.error());
  const std::string text = format_config(*config);
  if (text.empty()) {
    fmt::print("{}: valid; sets no key (every value is the default)\n", path);
  } else {
    fmt::print("{}: valid; the keys it sets:\n\n{}", path, text);
  }
  return 0;
}

}  // namespace

void add_config_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("config",
                                 "Print the commented default configuration file (--print-default), or "
                                 "check one (--check FILE); use it with generate/chat --config FILE");
  auto print_default = std::make_shared<bool>(false);
  auto check_path = std::make_shared<std::string>();
  cmd->add_flag("--print-default", *print_default, "Print the default file, every key commented, to stdout");
  cmd->add_option("--check", *check_path, "Validate FILE; print the keys it sets, or every error with its line")
      ->option_text("FILE");
  cmd->require_option(1);
  cmd->callback([print_default, check_path, &exit_code] {
    if (*print_default) {
      fmt::print("{}", default_config_text());
      exit_code = 0;
      return;
    }
    exit_code = run_check(*check_path);
  });
}

}  // namespace hetmoe::cli
