// The trace recorder (profiler/trace.h) and summary (profiler/trace_summary.h): events recorded from several threads
// are written as Trace Event JSON and read back with a real JSON parser (nlohmann::json), and the structure the
// docs/profiling.md claims is checked: traceEvents, the phases used, a thread_name for every tid, span arguments, nesting within
// each thread, counter values, flows with matching ids inside spans.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "profiler/trace.h"
#include "profiler/trace_summary.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using profiler::TraceCategory;

const std::string kData = HETMOE_TEST_DATA_DIR;

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("hetmoe-trace-" + std::to_string(::getpid()) + "-" + name);
}

json write_and_parse(const std::string& name) {
  const fs::path path = temp_path(name);
  profiler::trace_stop();
  const Status s = profiler::trace_write_json(path.string());
  EXPECT_TRUE(s.has_value()) << s.error().message;
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  fs::remove(path);
  return json::parse(ss.str());  // throws (fails the test) on anything that is not JSON
}

std::set<std::string> category_names() {
  std::set<std::string> names;
  for (const auto& c : profiler::kTraceCategories) names.insert(c.name);
  return names;
}

/// Checks what every trace must satisfy; returns the events by phase.
std::map<std::string, std::vector<json>> check_structure(const json& doc) {
  EXPECT_TRUE(doc.is_object());
  EXPECT_TRUE(doc.contains("traceEvents") && doc["traceEvents"].is_array());
  EXPECT_TRUE(doc.contains("otherData") && doc["otherData"].is_object());
  std::map<std::string, std::vector<json>> by_phase;
  std::map<int64_t, std::string> thread_names;
  std::set<int64_t> tids_used;
  const std::set<std::string> categories = category_names();
  const auto pid = doc["traceEvents"].at(0).at("pid").get<int64_t>();
  for (const json& e : doc["traceEvents"]) {
    const std::string ph = e.at("ph").get<std::string>();
    EXPECT_TRUE(ph == "X" || ph == "C" || ph == "s" || ph == "f" || ph == "M") << e.dump();
    EXPECT_EQ(e.at("pid").get<int64_t>(), pid);
    const auto tid = e.at("tid").get<int64_t>();
    if (ph == "M") {
      if (e.at("name") == "thread_name") thread_names[tid] = e.at("args").at("name").get<std::string>();
    } else {
      tids_used.insert(tid);
      EXPECT_TRUE(e.at("ts").is_number()) << e.dump();
      EXPECT_TRUE(categories.count(e.at("cat").get<std::string>())) << e.dump();
    }
    if (ph == "X") {
      EXPECT_GE(e.at("dur").get<double>(), 0.0) << e.dump();
    }
    by_phase[ph].push_back(e);
  }
  for (int64_t tid : tids_used) EXPECT_TRUE(thread_names.count(tid) && !thread_names[tid].empty()) << "tid " << tid;

  // Nesting: within a tid, spans either nest or are disjoint (1 ns slack for the µs text rounding).
  std::map<int64_t, std::vector<std::pair<double, double>>> spans;
  for (const json& e : by_phase["X"]) {
    const double ts = e["ts"].get<double>();
    spans[e["tid"].get<int64_t>()].push_back({ts, ts + e["dur"].get<double>()});
  }
  for (auto& [tid, v] : spans) {
    std::sort(v.begin(), v.end(),
              [](auto a, auto b) { return a.first != b.first ? a.first < b.first : a.second > b.second; });
    std::vector<std::pair<double, double>> stack;
    for (const auto& s : v) {
      while (!stack.empty() && stack.back().second <= s.first + 1e-3) stack.pop_back();
      if (!stack.empty()) {
        EXPECT_LE(s.second, stack.back().second + 1e-3) << "tid " << tid << " span at " << s.first;
      }
      stack.push_back(s);
    }
  }

  // Flows: each start has exactly one end with the same id, category and name; both lie inside a span of their tid.
  std::map<uint64_t, int> starts, ends;
  const auto inside_a_span = [&](const json& e) {
    const double ts = e["ts"].get<double>();
    for (const auto& s : spans[e["tid"].get<int64_t>()])
      if (s.first <= ts && ts <= s.second) return true;
    return false;
  };
  for (const json& e : by_phase["s"]) {
    ++starts[e.at("id").get<uint64_t>()];
    EXPECT_EQ(e.at("cat"), "flow");
    EXPECT_EQ(e.at("name"), profiler::kTraceFlowName);
    EXPECT_TRUE(inside_a_span(e)) << e.dump();
  }
  for (const json& e : by_phase["f"]) {
    ++ends[e.at("id").get<uint64_t>()];
    EXPECT_EQ(e.at("cat"), "flow");
    EXPECT_EQ(e.at("name"), profiler::kTraceFlowName);
    EXPECT_EQ(e.at("bp"), "e");
    EXPECT_TRUE(inside_a_span(e)) << e.dump();
  }
  for (const auto& [id, n] : starts) {
    EXPECT_EQ(n, 1) << "flow " << id;
    EXPECT_EQ(ends[id], 1) << "flow " << id << " has no end";
  }
  for (const auto& [id, n] : ends) EXPECT_EQ(starts[id], 1) << "flow " << id << " has no start";
  return by_phase;
}

TEST(Trace, EventsFromSeveralThreadsParseBackWithTheClaimedStructure) {
  profiler::trace_start();
  constexpr int kThreads = 4, kSpans = 300;  // 300 × 2 spans per thread: more than one chunk in total
  std::vector<uint64_t> flow_ids(kThreads);
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w)
    threads.emplace_back([w, &flow_ids] {
      for (int i = 0; i < kSpans; ++i) {
        profiler::TraceSpan outer(TraceCategory::kOp, "outer", {{"worker", w}, {"i", i}});
        if (i == 0) {
          flow_ids[w] = profiler::trace_new_flow_id();
          outer.flow_out(flow_ids[w]);
        }
        profiler::TraceSpan inner(TraceCategory::kChunk, "inner");
        inner.arg("bytes", 1000 + w);
      }
      profiler::trace_counter(profiler::kTraceCounterDecode, 10.0 * (w + 1));
    });
  for (auto& t : threads) t.join();
  {
    profiler::TraceSpan wait(TraceCategory::kOp, "combine", {{"layer", 7}});
    for (uint64_t id : flow_ids) profiler::trace_flow_end(id);
  }
  const int64_t t0 = profiler::trace_now_ns();
  const uint64_t gpu_flow = profiler::trace_new_flow_id();
  {
    profiler::TraceSpan job(TraceCategory::kExpert, "cpu expert job");
    job.flow_out(gpu_flow);
  }
  profiler::trace_span(profiler::trace_track(profiler::kTraceTrackGpuCompute), TraceCategory::kGpu, "moe combine",
                       t0 + 1000, t0 + 5000, {{"layer", 2}}, 0, gpu_flow);
  const profiler::TraceStats stats = profiler::trace_stats();
  EXPECT_EQ(stats.num_events, kThreads * (2u * kSpans + 1) + 1 + kThreads + 1 + 1);
  EXPECT_EQ(stats.num_dropped, 0u);

  const json doc = write_and_parse("threads.json");
  auto by_phase = check_structure(doc);
  std::map<int64_t, int> outer_per_worker;
  std::set<int64_t> outer_tids;
  for (const json& e : by_phase["X"]) {
    if (e["name"] == "outer") {
      ++outer_per_worker[e["args"]["worker"].get<int64_t>()];
      outer_tids.insert(e["tid"].get<int64_t>());
      EXPECT_EQ(e["cat"], "op");
    }
    if (e["name"] == "inner") {
      EXPECT_GE(e["args"]["bytes"].get<int64_t>(), 1000);
    }
    if (e["name"] == "moe combine") {
      EXPECT_EQ(e["args"]["layer"], 2);
    }
  }
  EXPECT_EQ(outer_tids.size(), static_cast<size_t>(kThreads));
  for (int w = 0; w < kThreads; ++w) EXPECT_EQ(outer_per_worker[w], kSpans) << "worker " << w;
  std::multiset<double> counter_values;
  for (const json& e : by_phase["C"]) {
    EXPECT_EQ(e["name"], "decode");
    counter_values.insert(e["args"]["tok/s"].get<double>());
  }
  EXPECT_EQ(counter_values, (std::multiset<double>{10, 20, 30, 40}));
  EXPECT_EQ(by_phase["s"].size(), kThreads + 1u);
  EXPECT_EQ(by_phase["f"].size(), kThreads + 1u);
  bool gpu_track_named = false;
  for (const json& e : by_phase["M"])
    gpu_track_named |= e["name"] == "thread_name" && e["args"]["name"] == profiler::kTraceTrackGpuCompute;
  EXPECT_TRUE(gpu_track_named);
}

TEST(Trace, AWorkLaneRecordsOneSpanPerJobEndingWhereTheNextBegins) {
  profiler::trace_start();
  const profiler::TraceWorkInfo info{.category = TraceCategory::kExpert, .name = "expert down", .layer_idx = 3};
  {
    profiler::TraceWorkLane lane(info);
    lane.piece(0, 10, 16, 1600);
    lane.piece(0, 10, 16, 1600);
    lane.piece(0, 10, 8, 800);    // merged: 40 rows of expert 10
    lane.piece(1, 11, 16, 1600);  // another job: expert 11, beginning where expert 10's span ends
    lane.piece(1, 11, 16, 1600);
    lane.end();                   // leaves the region
    lane.piece(1, 11, 2, 200);    // a piece after end(): a new span
  }                               // the destructor ends it
  {
    profiler::TraceWorkLane other_lane(info);  // another lane, same job: never merged with the first
    other_lane.piece(1, 11, 4, 400);
  }
  { profiler::TraceWorkLane off_lane; off_lane.piece(0, 10, 16, 1600); }  // records nothing
  const json doc = write_and_parse("lanes.json");
  auto by_phase = check_structure(doc);
  std::vector<std::pair<int64_t, int64_t>> expert_rows;
  std::vector<std::pair<double, double>> times;  // (ts, end) µs
  for (const json& e : by_phase["X"]) {
    ASSERT_EQ(e["name"], "expert down");
    EXPECT_EQ(e["args"]["layer"], 3);
    EXPECT_EQ(e["args"]["bytes"].get<int64_t>(), 100 * e["args"]["rows"].get<int64_t>());
    expert_rows.push_back({e["args"]["expert"].get<int64_t>(), e["args"]["rows"].get<int64_t>()});
    times.push_back({e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>()});
  }
  EXPECT_EQ(expert_rows, (std::vector<std::pair<int64_t, int64_t>>{{10, 40}, {11, 32}, {11, 2}, {11, 4}}));
  ASSERT_EQ(times.size(), 4u);
  EXPECT_NEAR(times[1].first, times[0].second, 1e-6) << "one clock read ends a job's span and begins the next";
  for (size_t i = 1; i < times.size(); ++i) EXPECT_GE(times[i].first, times[i - 1].second - 1e-6);
}

TEST(Trace, NothingIsRecordedWhileOff) {
  profiler::trace_start();
  profiler::trace_stop();
  {
    profiler::TraceSpan span(TraceCategory::kOp, "off", {{"layer", 1}});
    span.next("off 2");
  }
  profiler::trace_counter(profiler::kTraceCounterDecode, 1.0);
  profiler::trace_flow_end(profiler::trace_new_flow_id());
  profiler::trace_span(profiler::trace_track(profiler::kTraceTrackH2dCopy), TraceCategory::kCopy, "h2d", 0, 10);
  {
    const profiler::TraceWorkInfo info;
    profiler::TraceWorkLane lane = profiler::trace_enabled() ? profiler::TraceWorkLane(info) : profiler::TraceWorkLane();
    lane.piece(0, -1, 16, 1600);
  }
  profiler::TraceFlowSet flows;
  EXPECT_EQ(flows.add(), 0u);
  flows.end_all();
  EXPECT_EQ(profiler::trace_new_flow_id(), 0u);
  EXPECT_EQ(profiler::trace_stats().num_events, 0u);
}

TEST(Trace, ForwardPassRecordsEveryLayerOnlyWhileOn) {
  auto model = Model::load(kData + "/gpt-oss-tiny.gguf");
  ASSERT_TRUE(model.has_value()) << model.error().message;
  ForwardOptions options;
  options.context_length = 64;
  options.num_threads = 2;
  auto forward = create_forward(*model, options);
  ASSERT_TRUE(forward.has_value()) << forward.error().message;
  std::vector<float> logits(model->hparams.vocab_size);
  const int32_t prompt[] = {1, 2, 3, 4};

  profiler::trace_start();
  profiler::trace_stop();
  ASSERT_TRUE((*forward)->forward_batch(prompt, logits).has_value());
  EXPECT_EQ(profiler::trace_stats().num_events, 0u) << "tracing off must record nothing";

  profiler::trace_start();
  ASSERT_TRUE((*forward)->forward(5, logits).has_value());
  ASSERT_TRUE((*forward)->forward(6, logits).has_value());
  const json doc = write_and_parse("forward.json");
  auto by_phase = check_structure(doc);
  const uint32_t num_layers = model->hparams.num_layers;
  std::map<std::string, std::set<int64_t>> layers_of;  // span name → layers seen
  std::map<std::pair<std::string, int64_t>, int64_t> rows_of;  // (chunk or expert span name, layer) → rows summed
  int num_decode = 0;
  for (const json& e : by_phase["X"]) {
    if (e["cat"] == "step") {
      EXPECT_EQ(e["name"], "decode");
      EXPECT_EQ(e["args"]["num_tokens"], 1);
      ++num_decode;
    }
    if (e.contains("args") && e["args"].contains("layer"))
      layers_of[e["name"]].insert(e["args"]["layer"].get<int64_t>());
    if (e["cat"] == "chunk" || e["cat"] == "expert") {
      EXPECT_GT(e["args"]["rows"].get<int64_t>(), 0);
      if (e["args"].contains("layer"))  // the output matrix has none
        rows_of[{e["name"].get<std::string>(), e["args"]["layer"].get<int64_t>()}] += e["args"]["rows"].get<int64_t>();
    }
    if (e["cat"] == "expert") {
      EXPECT_GE(e["args"]["expert"].get<int64_t>(), 0);
      EXPECT_LT(e["args"]["expert"].get<int64_t>(), model->hparams.num_experts);
      EXPECT_GT(e["args"]["rows"].get<int64_t>(), 0);
      EXPECT_GT(e["args"]["bytes"].get<int64_t>(), 0);
    }
  }
  EXPECT_EQ(num_decode, 2);
  for (const char* name : {"attention block", "moe block", "qkv", "rope", "attention", "o_proj", "router", "gather",
                           "experts", "combine", "expert gate_up", "expert down"})
    EXPECT_EQ(layers_of[name].size(), num_layers) << name;
  // Every row of every matrix (and every KV head of attention) is in exactly one span: per layer, the two decode
  // steps' rows add up to twice the matrices' rows.
  const auto& hp = model->hparams;
  const std::map<std::string, int64_t> rows_per_step = {
      {"qkv", hp.q_dim() + 2 * hp.kv_dim()},
      {"attention", hp.num_kv_heads},
      {"o_proj", hp.hidden_dim},
      {"router", hp.num_experts},
      {"expert gate_up", int64_t{2} * hp.num_experts_used * hp.expert_ffn_dim},
      {"expert down", int64_t{hp.num_experts_used} * hp.hidden_dim}};
  for (const auto& [name, rows] : rows_per_step)
    for (int64_t layer = 0; layer < num_layers; ++layer)
      EXPECT_EQ((rows_of[{name, layer}]), 2 * rows) << name << " layer " << layer;
  EXPECT_FALSE(by_phase["s"].empty()) << "expert jobs start flows to the combine step";
  bool hits = false;
  for (const json& e : by_phase["C"])
    if (e["name"] == "expert hits")
      hits = e["args"]["cpu"].get<double>() == static_cast<double>(num_layers * model->hparams.num_experts_used);
  EXPECT_TRUE(hits);
}

TEST(Trace, SessionRefusesAPathItCannotWrite) {
  auto session = profiler::TraceSession::start("/nonexistent-dir-hetmoe/trace.json");
  ASSERT_FALSE(session.has_value());
  EXPECT_EQ(session.error().code, ErrorCode::kIo);
  EXPECT_NE(session.error().message.find("/nonexistent-dir-hetmoe/trace.json"), std::string::npos);
  EXPECT_FALSE(profiler::trace_enabled());
}

TEST(Trace, GpuEventTimesMapOntoTheHostClock) {
  EXPECT_EQ(profiler::gpu_event_host_ns(1'000'000, 0.0f), 1'000'000);
  EXPECT_EQ(profiler::gpu_event_host_ns(1'000'000, 2.5f), 3'500'000);
}

// A hand-made trace with known answers: layer 0 steps [0,100] and [200,300] µs, layer 1 [100,200]; CPU work
// [0,45] with [10,30] nested, [40,80] on another thread and [210,230]; GPU work [50,100] and [100,180]; a copy
// [150,160].
TEST(TraceSummary, BusyTimesAndOverlapFollowTheDefinitions) {
  const std::string text = R"({"traceEvents":[
    {"ph":"M","pid":1,"tid":1,"name":"thread_name","args":{"name":"main"}},
    {"ph":"M","pid":1,"tid":2,"name":"thread_name","args":{"name":"cpu worker 1"}},
    {"ph":"M","pid":1,"tid":9,"name":"thread_name","args":{"name":"gpu compute"}},
    {"ph":"X","pid":1,"tid":1,"cat":"layer","name":"attention block","ts":0,"dur":50,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"layer","name":"moe block","ts":50,"dur":50,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"layer","name":"attention block","ts":100,"dur":100,"args":{"layer":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"layer","name":"attention block","ts":200,"dur":100,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":0,"dur":45,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"chunk","name":"qkv","ts":10,"dur":20,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"qkv","ts":40,"dur":40,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":2,"cat":"expert","name":"expert down","ts":210,"dur":20,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":9,"cat":"gpu","name":"attention","ts":50,"dur":50},
    {"ph":"X","pid":1,"tid":9,"cat":"gpu","name":"experts","ts":100,"dur":80},
    {"ph":"X","pid":1,"tid":9,"cat":"copy","name":"h2d","ts":150,"dur":10},
    {"ph":"C","pid":1,"tid":1,"cat":"counter","name":"decode","ts":100,"args":{"tok/s":10}},
    {"ph":"C","pid":1,"tid":1,"cat":"counter","name":"decode","ts":300,"args":{"tok/s":30}}
  ]})";
  auto s = profiler::summarize_trace(text, "hand.json");
  ASSERT_TRUE(s.has_value()) << s.error().message;
  ASSERT_EQ(s->layers.size(), 2u);
  const auto& l0 = s->layers[0];
  EXPECT_DOUBLE_EQ(l0.step_us, 200);
  EXPECT_DOUBLE_EQ(l0.attention_us, 150);
  EXPECT_DOUBLE_EQ(l0.moe_us, 50);
  EXPECT_EQ(l0.num_steps, 2u);
  EXPECT_DOUBLE_EQ(l0.cpu_busy_us, 80 + 20);  // union [0,80] and [210,230]
  EXPECT_DOUBLE_EQ(l0.gpu_busy_us, 50);       // [50,100]
  EXPECT_DOUBLE_EQ(l0.overlap_efficiency(), 0.5);
  const auto& l1 = s->layers[1];
  EXPECT_DOUBLE_EQ(l1.cpu_busy_us, 0);
  EXPECT_DOUBLE_EQ(l1.gpu_busy_us, 80);
  EXPECT_DOUBLE_EQ(l1.copy_busy_us, 10);
  EXPECT_DOUBLE_EQ(l1.overlap_efficiency(), 0.8);
  ASSERT_EQ(s->devices.size(), 3u);
  EXPECT_EQ(s->devices[0].name, "cpu");
  EXPECT_DOUBLE_EQ(s->devices[0].busy_us, 100);
  EXPECT_EQ(s->devices[0].num_tracks, 2u);
  EXPECT_DOUBLE_EQ(s->devices[1].busy_us, 130);
  EXPECT_DOUBLE_EQ(s->devices[2].busy_us, 10);
  // The op qkv: 45 µs total, 25 µs self (its nested chunk takes 20); the chunk on tid 2 is not nested in it.
  const auto op = std::find_if(s->ops.begin(), s->ops.end(), [](const auto& o) { return o.category == "op"; });
  ASSERT_NE(op, s->ops.end());
  EXPECT_DOUBLE_EQ(op->total_us, 45);
  EXPECT_DOUBLE_EQ(op->self_us, 25);
  EXPECT_EQ(s->ops[0].name, "experts");  // the longest total first
  ASSERT_EQ(s->counters.size(), 1u);
  EXPECT_EQ(s->counters[0].name, "decode tok/s");
  EXPECT_DOUBLE_EQ(s->counters[0].mean, 20);
  const std::string text_out = profiler::format_trace_summary(*s, 3);
  EXPECT_NE(text_out.find("| 0 | 2 | 0.200 |"), std::string::npos) << text_out;
  EXPECT_NE(text_out.find("top 3 ops"), std::string::npos) << text_out;
}

// Step kinds: two decode steps [0,100] and [200,300] (1 token), a prefill [400,600] of 64 tokens, a step without
// num_tokens [700,710]; op spans inside them (attention 55 + qkv 20 + qkv 30 in the decodes, attention 100 + qkv 10
// in the prefill), an op outside every step [650,660] and a chunk inside one (neither counted).
TEST(TraceSummary, StepKindsSumTheOpsStartedInsideEachKindsSteps) {
  const std::string text = R"({"traceEvents":[
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":0,"dur":100,"args":{"position":5,"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":200,"dur":100,"args":{"position":6,"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"prefill","ts":400,"dur":200,"args":{"position":0,"num_tokens":64}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"warmup","ts":700,"dur":10},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":10,"dur":20,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"attention","ts":40,"dur":55,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"attention","ts":41,"dur":50,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":210,"dur":30,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"attention","ts":410,"dur":100,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":520,"dur":10,"args":{"layer":0}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":650,"dur":10,"args":{"layer":0}}
  ]})";
  auto s = profiler::summarize_trace(text, "steps.json");
  ASSERT_TRUE(s.has_value()) << s.error().message;
  ASSERT_EQ(s->step_kinds.size(), 3u);
  const auto& decode = s->step_kinds[0];
  EXPECT_EQ(decode.name, "decode of 1 token");
  EXPECT_EQ(decode.num_steps, 2u);
  EXPECT_DOUBLE_EQ(decode.step_us, 200);
  ASSERT_EQ(decode.ops.size(), 2u);
  EXPECT_EQ(decode.ops[0].first, "attention");
  EXPECT_DOUBLE_EQ(decode.ops[0].second, 55);
  EXPECT_EQ(decode.ops[1].first, "qkv");
  EXPECT_DOUBLE_EQ(decode.ops[1].second, 50);
  const auto& prefill = s->step_kinds[1];
  EXPECT_EQ(prefill.name, "prefill of 64 tokens");
  EXPECT_EQ(prefill.num_steps, 1u);
  ASSERT_EQ(prefill.ops.size(), 2u);
  EXPECT_DOUBLE_EQ(prefill.ops[0].second, 100);
  EXPECT_DOUBLE_EQ(prefill.ops[1].second, 10);
  EXPECT_EQ(s->step_kinds[2].name, "warmup");
  EXPECT_TRUE(s->step_kinds[2].ops.empty());
  const std::string out = profiler::format_trace_summary(*s, 3);
  EXPECT_NE(out.find("decode of 1 token: 2 steps, 0.100 ms per step"), std::string::npos) << out;
  EXPECT_NE(out.find("| attention | 0.100 | 50.0 % |"), std::string::npos) << out;  // the prefill's attention
  EXPECT_NE(out.find("| qkv | 0.025 | 25.0 % |"), std::string::npos) << out;        // the decodes' qkv, per step
  EXPECT_NE(out.find("prefill of 64 tokens: 1 step, 0.200 ms per step"), std::string::npos) << out;
}

TEST(TraceSummary, OpReadRateIsItsWorkSpansBytesOverItsTime) {
  // Two decode steps; qkv's chunks (two tracks) read 4.2 MB in each step's 100 µs qkv span: 42 GB/s. A chunk with
  // bytes outside every op span and a chunk without bytes count nowhere; rope reads nothing.
  const std::string text = R"({"traceEvents":[
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":0,"dur":1000,"args":{"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":2000,"dur":1000,"args":{"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":0,"dur":100},
    {"ph":"X","pid":1,"tid":1,"cat":"chunk","name":"qkv","ts":1,"dur":98,"args":{"rows":10,"bytes":2000000}},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"qkv","ts":2,"dur":97,"args":{"rows":11,"bytes":2200000}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"rope","ts":100,"dur":10},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"qkv","ts":500,"dur":10,"args":{"bytes":9000000}},
    {"ph":"X","pid":1,"tid":1,"cat":"op","name":"qkv","ts":2000,"dur":100},
    {"ph":"X","pid":1,"tid":2,"cat":"expert","name":"expert gate_up","ts":2050,"dur":40,"args":{"bytes":4200000}},
    {"ph":"X","pid":1,"tid":1,"cat":"chunk","name":"qkv","ts":2060,"dur":10,"args":{"rows":3}}
  ]})";
  auto s = profiler::summarize_trace(text, "rates.json");
  ASSERT_TRUE(s.has_value()) << s.error().message;
  ASSERT_EQ(s->step_kinds.size(), 1u);
  const auto& decode = s->step_kinds[0];
  ASSERT_EQ(decode.ops.size(), 2u);
  ASSERT_EQ(decode.op_bytes.size(), 2u);
  EXPECT_EQ(decode.ops[0].first, "qkv");
  EXPECT_DOUBLE_EQ(decode.op_bytes[0], 8.4e6);
  EXPECT_EQ(decode.ops[1].first, "rope");
  EXPECT_DOUBLE_EQ(decode.op_bytes[1], 0.0);
  const std::string out = profiler::format_trace_summary(*s, 3);
  EXPECT_NE(out.find("| qkv | 0.100 | 10.0 % | 4.2 | 42.0 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| rope | 0.005 | 0.5 % | — | — |"), std::string::npos) << out;
}

TEST(TraceSummary, TimeOutsideTheWorkIsTheStepMinusTheUnionOfItsWorkSpans) {
  // Step 1 [0,100]: chunks [10,40] and [20,50] on two tracks overlap (40 µs covered), an expert span [60,70]: 50 µs
  // outside. Step 2 [200,300]: a chunk [210,310] clipped to 90 µs, a chunk [150,250] that started before the step
  // (not counted): 10 µs outside. A prefill step [400,500] has no work spans: no line for it.
  const std::string text = R"({"traceEvents":[
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":0,"dur":100,"args":{"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"decode","ts":200,"dur":100,"args":{"num_tokens":1}},
    {"ph":"X","pid":1,"tid":1,"cat":"step","name":"prefill","ts":400,"dur":100,"args":{"num_tokens":8}},
    {"ph":"X","pid":1,"tid":1,"cat":"chunk","name":"qkv","ts":10,"dur":30},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"qkv","ts":20,"dur":30},
    {"ph":"X","pid":1,"tid":2,"cat":"expert","name":"expert down","ts":60,"dur":10},
    {"ph":"X","pid":1,"tid":2,"cat":"chunk","name":"output","ts":150,"dur":100},
    {"ph":"X","pid":1,"tid":1,"cat":"chunk","name":"output","ts":210,"dur":100}
  ]})";
  auto s = profiler::summarize_trace(text, "outside.json");
  ASSERT_TRUE(s.has_value()) << s.error().message;
  ASSERT_EQ(s->step_kinds.size(), 2u);
  const auto& decode = s->step_kinds[0];
  EXPECT_EQ(decode.num_work_spans, 4u);
  EXPECT_DOUBLE_EQ(decode.outside_work_us, 60);
  EXPECT_EQ(s->step_kinds[1].num_work_spans, 0u);
  EXPECT_DOUBLE_EQ(s->step_kinds[1].outside_work_us, 100);
  const std::string out = profiler::format_trace_summary(*s, 3);
  EXPECT_NE(out.find("fork and join): 0.030 ms per step (30.0 % of the step)"), std::string::npos) << out;
  EXPECT_EQ(out.find("(100.0 % of the step)"), std::string::npos) << out;
}

TEST(TraceSummary, ABadFileIsAnErrorNamingTheFileAndWhatWasExpected) {
  for (const std::string& text : {std::string("hello"), std::string("{\"events\":[]}"),
                                  std::string("{\"traceEvents\":[{\"ph\":\"X\",\"ts\":1}]}"),
                                  std::string("{\"traceEvents\":[3]}")}) {
    auto s = profiler::summarize_trace(text, "bad.json");
    ASSERT_FALSE(s.has_value()) << text;
    EXPECT_EQ(s.error().code, ErrorCode::kFormat);
    EXPECT_NE(s.error().message.find("bad.json"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("Trace Event JSON"), std::string::npos) << s.error().message;
  }
  auto missing = profiler::summarize_trace_file("/nonexistent-dir-hetmoe/trace.json");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ErrorCode::kIo);
}

}  // namespace
}  // namespace hetmoe
