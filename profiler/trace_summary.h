#pragma once
// Reads a Trace Event JSON file (as profiler/trace.h writes it) back and summarizes it: time per layer and per
// device, the top ops, the counters, and the overlap efficiency of each layer. `hetmoe trace-summary` prints it.
//
// Definitions (all times summed over every step of the trace):
//   layer step time  = total duration of the layer's "layer" spans (attention block + MoE block, arg "layer").
//   device busy time = wall time during which at least one track of the device has a work span open: categories
//                      op/chunk/expert → cpu, gpu → gpu, copy → copy (step and layer spans only frame the work).
//   per layer busy   = device busy time inside that layer's step spans.
//   overlap efficiency of a layer = max(cpu busy, gpu busy) ÷ layer step time: 1 when the slower device is busy the
//                      whole step (the other one hidden behind it); with only CPU spans gpu busy is 0 and the figure
//                      is the CPU's share of the step.
//   step kind        = the step spans (category "step": decode, prefill) by name and arg num_tokens ("prefill of 64
//                      tokens"); per kind, the "op" spans that start inside its steps, summed and divided by the
//                      number of steps: what one decode step or one pp64 step spends in each op.
//   op read rate     = the bytes (arg "bytes") of the chunk and expert spans that start inside an op's spans of the
//                      kind's steps ÷ those op spans' duration: the op's weight read rate, to set against the
//                      machine's read bandwidth (bench's probe) one op at a time.
//   outside the work = a kind's step time during which no chunk or expert span (that started inside the step) is
//                      open on any track, the spans clipped to the step: the serial steps between the parallel
//                      regions, their fork and join, and the time before the first and after the last region.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::profiler {

struct TraceSummary {
  struct Layer {
    int64_t layer_idx = 0;
    uint64_t num_steps = 0;  // attention-block spans of this layer
    double step_us = 0, attention_us = 0, moe_us = 0;
    double cpu_busy_us = 0, gpu_busy_us = 0, copy_busy_us = 0;
    double overlap_efficiency() const { return step_us > 0 ? std::max(cpu_busy_us, gpu_busy_us) / step_us : 0.0; }
  };
  struct Device {
    std::string name;       // "cpu", "gpu", "copy"
    uint32_t num_tracks = 0;
    double busy_us = 0;     // union of its work spans
    double span_us = 0;     // sum of its work spans' self time (thread time)
  };
  struct Op {
    std::string name, category;
    uint64_t count = 0;
    double total_us = 0;  // summed durations
    double self_us = 0;   // minus the time of spans nested in them on the same track
  };
  struct StepKind {
    std::string name;        // "decode of 1 token", "prefill of 64 tokens", or the span name without num_tokens
    uint64_t num_steps = 0;
    double step_us = 0;      // summed durations of its step spans
    std::vector<std::pair<std::string, double>> ops;  // op name → summed µs inside its steps, by time, descending
    std::vector<double> op_bytes;  // per ops[i]: the bytes its work spans read (0: none recorded)
    uint64_t num_work_spans = 0;   // chunk and expert spans that start inside its steps
    double outside_work_us = 0;    // summed time of its steps with none of those spans open (see the top)
  };
  struct Counter {
    std::string name;  // "<name> <series>", as Perfetto names the track
    uint64_t num_samples = 0;
    double min = 0, max = 0, mean = 0;
  };

  std::string path;
  uint64_t num_events = 0;
  uint64_t num_spans = 0;
  uint64_t num_flows = 0;      // flow starts ("s")
  double duration_us = 0;      // first event start to last span end
  std::vector<std::string> track_names;  // in tid order
  std::vector<Layer> layers;   // by layer index
  std::vector<Device> devices;  // cpu, gpu, copy (always all three)
  std::vector<Op> ops;          // work categories, by total time, descending
  std::vector<StepKind> step_kinds;  // by name
  std::vector<Counter> counters;
};

/// Summarizes the trace in `json_text`; `path` names it in errors. Accepts {"traceEvents": [...], ...} or a bare
/// array of events. Errors: kFormat naming `path` when the text is not JSON, has no traceEvents array, or an event is
/// not an object with a string "ph", or an "X" event lacks a numeric ts/dur (the message gives the event's index).
Expected<TraceSummary> summarize_trace(std::string_view json_text, const std::string& path);
/// Reads `path` and summarizes it. Errors: kIo when it cannot be read, summarize_trace()'s otherwise.
Expected<TraceSummary> summarize_trace_file(const std::string& path);

/// Text tables (Markdown) of a summary: per layer, per device, the top `top_n` ops, per step kind, the counters.
std::string format_trace_summary(const TraceSummary& summary, size_t top_n);

}  // namespace hetmoe::profiler
