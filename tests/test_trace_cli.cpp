// --trace and `hetmoe trace-summary` through the hetmoe program: a 32-token generation on the tiny fixture model
// writes a trace that parses back (nlohmann::json) with spans for every layer, counters and named threads.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <set>

#include "runtime/model/model.h"
#include "tests/cli_runner.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::RunResult;
using test::slurp;

const std::string kModel = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

class TraceCli : public test::CliTest {};

TEST_F(TraceCli, GenerateWritesATraceWithEveryLayerCountersAndNamedThreadsThatSummarizes) {
  const fs::path trace = dir_ / "generate.json";
  RunResult r = run("generate -m " + kModel + " --raw -p hello -n 32 -t 2 --seed 3 --trace " + trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("trace: "), std::string::npos) << r.err;
  const json doc = json::parse(slurp(trace));
  ASSERT_TRUE(doc["traceEvents"].is_array());

  auto model = Model::load(kModel);
  ASSERT_TRUE(model.has_value());
  const uint32_t num_layers = model->hparams.num_layers;
  std::map<int64_t, std::string> names;
  std::set<int64_t> tids;
  std::map<std::string, std::set<int64_t>> layers_of;
  std::map<std::string, int> counters, steps;
  for (const json& e : doc["traceEvents"]) {
    const std::string ph = e["ph"];
    if (ph == "M" && e["name"] == "thread_name") names[e["tid"]] = e["args"]["name"];
    if (ph != "M") tids.insert(e["tid"].get<int64_t>());
    if (ph == "C")
      for (auto it = e["args"].begin(); it != e["args"].end(); ++it)
        ++counters[e["name"].get<std::string>() + " " + it.key()];
    if (ph == "X" && e["cat"] == "step") ++steps[e["name"]];
    if (ph == "X" && e.contains("args") && e["args"].contains("layer"))
      layers_of[e["name"]].insert(e["args"]["layer"].get<int64_t>());
  }
  for (int64_t tid : tids) EXPECT_TRUE(names.count(tid)) << "tid " << tid << " has no thread_name";
  bool main_named = false, worker_named = false;
  for (const auto& [tid, name] : names) {
    main_named |= name.rfind("main (node ", 0) == 0;
    worker_named |= name.rfind("cpu worker 1 (node ", 0) == 0;
  }
  EXPECT_TRUE(main_named);
  EXPECT_TRUE(worker_named) << "2 threads: the second one records too";
  for (const char* name : {"attention block", "moe block", "qkv", "attention", "experts", "expert down", "combine"})
    EXPECT_EQ(layers_of[name].size(), num_layers) << name;
  EXPECT_EQ(steps["prefill"], 1);
  EXPECT_GE(steps["decode"], 1);
  EXPECT_GE(counters["decode tok/s"], 1);
  EXPECT_EQ(counters["expert hits cpu"], steps["prefill"] + steps["decode"]);

  r = run("trace-summary " + trace.string() + " --top 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (uint32_t l = 0; l < num_layers; ++l)
    EXPECT_NE(r.out.find("\n| " + std::to_string(l) + " | "), std::string::npos) << "layer " << l << "\n" << r.out;
  EXPECT_NE(r.out.find("top 5 ops by total time"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| cpu | 2 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode tok/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no GPU spans"), std::string::npos) << r.out;
}

TEST_F(TraceCli, BenchAndChatWriteTracesToo) {
  const fs::path bench_trace = dir_ / "bench.json";
  RunResult r = run("bench -m " + kModel + " -p 4 -n 4 -r 1 -t 1 --trace " + bench_trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json bench = json::parse(slurp(bench_trace));
  int decode_steps = 0;
  for (const json& e : bench["traceEvents"]) decode_steps += e["ph"] == "X" && e["name"] == "decode";
  EXPECT_EQ(decode_steps, 2 * 4);  // a warm-up and one repetition of tg4

  const fs::path chat_trace = dir_ / "chat.json";
  r = run("chat -m " + kModel + " -n 4 -t 1 --seed 1 --trace " + chat_trace.string(), "Hi\n/exit\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json chat = json::parse(slurp(chat_trace));
  int prefill_steps = 0;
  for (const json& e : chat["traceEvents"]) prefill_steps += e["ph"] == "X" && e["name"] == "prefill";
  EXPECT_GE(prefill_steps, 1);
}

TEST_F(TraceCli, AnUnwritableTracePathFailsBeforeTheRun) {
  RunResult r = run("generate -m " + kModel + " --raw -p hello -n 4 --trace /nonexistent-dir-hetmoe/t.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent-dir-hetmoe/t.json"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << "nothing generated: " << r.out;
}

TEST_F(TraceCli, TraceSummaryRejectsAFileThatIsNotATrace) {
  const fs::path bad = dir_ / "bad.json";
  std::ofstream(bad) << "{\"not\": \"a trace\"}";
  RunResult r = run("trace-summary " + bad.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(bad.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("traceEvents"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace hetmoe
