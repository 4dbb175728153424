// The KV cache type flags and keys as a user meets them: --kv-type, -ctk/-ctv (llama.cpp's names) and
// --cache-type-k/-v on generate, eval and bench; bench's JSON type_k/type_v and KV bytes; the config file's
// model.kv_type_k/_v; bad values named in the error.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

const std::string kModel = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

class KvCli : public test::CliTest {};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST_F(KvCli, GenerateRunsWithQuantizedAndMixedKvTypesUnderEveryName) {
  for (const std::string flags : {"-ctk q8_0 -ctv q8_0", "--kv-type q4_0", "-ctk=q8_0 --cache-type-v q4_0",
                                  "--kv-type f32 -ctv q8_0"}) {
    test::RunResult r = run("generate -m " + kModel + " -p hello -n 3 -t 2 --temp 0 --device cpu " + flags);
    EXPECT_EQ(r.exit_code, 0) << flags << "\n" << r.err;
  }
}

TEST_F(KvCli, UnknownKvTypeIsAUsageErrorNamingTheFlagAndValue) {
  test::RunResult r = run("generate -m " + kModel + " -p hi -n 1 -ctk q5_0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--cache-type-k")) << r.err;
  EXPECT_TRUE(contains(r.err, "q5_0")) << r.err;
  r = run("eval -m " + kModel + " --ids x --logits-out y -ctv f8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--cache-type-v")) << r.err;
  EXPECT_TRUE(contains(r.err, "f8")) << r.err;
}

// Per position and layer the tiny model (2 KV heads of 32) takes 2 · (34 + 18) bytes with q8_0 K and q4_0 V: 104,
// 416 over its 4 layers. At bench's context (depth 0 + 2 + 1 tokens, at least 16) every layer holds all 16 positions.
TEST_F(KvCli, BenchReportsTheKvTypesAndTheirBytes) {
  test::RunResult r = run("bench -m " + kModel + " -p 0 -n 2 -r 1 -t 1 --device cpu -o json -ctk q8_0 -ctv q4_0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["type_k"], "q8_0");
  EXPECT_EQ(rows[0]["type_v"], "q4_0");
  EXPECT_EQ(rows[0]["kv_bytes_per_token"].get<uint64_t>(), 416u);
  EXPECT_EQ(rows[0]["n_ctx"].get<uint64_t>(), 16u);
  EXPECT_EQ(rows[0]["kv_bytes_at_context"].get<uint64_t>(), 16u * 416u);
}

// The config file's keys apply when no flag is given; a flag overrides them (eval's logits with q4_0 differ from
// f16's, so the type in effect shows in the output file).
TEST_F(KvCli, ConfigKeysSetTheKvTypesAndFlagsOverrideThem) {
  const auto ids = dir_ / "ids.txt";
  std::ofstream(ids) << "1 2 3 4 5 6 7 8 9 10";
  const auto config = dir_ / "c.toml";
  std::ofstream(config) << "[model]\nkv_type = \"f16\"\nkv_type_k = \"q4_0\"\nkv_type_v = \"q4_0\"\n";
  const auto run_eval = [&](const std::string& extra, const std::string& out) {
    test::RunResult r = run("eval -m " + kModel + " --ids " + ids.string() + " --logits-out " + (dir_ / out).string() +
                            " -t 1 --device cpu " + extra);
    EXPECT_EQ(r.exit_code, 0) << extra << "\n" << r.err;
    return test::slurp(dir_ / out);
  };
  const std::string f16 = run_eval("", "f16.f32");
  const std::string from_config = run_eval("--config " + config.string(), "config.f32");
  const std::string q4 = run_eval("--kv-type q4_0", "q4.f32");
  const std::string overridden = run_eval("--config " + config.string() + " --kv-type f16", "overridden.f32");
  EXPECT_EQ(from_config, q4);
  EXPECT_NE(from_config, f16);
  EXPECT_EQ(overridden, f16);
}

}  // namespace
}  // namespace hetmoe
