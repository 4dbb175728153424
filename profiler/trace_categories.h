#pragma once
// The trace vocabulary, declared once: event categories with what they mean, the named tracks that are not CPU
// threads, the counters and the flow name. Everything that records into a trace (profiler/trace.h) takes its
// category, track and counter names from here, and `hetmoe trace-summary` reads them back by these names.

#include <array>
#include <cstddef>
#include <cstdint>

namespace hetmoe::profiler {

enum class TraceCategory : uint8_t {
  kStep,     // one forward step: a decode token or a prefill batch
  kLayer,    // one block of one layer: attention or MoE
  kOp,       // one op of a layer on the thread that drives the step
  kChunk,    // rows of a matrix product (or attention heads) one CPU worker computed in a parallel region
  kExpert,   // rows of an expert's matrices one CPU worker computed
  kGpu,      // work on a GPU compute stream, timed by CUDA events
  kCopy,     // a host↔device copy, timed by CUDA events
  kCounter,  // a sampled value
  kFlow,     // an arrow from a span whose result another span waits for
  kServe,    // `hetmoe serve`: a scheduler step, or one request on its slot
};

struct TraceCategoryInfo {
  TraceCategory category;
  const char* name;         // the "cat" field of the trace
  const char* description;  // written to the trace's otherData and docs/profiling.md
};

inline constexpr std::array<TraceCategoryInfo, 10> kTraceCategories = {{
    {TraceCategory::kStep, "step",
     "one forward step on the thread that drives it: a decode token or a prefill batch (args: position, num_tokens)"},
    {TraceCategory::kLayer, "layer", "the attention block or the MoE block of one layer (args: layer)"},
    {TraceCategory::kOp, "op",
     "one op of a layer on the driving thread: qkv, rope, attention, o_proj, router, gather, experts, combine, "
     "output; sample in the generation loop (args: layer)"},
    {TraceCategory::kChunk, "chunk",
     "the rows of a matrix product (or the attention heads) one CPU worker computed in one parallel region: its "
     "consecutive chunks of the same job merged into one span (args: layer, rows, bytes of weights read, numa_node)"},
    {TraceCategory::kExpert, "expert",
     "the rows of one expert's gate/up or down matrices one CPU worker computed in one parallel region (args: layer, "
     "expert, rows, bytes, numa_node)"},
    {TraceCategory::kGpu, "gpu", "work on a GPU compute stream, timed by CUDA events mapped onto the host clock"},
    {TraceCategory::kCopy, "copy", "a host-to-device or device-to-host copy, timed by CUDA events"},
    {TraceCategory::kCounter, "counter", "sampled values: decode tok/s, VRAM in use, expert hits per device, "
                                         "expert migrations, requests waiting for a server slot"},
    {TraceCategory::kFlow, "flow", "an arrow from a span (a CPU expert job) to the span that waits for its result"},
    {TraceCategory::kServe, "serve",
     "hetmoe serve: one scheduler step on the scheduler thread, around the forward pass's prefill and decode steps "
     "(server step; args: slots, prefill_tokens, decode_tokens), and one request on its slot's track from admission "
     "to its end (request; args: prompt_tokens, cached_tokens, generated_tokens, finish: 0 stop, 1 length, "
     "2 cancelled, 3 timeout, 4 error)"},
}};

constexpr const char* trace_category_name(TraceCategory category) {
  return kTraceCategories[static_cast<size_t>(category)].name;
}

/// Tracks that are not CPU threads (profiler::trace_track()).
inline constexpr const char* kTraceTrackGpuCompute = "gpu compute";
inline constexpr const char* kTraceTrackH2dCopy = "h2d copy";
inline constexpr const char* kTraceTrackD2hCopy = "d2h copy";
/// `hetmoe serve`'s requests: one track per slot, named "server slot N".
inline constexpr const char* kTraceTrackServerSlot = "server slot";

/// Counters: a counter name and a series; Perfetto shows the track "<name> <series>", e.g. "decode tok/s".
struct TraceCounterName {
  const char* name;
  const char* series;
};
inline constexpr TraceCounterName kTraceCounterDecode = {"decode", "tok/s"};
inline constexpr TraceCounterName kTraceCounterVram = {"vram in use", "MiB"};
inline constexpr TraceCounterName kTraceCounterExpertHitsCpu = {"expert hits", "cpu"};  // per step
inline constexpr TraceCounterName kTraceCounterExpertHitsGpu = {"expert hits", "gpu"};  // per step
inline constexpr TraceCounterName kTraceCounterMigrations = {"expert migrations", "count"};
inline constexpr TraceCounterName kTraceCounterServerQueue = {"server queue", "requests"};  // waiting for a slot

/// Name of every flow (category "flow"); a flow is identified by (id, category, name) in the Trace Event format.
inline constexpr const char* kTraceFlowName = "expert result";

}  // namespace hetmoe::profiler
