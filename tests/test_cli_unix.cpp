// The hetmoe program as a Unix tool (issue 16): exit codes 0/1/2/130, messages that name the flag and the value,
// output files written through or replaced whole, inputs that are directories refused, Ctrl-C, full stdout, the flags
// llama.cpp users type. Every test runs build/bin/hetmoe and looks at its exit code, stdout, stderr and files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
const std::string kModel = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";
const std::string kVocab = std::string(HETMOE_TEST_DATA_DIR) + "/o200k_base.tiktoken";

using test::RunResult;
using test::slurp;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class CliUnix : public test::CliTest {
 protected:
  /// Runs `hetmoe ARGS` through sh with stdout redirected as `stdout_redirect` says (e.g. ">/dev/full", ">&-").
  RunResult run_with_stdout(const std::string& args, const std::string& stdout_redirect) {
    const auto err = dir_ / "stderr.txt";
    const std::string cmd = test::kHetmoeBinary + " " + args + " </dev/null " + stdout_redirect + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    RunResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = slurp(err);
    return r;
  }
  std::string write_file(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

// --- 1. Output files: written through when not a regular file, replaced whole otherwise, no temporaries ---

TEST_F(CliUnix, LogitsOutThroughASymlinkWritesTheTargetAndKeepsTheLink) {
  const std::string ids = write_file("ids.txt", "1 2 3");
  const fs::path target = dir_ / "target.f32", link = dir_ / "link.f32";
  std::ofstream(target) << "old";
  fs::create_symlink(target, link);
  RunResult r = run("eval -m " + kModel + " --ids " + ids + " --logits-out " + link.string() + " -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::file_size(target), 3u * 4106u * sizeof(float));
  EXPECT_FALSE(fs::exists(dir_ / "link.f32.tmp"));
}

TEST_F(CliUnix, LogitsOutIntoAFifoWritesThroughIt) {
  const std::string ids = write_file("ids.txt", "1 2");
  const fs::path fifo = dir_ / "logits.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // The read end opened first (non-blocking: no writer yet); 2 rows of logits (32 KiB) fit in the pipe's buffer.
  const int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  RunResult r = run("eval -m " + kModel + " --ids " + ids + " --logits-out " + fifo.string() + " -t 1");
  std::string received;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) received.append(buf, static_cast<size_t>(n));
  ::close(fd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced by a file";
  EXPECT_EQ(received.size(), 2u * 4106u * sizeof(float));
}

TEST_F(CliUnix, LogitsOutToADirectoryIsRefusedBeforeAnyWorkAndLeavesNoTemporary) {
  const std::string ids = write_file("ids.txt", "1 2 3");
  fs::create_directory(dir_ / "out");
  RunResult r = run("eval -m " + kModel + " --ids " + ids + " --logits-out " + (dir_ / "out").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "--logits-out")) << r.err;
  EXPECT_TRUE(contains(r.err, "is a directory")) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out.tmp"));
}

TEST_F(CliUnix, LogitsOutOnAFullDeviceFailsWithTheReason) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string ids = write_file("ids.txt", "1 2 3");
  // Through a link in the test's directory: a binary with the bug (rename over the path) replaces the link, not the
  // machine's /dev/full (run as root, it did replace /dev/full).
  const fs::path full = dir_ / "full";
  fs::create_symlink("/dev/full", full);
  RunResult r = run("eval -m " + kModel + " --ids " + ids + " --logits-out " + full.string() + " -t 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "No space left")) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat("/dev/full", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
}

TEST_F(CliUnix, SynthRefusesToReplaceSomethingThatIsNotARegularFile) {
  const fs::path fifo = dir_ / "model.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  RunResult r = run("synth --preset tiny -o " + fifo.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "not a regular file")) << r.err;
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

// --- 2. Ctrl-C during generate: the trace is written, the stats printed, exit 130 ---

TEST_F(CliUnix, InterruptedGenerateWritesTheTracePrintsTheStatsAndExits130) {
  const fs::path trace = dir_ / "t.json", out = dir_ / "out.txt", err = dir_ / "err.txt";
  // The reference path with -n -1 on a large context runs for many seconds unless interrupted.
  test::BackgroundRun generate({"generate", "-m", kModel, "--raw", "-p", "Once", "-n", "-1", "-c", "100000",
                                "--reference", "-t", "1", "--seed", "1", "--trace", trace.string()},
                               out, err);
  ASSERT_GT(generate.pid(), 0);
  // Wait until tokens are being generated (stdout grows past the echoed prompt), then Ctrl-C.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    if (fs::exists(out, ec) && fs::file_size(out, ec) > 8) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int status = generate.stop(SIGINT);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << slurp(err);
  EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(err);
  const std::string e = slurp(err);
  EXPECT_TRUE(contains(e, "interrupted")) << e;
  EXPECT_TRUE(contains(e, "decode")) << e;
  EXPECT_TRUE(contains(e, "tok/s")) << e;
  const std::string t = slurp(trace);
  ASSERT_FALSE(t.empty()) << "the trace is empty";
  EXPECT_TRUE(nlohmann::json::accept(t)) << "the trace is not complete JSON";
}

// --- 3. Write errors on stdout ---

TEST_F(CliUnix, GenerateIntoAFullStdoutFails) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  RunResult r = run_with_stdout("generate -m " + kModel + " --raw -p hi -n 4 --seed 1", ">/dev/full");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "stdout")) << r.err;
}

TEST_F(CliUnix, GenerateIntoAClosedStdoutFails) {
  RunResult r = run_with_stdout("generate -m " + kModel + " --raw -p hi -n 4 --seed 1", ">&-");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "stdout")) << r.err;
}

TEST_F(CliUnix, ConfigPrintDefaultIntoAClosedStdoutFails) {
  RunResult r = run_with_stdout("config --print-default", ">&-");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "stdout")) << r.err;
}

// --- 4. Directories as input files ---

TEST_F(CliUnix, EveryInputFlagRefusesADirectoryAndSaysSo) {
  const std::string d = dir_.string();
  const std::string ids = write_file("ids.txt", "1 2");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"config --check " + d, "--check"},
      {"generate -m " + kModel + " --config " + d, "--config"},
      {"tokenize -m " + kModel + " -f " + d, "-f"},
      {"generate -m " + kModel + " --plan " + d, "--plan"},
      {"generate -m " + kModel + " --stats " + d, "--stats"},
      {"profile -m " + kModel + " -f " + d + " -o " + d + "/s.json", "-f"},
      {"eval -m " + kModel + " --ids " + d + " --logits-out " + d + "/l.f32", "--ids"},
      {"info -m " + d, "-m"},
      {"generate -m " + kModel + " -f " + d, "-f"},
  };
  for (const auto& [args, flag] : cases) {
    RunResult r = run(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, flag + " " + d)) << args << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "is a directory")) << args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
  }
}

// --- 5. config --check applies every rule the commands apply ---

TEST_F(CliUnix, ConfigCheckRefusesCountWithPerNodeAsGenerateDoes) {
  const std::string cfg = write_file("c.toml", "[threads]\ncount = 2\nper_node = 1\n");
  RunResult check = run("config --check " + cfg);
  EXPECT_EQ(check.exit_code, 1) << check.out;
  EXPECT_TRUE(contains(check.err, "c.toml:3")) << check.err;
  EXPECT_TRUE(contains(check.err, "per_node")) << check.err;
  RunResult gen = run("generate -m " + kModel + " --config " + cfg + " -n 1");
  EXPECT_EQ(gen.exit_code, 1);
  EXPECT_TRUE(contains(gen.err, "per_node")) << gen.err;
}

TEST_F(CliUnix, ConfigCheckRefusesCoresThatDisagreeWithCount) {
  const std::string cfg = write_file("c.toml", "[threads]\ncount = 3\ncores = [0, 1]\n");
  RunResult r = run("config --check " + cfg);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.err, "threads.cores")) << r.err;
}

// --- 6. plan's bandwidth flags ---

TEST_F(CliUnix, PlanRefusesZeroNegativeAndNanBandwidths) {
  for (const std::string flag : {"--cpu-bw 0", "--cpu-bw -5", "--gpu-bw nan", "--pcie-bw inf"}) {
    RunResult r = run("plan -m " + kModel + " " + flag);
    EXPECT_EQ(r.exit_code, 2) << flag << "\n" << r.out;
    EXPECT_TRUE(contains(r.err, flag.substr(0, flag.find(' ')))) << flag << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, flag.substr(flag.find(' ') + 1))) << flag << "\n" << r.err;
  }
}

// --- 7. Output paths checked before any work ---

TEST_F(CliUnix, StatsOutIntoAMissingDirectoryIsRefusedBeforeGenerating) {
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n 4 --stats-out " + (dir_ / "nope" / "s.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "--stats-out")) << r.err;
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;
  EXPECT_TRUE(r.out.empty()) << "generated before the refusal: " << r.out;
  EXPECT_FALSE(contains(r.err, "tok/s")) << r.err;
}

TEST_F(CliUnix, PlanOutputIntoAMissingDirectoryIsRefused) {
  RunResult r = run("plan -m " + kModel + " -o " + (dir_ / "nope" / "p.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "-o")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

// --- 8. A prompt that does not fit is refused before anything is printed ---

TEST_F(CliUnix, APromptThatDoesNotFitPrintsNothingOnStdout) {
  RunResult r = run("generate -m " + kModel + " --raw -p \"Hello world\" -n 100 --ctx 50");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "the context is 50")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

// --- 9. Exit codes: 2 for usage errors, the flag and the value named ---

TEST_F(CliUnix, ArgumentErrorsExitWith2AndNameTheFlagAndTheValue) {
  RunResult r = run("generate -t abc");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--threads")) << r.err;
  EXPECT_TRUE(contains(r.err, "abc is not an integer")) << r.err;

  r = run("generate -t 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "0 is out of range 1..4096")) << r.err;

  r = run("bench -m " + kModel + " -p -5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--n-prompt")) << r.err;
  EXPECT_TRUE(contains(r.err, "-5")) << r.err;

  r = run("generate --kv-type q4");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "q4")) << r.err;

  r = run("eval -m " + kModel);  // required options missing
  EXPECT_EQ(r.exit_code, 2);

  r = run("generate --no-such-flag");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--no-such-flag: unknown option")) << r.err;

  r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "Exit codes: 0 success, 1 error, 2 usage error, 130 interrupted")) << r.out;
}

// --- 10. llama.cpp flags and mistyped commands ---

TEST_F(CliUnix, NglIsAnUnknownOptionPointingToOurFlags) {
  RunResult r = run("generate -m " + kModel + " -ngl 99");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "-ngl")) << r.err;
  EXPECT_TRUE(contains(r.err, "--device")) << r.err;
  EXPECT_TRUE(contains(r.err, "--vram-budget")) << r.err;
  EXPECT_TRUE(contains(r.err, "--n-cpu-moe")) << r.err;
  EXPECT_FALSE(contains(r.err, "gl")  && contains(r.err, "--n-predict")) << "parsed as -n gl: " << r.err;
}

TEST_F(CliUnix, CnvPointsToChat) {
  RunResult r = run("generate -m " + kModel + " -cnv");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "hetmoe chat")) << r.err;
}

TEST_F(CliUnix, AnUnknownLongOptionGetsASuggestion) {
  RunResult r = run("generate -m " + kModel + " --n-predit 4");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "did you mean --n-predict?")) << r.err;
}

TEST_F(CliUnix, GenSuggestsGenerate) {
  RunResult r = run("gen -p hi");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown command 'gen'")) << r.err;
  EXPECT_TRUE(contains(r.err, "did you mean 'generate'?")) << r.err;
}

// --- 11. synth --vocab with a preset smaller than the file ---

TEST_F(CliUnix, SynthSaysHowManyTokensOfTheVocabularyItKeeps) {
  RunResult r = run("synth --preset tiny --vocab " + kVocab + " -o " + (dir_ / "v.gguf").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "keeps the lowest 4096 of its 199998 tokens")) << r.err;
}

// --- 12. probe --cache-dir ---

TEST_F(CliUnix, ProbeCacheDirThatIsAFileIsRefusedBeforeMeasuring) {
  const std::string file = write_file("not-a-dir", "x");
  RunResult r = run("probe --cache-dir " + file);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "--cache-dir " + file + ": not a directory")) << r.err;
  EXPECT_FALSE(contains(r.out, "saved")) << r.out;
}

TEST_F(CliUnix, ProbeSaysWhenItCreatesTheCacheDirectory) {
  const fs::path cache = dir_ / "new-cache";
  RunResult r = run("probe --cache-dir " + cache.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "created the cache directory " + cache.string())) << r.err;
  EXPECT_TRUE(contains(r.out, "saved to")) << r.out;
}

// --- 13. bench: RSS without the probe buffer, roofline never above 100 %, --interleave ---

TEST_F(CliUnix, BenchPeakRssExcludesTheBandwidthProbeAndRooflineStaysAtOrBelowOne) {
  RunResult r = run("bench -m " + kModel + " -p 8 -n 4 -r 2 -t 1 -o json --interleave");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    // The probe reads 1 GiB; the tiny model's run needs a few tens of MB.
    EXPECT_LT(row["peak_rss_bytes"].get<uint64_t>(), 512ull << 20) << row.dump();
    if (!row["roofline_fraction"].is_null()) {
      EXPECT_LE(row["roofline_fraction"].get<double>(), 1.0) << row.dump();
    }
    EXPECT_EQ(row["samples_ns"].size(), 2u);
  }
}

TEST_F(CliUnix, BenchSaysThatNoGpuWasFoundOncePerRun) {
  RunResult r = run("bench -m " + kModel + " -p 0 -n 2 -r 1 -t 1,2 --device auto");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t count = 0;
  for (size_t at = r.err.find("running on the CPU"); at != std::string::npos;
       at = r.err.find("running on the CPU", at + 1))
    ++count;
  EXPECT_LE(count, 1u) << r.err;
}

// --- 14. --date, --seed -1, chat's commands and exit code, the trace's event count ---

TEST_F(CliUnix, DateIsValidated) {
  for (const std::string date : {"2024-13-01", "2023-02-29", "tomorrow"}) {
    RunResult r = run("generate -m " + kModel + " --date " + date);
    EXPECT_EQ(r.exit_code, 2) << date;
    EXPECT_TRUE(contains(r.err, "--date")) << r.err;
    EXPECT_TRUE(contains(r.err, date)) << r.err;
  }
  EXPECT_EQ(run("generate -m " + kModel + " --date 2024-02-29 -n 1").exit_code, 0);
}

TEST_F(CliUnix, SeedMinusOneMeansRandom) {
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n 1 --seed -1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "seed 18446744073709551615")) << r.err;
  EXPECT_TRUE(contains(r.err, "seed ")) << r.err;
}

TEST_F(CliUnix, ChatExitWithSpacesIsACommandNotATurn) {
  RunResult r = run("chat -m " + kModel + " -n 2 --seed 1", "  /exit  \nhello\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "tok/s | prefill")) << "a turn ran: " << r.err;
}

TEST_F(CliUnix, PipedChatWhoseTurnsFailExitsWith1) {
  // A context of 8 tokens holds no harmony conversation: every turn fails.
  RunResult r = run("chat -m " + kModel + " -c 8 --seed 1", "hello\nagain\n");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "2 of 2 turns failed")) << r.err;
}

TEST_F(CliUnix, TheTraceLineCountsTheEventsInTheFile) {
  const fs::path trace = dir_ / "t.json";
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n 8 -t 2 --seed 1 --trace " + trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(slurp(trace));
  const std::string expected = "trace: " + std::to_string(j["traceEvents"].size()) + " events";
  EXPECT_TRUE(contains(r.err, expected)) << expected << "\n" << r.err;
}

// --- Friction: what llama.cpp users type ---

TEST_F(CliUnix, CtxSizeIsAnAliasOfCtx) {
  RunResult r = run("generate -m " + kModel + " --raw -p \"Hello world\" -n 100 --ctx-size 50");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "the context is 50")) << r.err;
}

TEST_F(CliUnix, PromptFromAFileFromDashAndFromAPipe) {
  const std::string file = write_file("p.txt", "Alpha beta");
  RunResult r = run("generate -m " + kModel + " --raw -n 1 --seed 1 -f " + file);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Alpha beta", 0), 0u) << r.out;
  r = run("generate -m " + kModel + " --raw -n 1 --seed 1 -p -", "Gamma delta");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Gamma delta", 0), 0u) << r.out;
  r = run("generate -m " + kModel + " --raw -n 1 --seed 1", "Piped text");  // stdin is a file here, not a terminal
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Piped text", 0), 0u) << r.out;
}

TEST_F(CliUnix, NMinusOneGeneratesUntilTheContextIsFull) {
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n -1 -c 24 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "decode")) << r.err;
  EXPECT_FALSE(contains(r.err, "decode 0 tokens")) << r.err;
}

TEST_F(CliUnix, APositionalModelPathIsTheModel) {
  RunResult r = run("generate " + kModel + " --raw -p hi -n 1 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "model " + kModel)) << r.err;
}

TEST_F(CliUnix, NCpuMoeIsAcceptedAndExcludesCpuMoe) {
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n 1 --n-cpu-moe 2 --seed 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run("generate -m " + kModel + " --raw -p hi -n 1 --n-cpu-moe 2 --cpu-moe");
  EXPECT_EQ(r.exit_code, 2);  // a usage error: the parser refuses the pair
  EXPECT_TRUE(contains(r.err, "excludes")) << r.err;
}

TEST_F(CliUnix, ChatAndBenchFallBackToTheDefaultModel) {
  const std::string env = "HETMOE_CACHE_DIR=" + (dir_ / "cache").string() + " ";
  const std::string out = (dir_ / "o.txt").string(), err = (dir_ / "e.txt").string();
  ASSERT_EQ(std::system((env + test::kHetmoeBinary + " bench -p 0 -n 2 -r 1 -t 1 >" + out + " 2>" + err).c_str()), 0)
      << slurp(dir_ / "e.txt");
  EXPECT_TRUE(contains(slurp(dir_ / "o.txt"), "tg2")) << slurp(dir_ / "o.txt");
  ASSERT_EQ(std::system(("printf 'hi\\n' | " + env + test::kHetmoeBinary + " chat -n 2 --seed 1 >" + out + " 2>" +
                         err).c_str()),
            0)
      << slurp(dir_ / "e.txt");
  EXPECT_TRUE(fs::exists(dir_ / "cache" / "synth-tiny-seed0.gguf"));
}

TEST_F(CliUnix, AVramBudgetWithoutAUnitBelowOneMebibyteIsRefused) {
  RunResult r = run("generate -m " + kModel + " --vram-budget 512");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--vram-budget")) << r.err;
  EXPECT_TRUE(contains(r.err, "give a unit")) << r.err;
  r = run("plan -m " + kModel + " --vram-budget 4096");
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(CliUnix, PlanSaysWhichRatesItUsed) {
  RunResult r = run("plan -m " + kModel + " --cpu-bw 40");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "rates from: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "--cpu-bw from the command line")) << r.out;
}

TEST_F(CliUnix, UbatchSizeIsCheckedAndLlamaCppsUbGetsAPointer) {
  RunResult r = run("generate -m " + kModel + " --raw -p hi -n 1 --ubatch-size 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--ubatch-size")) << r.err;
  r = run("generate -m " + kModel + " --raw -p hi -n 1 -ub 8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "use --ubatch-size")) << r.err;
  // A prompt longer than one batch of 3 tokens is prefilled in several batches.
  r = run("generate -m " + kModel + " --raw -p \"one two three four five six seven\" -n 2 --seed 1 --ubatch-size 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace hetmoe
