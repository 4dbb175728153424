// End-to-end through the hetmoe program: synth → info → eval, generate, and CLI error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/exec/forward_reference.h"
#include "runtime/model/model.h"
#include "tests/cli_runner.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
const std::string kHetmoe = test::kHetmoeBinary;
const std::string kData = HETMOE_TEST_DATA_DIR;

using test::RunResult;
using test::slurp;

class CliRoundTrip : public test::CliTest {};

TEST_F(CliRoundTrip, SynthInfoEvalAgreeWithTheInProcessReference) {
  const fs::path model = dir_ / "tiny.gguf";
  RunResult r = run("synth --preset tiny --seed 7 --router-skew 1 -o " + model.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;

  r = run("info -m " + model.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("general.architecture"), std::string::npos);
  EXPECT_NE(r.out.find("blk.3.ffn_down_exps.weight"), std::string::npos);
  EXPECT_NE(r.out.find("MXFP4"), std::string::npos);
  EXPECT_NE(r.out.find("KV cache ("), std::string::npos);
  for (const char* type : {"f16", "q8_0", "q4_0", "f32"}) EXPECT_NE(r.out.find(std::string("\n  ") + type), std::string::npos) << type;

  const fs::path ids = dir_ / "ids.txt";
  std::ofstream(ids) << "1 2 3 4000 17 99\n4096 5 250";
  const fs::path logits_path = dir_ / "logits.f32";
  r = run("eval -m " + model.string() + " --ids " + ids.string() + " --logits-out " +
                           logits_path.string() + " --threads 2 --reference");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos);
  const std::vector<float> logits = test::read_f32_file(logits_path.string());
  ASSERT_EQ(logits.size(), 9u * 4106u);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));

  // The CLI's file equals an in-process run of the same reference path.
  auto m = Model::load(model.string());
  ASSERT_TRUE(m.has_value());
  auto fwd = ReferenceForward::create(*m, 64, KvCacheType::kF16, 1);
  ASSERT_TRUE(fwd.has_value());
  std::vector<float> row(4106);
  const int32_t seq[] = {1, 2, 3, 4000, 17, 99, 4096, 5, 250};
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(fwd->forward(seq[i], row).has_value());
    for (int v = 0; v < 4106; ++v) ASSERT_NEAR(row[v], logits[i * 4106 + v], 1e-4f) << "position " << i;
  }
}

TEST_F(CliRoundTrip, EvalOnTheFixtureMeetsTheAgreementBarOnBothPaths) {
  const auto reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
  const auto margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
  for (const std::string path : {"", " --reference"}) {
    const fs::path logits_path = dir_ / "fixture.f32";
    RunResult r = run("eval -m " + kData + "/gpt-oss-tiny.gguf --ids " + kData +
                                       "/gpt-oss-tiny.ids.txt --logits-out " + logits_path.string() + path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto ours = test::read_f32_file(logits_path.string());
    ASSERT_EQ(ours.size(), reference.size());
    const auto a = test::agreement(reference, ours, 4106, margin);
    EXPECT_LE(a.p50_all, 1e-3) << path;        // the bar
    EXPECT_LE(a.p99_confident, 5e-3) << path;  // the bar
  }
}

TEST_F(CliRoundTrip, EvalReportsABadTokenIdWithFileAndIndex) {
  const fs::path ids = dir_ / "bad.txt";
  std::ofstream(ids) << "1 2 99999";
  RunResult r = run("eval -m " + kData + "/gpt-oss-tiny.gguf --ids " + ids.string() +
                                     " --logits-out " + (dir_ / "x.f32").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("entry 2 is '99999'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "x.f32"));
}

TEST_F(CliRoundTrip, EvalRejectsMoreTokensThanTheContextBeforeAnyWork) {
  RunResult r = run("eval -m " + kData + "/gpt-oss-tiny.gguf --ids " + kData +
                                     "/gpt-oss-tiny.ids.txt --ctx 100 --logits-out " + (dir_ / "x.f32").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("200 tokens but the context is 100"), std::string::npos) << r.err;
}

TEST_F(CliRoundTrip, MissingModelFileIsAClearError) {
  RunResult r = run("info -m " + (dir_ / "nope.gguf").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope.gguf"), std::string::npos) << r.err;
}

TEST_F(CliRoundTrip, TruncatedModelIsAClearErrorNotACrash) {
  const std::string bytes = slurp(kData + "/gpt-oss-tiny.gguf");
  const fs::path cut = dir_ / "cut.gguf";
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  RunResult r = run("eval -m " + cut.string() + " --ids " + kData + "/gpt-oss-tiny.ids.txt --logits-out " +
                                     (dir_ / "x.f32").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cut.gguf"), std::string::npos) << r.err;
}

TEST_F(CliRoundTrip, GenerateStreamsTextAndReportsTokPerSecond) {
  RunResult r = run("generate -m " + kData + "/gpt-oss-tiny.gguf -p \"Hello world\" -n 12 --seed 1 --raw");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Hello world", 0), 0u) << r.out;
  EXPECT_GT(r.out.size(), std::string("Hello world\n").size());
  EXPECT_NE(r.err.find("decode"), std::string::npos);
  EXPECT_NE(r.err.find("tok/s"), std::string::npos);
  // Same seed → same text.
  RunResult again = run("generate -m " + kData + "/gpt-oss-tiny.gguf -p \"Hello world\" -n 12 --seed 1 --raw");
  EXPECT_EQ(again.out, r.out);
}

TEST_F(CliRoundTrip, GenerateRejectsAPromptThatDoesNotFitTheContext) {
  RunResult r = run("generate -m " + kData + "/gpt-oss-tiny.gguf -p \"Hello world\" -n 100 --ctx 50");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the context is 50"), std::string::npos) << r.err;
}

TEST_F(CliRoundTrip, GenerateWithoutAModelUsesTheSyntheticDefault) {
  const std::string env = "HETMOE_CACHE_DIR=" + (dir_ / "cache").string() + " ";
  const std::string cmd = env + kHetmoe + " generate -p hi -n 4 --seed 2 >" + (dir_ / "o.txt").string() + " 2>" +
                          (dir_ / "e.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(dir_ / "e.txt");
  EXPECT_TRUE(fs::exists(dir_ / "cache" / "synth-tiny-seed0.gguf"));
  EXPECT_NE(slurp(dir_ / "e.txt").find("tok/s"), std::string::npos);
}

TEST_F(CliRoundTrip, UnknownSubcommandAndHelp) {
  EXPECT_NE(run("frobnicate").exit_code, 0);
  RunResult r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"info", "eval", "synth", "generate"}) EXPECT_NE(r.out.find(sub), std::string::npos) << sub;
}

}  // namespace
}  // namespace hetmoe
