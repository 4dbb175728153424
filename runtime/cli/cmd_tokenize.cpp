// hetmoe tokenize -m MODEL [--parse-special] [--ids|--pieces] TEXT|-f FILE: the token ids (or pieces) of a text as a
// JSON array on stdout. Reads only the tokenizer metadata, so a vocabulary-only GGUF (no tensors) works.
#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/model/gguf.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::cli {
namespace {

struct TokenizeArgs {
  std::string model_path;
  std::string text;
  std::string file_path;
  bool parse_special = false;
  bool pieces = false;
  bool ids = false;  // --ids: the default, accepted for clarity
};

Expected<std::string> read_input(const TokenizeArgs& args) {
  if (args.file_path.empty()) return args.text;
  return read_input_file("-f", args.file_path, /*allow_stdin=*/true);
}

int run_tokenize(const TokenizeArgs& args) {
  Expected<std::string> text = read_input(args);
  if (!text) return report_error("tokenize", text.error());
  if (auto s = check_input_file("-m", args.model_path); !s) return report_error("tokenize", s.error());
  Expected<gguf::File> file = gguf::File::open(args.model_path);
  if (!file) return report_error("tokenize", file.error());
  Expected<Tokenizer> tokenizer = Tokenizer::from_gguf(*file);
  if (!tokenizer) return report_error("tokenize", tokenizer.error());
  const std::vector<int32_t> ids = tokenizer->encode(*text, args.parse_special);
  nlohmann::json out = nlohmann::json::array();
  for (int32_t id : ids) {
    if (args.pieces) {
      out.push_back(std::string(tokenizer->token_bytes(id)));
    } else {
      out.push_back(id);
    }
  }
  // Pieces that are not valid UTF-8 on their own (part of a character) are shown with U+FFFD; ids are exact.
  fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("tokenize", "Token ids (or pieces) of a text as a JSON array. Works on a "
                                             "vocabulary-only GGUF.");
  auto args = std::make_shared<TokenizeArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF file with tokenizer.ggml.* metadata")->required();
  auto* text_opt = cmd->add_option("text", args->text, "Text to tokenize");
  auto* file_opt = cmd->add_option("-f,--file", args->file_path, "Read the text from FILE ('-' for stdin)");
  text_opt->excludes(file_opt);
  cmd->add_flag("--parse-special", args->parse_special,
                "Turn special-token text like <|start|> into its token (off: it is ordinary text)");
  auto* ids_flag = cmd->add_flag("--ids", args->ids, "Print token ids (the default)");
  auto* pieces_flag = cmd->add_flag("--pieces", args->pieces,
                                    "Print each token's text instead (U+FFFD where a token holds part of a character)");
  ids_flag->excludes(pieces_flag);
  cmd->callback([args, text_opt, file_opt, &exit_code] {
    if (text_opt->count() == 0 && file_opt->count() == 0) {
      exit_code = report_error("tokenize", make_error(ErrorCode::kInvalidArgument, "give a TEXT or -f FILE"));
      return;
    }
    exit_code = run_tokenize(*args);
  });
}

}  // namespace hetmoe::cli
