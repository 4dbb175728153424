// --trace and `hetmoe trace-summary` through the hetmoe program: a 32-token generation on the tiny fixture model
// writes a trace that parses back (nlohmann::json) with spans for every layer, counters and named threads; `serve`
// writes its trace (and --stats-out) when SIGINT stops it.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <thread>
#include <vector>

#include "placement/expert_stats.h"
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
  // The second thread records only if it takes part in some op: on a loaded host (ctest -j2 beside a build) the main
  // thread can run every chunk of the tiny model itself, so a run without a worker event is retried (up to 3 runs).
  RunResult r;
  json doc;
  for (int attempt = 0; attempt < 3; ++attempt) {
    r = run("generate -m " + kModel + " --raw -p hello -n 32 -t 2 --seed 3 --trace " + trace.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    doc = json::parse(slurp(trace));
    ASSERT_TRUE(doc["traceEvents"].is_array());
    bool worker_recorded = false;
    for (const json& e : doc["traceEvents"])
      worker_recorded |= e["ph"] == "M" && e["name"] == "thread_name" &&
                         e["args"]["name"].get<std::string>().rfind("cpu worker 1 (node ", 0) == 0;
    if (worker_recorded) break;
  }
  EXPECT_NE(r.err.find("trace: "), std::string::npos) << r.err;

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

// One request to `serve --trace`, then SIGINT: the trace appears only then (until the stop only FILE.tmp exists) and
// holds the server's steps around the forward pass's own steps, and the request on its slot's track; the counts agree
// with the answer's usage and with --stats-out.
TEST_F(TraceCli, ServeWritesItsTraceAndStatsWhenSigintStopsIt) {
  const fs::path trace = dir_ / "serve.json", stats = dir_ / "serve-stats.json", err = dir_ / "serve.err";
  test::BackgroundRun server({"serve", "-m", kModel, "--port", "0", "-t", "2", "--trace", trace.string(),
                             "--stats-out", stats.string()},
                            dir_ / "serve.out", err);
  ASSERT_GT(server.pid(), 0);
  int port = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (std::string e; (e = slurp(err)).find("ready:") == std::string::npos;) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "serve did not get ready:\n" << e;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::smatch m;
  const std::string started = slurp(err);
  ASSERT_TRUE(std::regex_search(started, m, std::regex(R"(listening on http://127\.0\.0\.1:(\d+))"))) << started;
  port = std::stoi(m[1]);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  auto answer = client.Post("/v1/completions", R"({"prompt": "hello", "max_tokens": 6, "temperature": 0})",
                            "application/json");
  ASSERT_TRUE(answer);
  ASSERT_EQ(answer->status, 200) << answer->body;
  const json usage = json::parse(answer->body)["usage"];
  EXPECT_FALSE(fs::exists(trace)) << "written before the stop";
  EXPECT_TRUE(fs::exists(fs::path(trace.string() + ".tmp")));

  const int status = server.stop(SIGINT);
  const std::string e = slurp(err);
  ASSERT_TRUE(WIFEXITED(status)) << e;
  EXPECT_EQ(WEXITSTATUS(status), 0) << e;
  EXPECT_NE(e.find("trace: "), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(fs::path(trace.string() + ".tmp")));
  const json doc = json::parse(slurp(trace));

  std::map<int64_t, std::string> names;
  struct Span {
    double ts, end;
    int64_t tid;
    json args;
  };
  std::map<std::string, std::vector<Span>> spans;  // by name
  for (const json& ev : doc["traceEvents"]) {
    if (ev["ph"] == "M" && ev["name"] == "thread_name") names[ev["tid"]] = ev["args"]["name"];
    if (ev["ph"] != "X") continue;
    const double ts = ev["ts"].get<double>();
    spans[ev["name"]].push_back({ts, ts + ev["dur"].get<double>(), ev["tid"].get<int64_t>(),
                                 ev.value("args", json::object())});
  }
  // Named before its first event, the scheduler thread takes no worker number: the workers are numbered from 1.
  std::vector<int> worker_numbers;
  for (const auto& [tid, name] : names)
    if (name.rfind("cpu worker ", 0) == 0) worker_numbers.push_back(std::stoi(name.substr(11)));
  for (int n : worker_numbers) EXPECT_LE(n, static_cast<int>(worker_numbers.size())) << "cpu worker " << n;
  ASSERT_EQ(spans["request"].size(), 1u);
  const Span& request = spans["request"][0];
  EXPECT_EQ(names[request.tid], "server slot 0");
  EXPECT_EQ(request.args["prompt_tokens"], usage["prompt_tokens"]);
  EXPECT_EQ(request.args["generated_tokens"], usage["completion_tokens"]);

  // Every forward step lies inside a server step on the scheduler thread; the server steps' token counts are the
  // forward steps'.
  const std::vector<Span>& server_steps = spans["server step"];
  ASSERT_GE(server_steps.size(), 1u);
  int64_t prefill_tokens = 0, decode_tokens = 0;
  for (const Span& s : server_steps) {
    EXPECT_EQ(names[s.tid], "server scheduler");
    // The request ends inside its last step (when that step samples its last token).
    EXPECT_GE(s.ts, request.ts);
    EXPECT_LE(s.ts, request.end);
    prefill_tokens += s.args["prefill_tokens"].get<int64_t>();
    decode_tokens += s.args["decode_tokens"].get<int64_t>();
  }
  int64_t forward_prefill = 0, forward_decode = 0;
  for (const char* name : {"prefill", "decode"}) {
    for (const Span& f : spans[name]) {
      bool inside = false;
      for (const Span& s : server_steps) inside |= s.tid == f.tid && s.ts <= f.ts && f.end <= s.end;
      EXPECT_TRUE(inside) << name << " step at " << f.ts << " is outside every server step";
      (std::string(name) == "prefill" ? forward_prefill : forward_decode) += f.args["num_tokens"].get<int64_t>();
    }
  }
  EXPECT_EQ(prefill_tokens, usage["prompt_tokens"].get<int64_t>());  // nothing cached: the first request
  EXPECT_EQ(prefill_tokens, forward_prefill);
  EXPECT_EQ(decode_tokens, forward_decode);

  auto counted = placement::expert_stats_load(stats.string());
  ASSERT_TRUE(counted.has_value()) << counted.error().message;
  EXPECT_EQ(counted->num_tokens, static_cast<uint64_t>(prefill_tokens + decode_tokens));
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
