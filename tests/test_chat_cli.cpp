// End to end through the hetmoe program: `tokenize` on the vocabulary-only GGUF, `generate` in harmony and raw mode,
// and `chat` driven through a pipe on the tiny fixture model. Random weights write random text, so the chat tests
// check structure (turns run, figures print, commands work, budgets hold), not content.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
const std::string kData = HETMOE_TEST_DATA_DIR;
const std::string kTiny = kData + "/gpt-oss-tiny.gguf";
const std::string kVocab = kData + "/o200k-harmony-vocab.gguf";

using test::RunResult;
using test::slurp;

class ChatCli : public test::CliTest {};

// Lines of `text` that start with `prefix`.
std::vector<std::string> lines_starting_with(const std::string& text, const std::string& prefix) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) lines.push_back(line);
  }
  return lines;
}

// The generated-token count of a chat stats line "[N tokens, ...".
int tokens_of(const std::string& stats_line) { return std::atoi(stats_line.c_str() + 1); }

TEST_F(ChatCli, TokenizeOnAVocabularyOnlyFile) {
  RunResult r = run("tokenize -m " + kVocab + " \"Hello world\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse("[13225, 2375]"));

  r = run("tokenize -m " + kVocab + " --pieces \"Hello world\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse(R"(["Hello", " world"])"));

  r = run("tokenize -m " + kVocab + " --parse-special \"<|start|>user<|message|>hi<|end|>\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse("[200006, 1428, 200008, 3686, 200007]"));
  r = run("tokenize -m " + kVocab + " \"<|start|>\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int id : nlohmann::json::parse(r.out)) EXPECT_LT(id, 199998);

  const fs::path text = dir_ / "text.txt";
  std::ofstream(text, std::ios::binary) << "line one\nline two\n";
  r = run("tokenize -m " + kVocab + " -f " + text.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunResult from_stdin = run("tokenize -m " + kVocab + " -f -", "line one\nline two\n");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.err;
  EXPECT_EQ(from_stdin.out, r.out);

  EXPECT_EQ(run("tokenize -m " + kVocab).exit_code, 1);
  RunResult missing = run("tokenize -m " + (dir_ / "nope.gguf").string() + " x");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nope.gguf"), std::string::npos);
}

TEST_F(ChatCli, GenerateRendersHarmonyByDefaultAndRawOnRequest) {
  auto prefill_tokens = [](const std::string& err) {
    const size_t at = err.find("prefill ");
    return at == std::string::npos ? -1 : std::atoi(err.c_str() + at + 8);
  };
  RunResult r = run("generate -m " + kTiny + " -p \"Hello world\" -n 8 --seed 1 --reasoning high --system \"Be brief.\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos);
  EXPECT_EQ(r.out.rfind("Hello world", 0), std::string::npos) << "harmony mode does not echo the prompt";

  RunResult raw = run("generate -m " + kTiny + " -p \"Hello world\" -n 8 --seed 1 --raw");
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  EXPECT_EQ(raw.out.rfind("Hello world", 0), 0u) << raw.out;
  // The harmony prompt (system + developer + user message + "<|start|>assistant") is far longer than the raw one.
  EXPECT_GT(prefill_tokens(raw.err), 0) << raw.err;
  EXPECT_GT(prefill_tokens(r.err), prefill_tokens(raw.err) + 50) << r.err;

  RunResult reasoning = run("generate -m " + kTiny + " -p hi -n 8 --seed 1 --show-reasoning --date 2025-01-01");
  EXPECT_EQ(reasoning.exit_code, 0) << reasoning.err;
  EXPECT_NE(run("generate -m " + kTiny + " -p hi -n 4 --reasoning extreme").exit_code, 0);
}

TEST_F(ChatCli, PipedSessionWithCommands) {
  const std::string input =
      "Hello there\n"
      "How are you?\n"
      "/reasoning high\n"
      "Tell me more\n"
      "/reasoning\n"
      "\n"
      "/reset\n"
      "After the reset\n"
      "/nonsense\n"
      "/exit\n"
      "this line is never read\n";
  RunResult r = run("chat -m " + kTiny + " -n 12 --seed 5 --date 2025-08-05", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> stats = lines_starting_with(r.err, "[");
  ASSERT_EQ(stats.size(), 4u) << r.err;  // four turns; the line after /exit is not read
  for (const std::string& line : stats) {
    EXPECT_NE(line.find("tok/s"), std::string::npos) << line;
    EXPECT_LE(tokens_of(line), 12) << line;
  }
  EXPECT_NE(r.err.find("(reasoning: high)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(reasoning is high"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(conversation cleared)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("commands: /reset"), std::string::npos) << r.err;  // /nonsense shows the help
  // /reset starts a fresh conversation: the fourth turn's context is about as short as the first's.
  auto context_of = [](const std::string& line) {
    const size_t at = line.find("context ");
    return std::atoi(line.c_str() + at + 8);
  };
  EXPECT_GT(context_of(stats[2]), context_of(stats[0]));
  EXPECT_LT(context_of(stats[3]), context_of(stats[2]));
}

TEST_F(ChatCli, EndOfInputEndsTheSessionAndTheBudgetHolds) {
  RunResult r = run("chat -m " + kTiny + " -n 3 --seed 9 --hide-reasoning", "one\ntwo\nthree\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> stats = lines_starting_with(r.err, "[");
  ASSERT_EQ(stats.size(), 3u) << r.err;
  for (const std::string& line : stats) EXPECT_LE(tokens_of(line), 3) << line;
}

TEST_F(ChatCli, AConversationThatOutgrowsTheContextIsRefusedNotFatal) {
  // The session goes on after the refused turn (the /exit is read); through a pipe the failed turn makes exit 1.
  RunResult r = run("chat -m " + kTiny + " -n 4 --seed 1 -c 120", "first\nsecond turn that no longer fits\n/exit\n");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("no longer fits the context of 120"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("1 of 2 turns failed"), std::string::npos) << r.err;
}

TEST_F(ChatCli, AMissingModelFileIsAClearError) {
  RunResult r = run("chat -m " + (dir_ / "missing.gguf").string(), "hi\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing.gguf"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace hetmoe
