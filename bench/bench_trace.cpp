// Cost of the trace recorder (profiler/trace.h), off and on: per recording call, and per decode token of the tiny
// test model (the worst case: its parallel regions compute for microseconds, so per-event costs show). Run with
// repetitions interleaved so that off and on see the same machine load, and compare the means:
//   build/bin/bench_trace --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true
//       --benchmark_report_aggregates_only=true [--benchmark_filter=Decode]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "profiler/trace.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"

namespace {

using hetmoe::profiler::TraceCategory;
namespace profiler = hetmoe::profiler;

// The recorder preallocates 65536 events at trace_start(); restarting every kRestartEvents keeps the benchmarks
// from allocating while timed.
constexpr int64_t kRestartEvents = 60000;

void set_tracing(bool on) {
  if (on)
    profiler::trace_start();
  else
    profiler::trace_stop();
}

/// One TraceSpan with one argument (an op span of the forward pass).
void BM_TraceSpan(benchmark::State& state) {
  const bool on = state.range(0) != 0;
  set_tracing(on);
  int64_t n = 0;
  for (auto _ : state) {
    profiler::TraceSpan span(TraceCategory::kOp, "op", {{"layer", 3}});
    benchmark::ClobberMemory();
    if (on && ++n == kRestartEvents) {
      state.PauseTiming();
      profiler::trace_start();
      n = 0;
      state.ResumeTiming();
    }
  }
  profiler::trace_stop();
}
BENCHMARK(BM_TraceSpan)->ArgName("trace")->Arg(0)->Arg(1);

/// TraceWorkLane::piece() for a chunk of the job the lane already works on (what most chunks are): no clock read.
void BM_TraceWorkLaneSameJob(benchmark::State& state) {
  const bool on = state.range(0) != 0;
  set_tracing(on);
  const profiler::TraceWorkInfo info{.category = TraceCategory::kExpert, .name = "expert", .layer_idx = 1};
  profiler::TraceWorkLane lane = on ? profiler::TraceWorkLane(info) : profiler::TraceWorkLane();
  for (auto _ : state) {
    lane.piece(1, 0, 16, 4096);
    benchmark::ClobberMemory();
  }
  lane.end();
  profiler::trace_stop();
}
BENCHMARK(BM_TraceWorkLaneSameJob)->ArgName("trace")->Arg(0)->Arg(1);

/// TraceWorkLane::piece() for a chunk of another job than the last: one clock read and one new span.
void BM_TraceWorkLaneNewJob(benchmark::State& state) {
  const bool on = state.range(0) != 0;
  set_tracing(on);
  const profiler::TraceWorkInfo info{.category = TraceCategory::kExpert, .name = "expert", .layer_idx = 1};
  profiler::TraceWorkLane lane = on ? profiler::TraceWorkLane(info) : profiler::TraceWorkLane();
  uint32_t job = 0;
  int64_t n = 0;
  for (auto _ : state) {
    ++job;
    lane.piece(job, job & 31, 16, 4096);
    benchmark::ClobberMemory();
    if (on && ++n == kRestartEvents) {
      state.PauseTiming();
      lane.end();
      profiler::trace_start();
      n = 0;
      state.ResumeTiming();
    }
  }
  lane.end();
  profiler::trace_stop();
}
BENCHMARK(BM_TraceWorkLaneNewJob)->ArgName("trace")->Arg(0)->Arg(1);

/// One decode token of the tiny test model (wall time, all workers), tracing off or on.
void BM_DecodeTinyModel(benchmark::State& state) {
  const int num_threads = static_cast<int>(state.range(0));
  const bool on = state.range(1) != 0;
  static auto model = hetmoe::Model::load(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf");
  if (!model.has_value()) return state.SkipWithError(model.error().message.c_str());
  hetmoe::ForwardOptions options;
  options.context_length = 256;
  options.num_threads = num_threads;
  auto forward = hetmoe::create_forward(*model, options);
  if (!forward.has_value()) return state.SkipWithError(forward.error().message.c_str());
  std::vector<float> logits(model->hparams.vocab_size);  // (vocab_size)
  set_tracing(on);
  int32_t token = 1;
  int64_t num_tokens = 0;
  for (auto _ : state) {
    if ((*forward)->num_positions() + 1 >= options.context_length || (on && num_tokens % 500 == 499)) {
      state.PauseTiming();  // ~90 events per token: restart the trace before it outgrows its preallocation
      (*forward)->reset();
      if (on) profiler::trace_start();
      state.ResumeTiming();
    }
    if (!(*forward)->forward(token, logits).has_value()) return state.SkipWithError("forward failed");
    token = (token * 7 + 3) % static_cast<int32_t>(model->hparams.vocab_size);
    ++num_tokens;
  }
  profiler::trace_stop();
  state.SetItemsProcessed(num_tokens);
}
BENCHMARK(BM_DecodeTinyModel)
    ->ArgNames({"threads", "trace"})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({2, 0})
    ->Args({2, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
