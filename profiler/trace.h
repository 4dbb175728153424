#pragma once
// Trace recording: what every CPU worker, the GPU streams and the copies do during each step, written as a Chrome /
// Perfetto Trace Event JSON file (opens in ui.perfetto.dev and chrome://tracing; format notes in docs/profiling.md).
//
// A process-wide recorder, off by default. Off, every recording call costs one relaxed atomic load and a branch: no
// clock read, no allocation. On, each thread appends fixed-size plain events (static-string names, up to
// kMaxTraceArgs integer arguments) to its own buffer of preallocated chunks; a thread's buffer is registered under a
// mutex once, on its first event, and nothing locks per event. Times come from the TSC where it is invariant and the
// kernel's clocksource (so synchronized across cores), else from steady_clock; they are mapped to nanoseconds
// against steady_clock when the trace is written.
//
// Usage: TraceSession::start(path) (or trace_start()), record with TraceSpan / TraceWorkLane / trace_counter /
// trace_span, then TraceSession::finish() (or trace_stop() + trace_write_json()) once no thread records any more.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <string>

#include "profiler/trace_categories.h"
#include "runtime/base/expected.h"

namespace hetmoe::profiler {

/// An integer argument of an event; key is a static string.
struct TraceArg {
  const char* key = nullptr;
  int64_t value = 0;
};
inline constexpr int kMaxTraceArgs = 4;

/// A track id: a CPU thread's own track or a named track (trace_track()). Written as the event's "tid".
using TraceTrack = int32_t;

namespace detail {
extern std::atomic<bool> g_trace_enabled;
extern bool g_trace_clock_is_tsc;  // set by trace_start() before recording is enabled
uint64_t trace_ticks_slow();
inline uint64_t trace_ticks() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (g_trace_clock_is_tsc) return __builtin_ia32_rdtsc();
#endif
  return trace_ticks_slow();
}
void record_span(TraceCategory category, const char* name, uint64_t begin_ticks, uint64_t end_ticks,
                 const TraceArg* args, int num_args, uint64_t flow_out);
}  // namespace detail

/// True while recording. One relaxed atomic load.
inline bool trace_enabled() { return detail::g_trace_enabled.load(std::memory_order_relaxed); }

/// Clears what an earlier trace recorded, sets the time origin, names the calling thread "main (node X, cores ...)"
/// unless it has recorded before, and enables recording. Call while no other thread records. Threads that record
/// later are named "cpu worker N (node X, core Y)" from their CPU affinity at their first event (libnuma for the
/// node), unless they call trace_name_thread().
void trace_start();
/// Disables recording; events already recorded stay until the next trace_start().
void trace_stop();

/// Writes what was recorded as Trace Event JSON to `out` (`path` names it in errors). Call after trace_stop() once
/// no thread records any more. Errors: kIo naming `path` when a write fails.
Status trace_write_json(std::FILE* out, const std::string& path);
/// Creates or truncates `path` and writes to it. Errors: kIo naming `path`.
Status trace_write_json(const std::string& path);

struct TraceStats {
  uint64_t num_events = 0;   // recorded since trace_start() (a lane's pieces of one job count once)
  uint64_t num_dropped = 0;  // events lost because the trace reached its memory cap (kTraceMaxBytes)
  uint32_t num_threads = 0;  // threads that recorded at least one event
  uint64_t num_written = 0;  // entries in the traceEvents array of the last trace_write_json (metadata, spans,
                             // counters and flow points: what a viewer counts), 0 before one
};
TraceStats trace_stats();
/// Memory the recorder may use for events; beyond it events are dropped and counted.
inline constexpr uint64_t kTraceMaxBytes = 2ull << 30;

/// Names the calling thread's track (e.g. "gpu feeder"); replaces the automatic name. Called before the thread's
/// first event, the thread takes no "cpu worker N" number.
void trace_name_thread(const std::string& name);

/// A named track that is not a CPU thread (kTraceTrackGpuCompute, kTraceTrackH2dCopy, ...): the same id for the
/// same name; sorted after the CPU threads in the order first asked for.
TraceTrack trace_track(const char* name);

/// Host clock in nanoseconds (steady_clock), the time base of trace_span().
int64_t trace_now_ns();

/// Host time of a CUDA event: `anchor_host_ns` is trace_now_ns() read right after a reference event completed
/// (cudaEventSynchronize on it), `elapsed_ms` is cudaEventElapsedTime(reference, event) in milliseconds.
inline int64_t gpu_event_host_ns(int64_t anchor_host_ns, float elapsed_ms) {
  return anchor_host_ns + static_cast<int64_t>(static_cast<double>(elapsed_ms) * 1e6);
}

/// Records a span timed by the caller on `track` (GPU work from CUDA events, copies): [begin_ns, end_ns] in
/// trace_now_ns() time, up to kMaxTraceArgs arguments (more are dropped). flow_out ≠ 0 starts that flow in the span
/// (trace_new_flow_id()); flow_in ≠ 0 ends that flow in it (the span waited for the flow's source). No-op when off.
void trace_span(TraceTrack track, TraceCategory category, const char* name, int64_t begin_ns, int64_t end_ns,
                std::initializer_list<TraceArg> args = {}, uint64_t flow_out = 0, uint64_t flow_in = 0);

/// Records a counter sample at the current time, e.g. trace_counter(kTraceCounterDecode, 12.5). No-op when off;
/// non-finite values are dropped.
void trace_counter(const TraceCounterName& counter, double value);

/// A new flow id (never 0, unique in the process: the calling thread's track id and a per-thread count); 0 when
/// tracing is off.
uint64_t trace_new_flow_id();
/// Ends flow `id` in the calling thread's innermost open span (the span that waits for the flow's source).
void trace_flow_end(uint64_t id);

/// A span from construction to destruction (or to end()/next()) on the calling thread.
///   TraceSpan op(TraceCategory::kOp, "qkv", {{"layer", 3}});  ...  op.next("rope");  ...
class TraceSpan {
 public:
  TraceSpan(TraceCategory category, const char* name, std::initializer_list<TraceArg> args = {}) {
    if (!trace_enabled()) return;
    active_ = true;
    category_ = category;
    name_ = name;
    for (const TraceArg& a : args)
      if (num_args_ < kMaxTraceArgs) args_[num_args_++] = a;
    begin_ = detail::trace_ticks();
  }
  ~TraceSpan() { end(); }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

  /// Adds an argument (dropped beyond kMaxTraceArgs).
  void arg(const char* key, int64_t value) {
    if (active_ && num_args_ < kMaxTraceArgs) args_[num_args_++] = TraceArg{key, value};
  }
  /// Starts flow `id` in this span.
  void flow_out(uint64_t id) { flow_out_ = id; }
  /// Records the span now; later calls do nothing.
  void end() {
    if (!active_) return;
    active_ = false;
    detail::record_span(category_, name_, begin_, detail::trace_ticks(), args_, num_args_, flow_out_);
  }
  /// Ends this span and begins the next one, with the same category and arguments, at the same instant.
  void next(const char* name) {
    if (!active_) return;
    const uint64_t t = detail::trace_ticks();
    detail::record_span(category_, name_, begin_, t, args_, num_args_, flow_out_);
    name_ = name;
    flow_out_ = 0;
    begin_ = t;
  }

 private:
  bool active_ = false;
  TraceCategory category_ = TraceCategory::kOp;
  int num_args_ = 0;
  const char* name_ = nullptr;
  uint64_t begin_ = 0;
  uint64_t flow_out_ = 0;
  TraceArg args_[kMaxTraceArgs];
};

/// Flow ids handed out to the spans of a parallel region, all ended together by the span that waits for them
/// (e.g. each CPU expert job → the layer's combine step). Thread-safe add() without a shared counter: each thread
/// fills the slot of its track id (one cache line each), so workers do not contend; beyond kPerSlot ids in a slot,
/// add() returns 0 (no flow). Constructing one costs kSlots stores.
class TraceFlowSet {
 public:
  static constexpr uint32_t kSlots = 16, kPerSlot = 15;
  /// A new flow id, remembered for end_all(); 0 when off or full.
  uint64_t add();
  /// trace_flow_end() for every remembered id, on the calling thread, now; then forgets them.
  void end_all();

 private:
  struct alignas(128) Slot {
    std::atomic<uint32_t> count{0};
    uint64_t ids[kPerSlot];  // (count) remembered flow ids, uninitialized beyond count
  };
  Slot slots_[kSlots];
};

/// What the pieces of one parallel region are: category, name, layer, and optionally a TraceFlowSet that receives
/// one flow per span.
struct TraceWorkInfo {
  TraceCategory category = TraceCategory::kChunk;
  const char* name = "rows";
  int32_t layer_idx = -1;          // -1: no layer argument
  TraceFlowSet* flows = nullptr;
};

/// What one lane of a parallel region records: a lane is one task that runs chunks of the region's rows until none
/// is left (runtime/exec/forward_cpu.cpp run_chunks), so it runs on one thread from its first chunk to its last. Its
/// consecutive pieces of the same job (the caller chooses what counts as one job: a matrix, an expert, the whole
/// region) form one span, with rows and bytes summed. The clock is read only at job boundaries: a piece of another
/// job opens a new span at the instant that ends the open one, and end() (the lane leaves the region) ends the last.
/// So a lane costs one clock read per job it works on plus one, and one event per job, however many chunks it runs.
///   TraceWorkLane lane = tracing ? TraceWorkLane(info) : TraceWorkLane();
///   for (each chunk) { lane.piece(job_key, expert_idx, rows, bytes); run the rows; }
///   lane.end();  // or the destructor
class TraceWorkLane {
 public:
  /// Records nothing (tracing off).
  TraceWorkLane() = default;
  /// Records the lane's pieces as `info` says; construct only when trace_enabled() (read once per region by the
  /// caller). `info` must outlive the lane.
  explicit TraceWorkLane(const TraceWorkInfo& info) : info_(&info) {}
  ~TraceWorkLane() { end(); }
  TraceWorkLane(const TraceWorkLane&) = delete;
  TraceWorkLane& operator=(const TraceWorkLane&) = delete;

  /// The lane is about to run `rows` rows of job `job_key`, reading `bytes` bytes of weights (or KV cache);
  /// expert_idx ≥ 0 names the job's expert (the span's expert argument), < 0: not an expert job.
  void piece(uint32_t job_key, int64_t expert_idx, int64_t rows, int64_t bytes) {
    if (!info_) return;
    if (!open_ || job_key != job_) begin_span(job_key, expert_idx);
    if (end_) {
      *rows_ += rows;
      *bytes_ += bytes;
    }
  }
  /// Ends the open span now (one clock read); later pieces open a new one.
  void end() {
    if (end_) *end_ = detail::trace_ticks();
    end_ = nullptr;
    open_ = false;
  }

 private:
  /// Reads the clock once: ends the open span and appends a new one beginning then (end_ stays nullptr when the
  /// trace is full and the span is dropped).
  void begin_span(uint32_t job_key, int64_t expert_idx);
  const TraceWorkInfo* info_ = nullptr;
  uint64_t* end_ = nullptr;   // the open span's end time, in the thread's buffer (written at end())
  int64_t* rows_ = nullptr;   // its rows argument
  int64_t* bytes_ = nullptr;  // its bytes argument
  uint32_t job_ = 0;          // its job key
  bool open_ = false;         // a span (possibly dropped) is open for job_
};

/// A trace written to a file at the end of a run: start() checks that `path` can be written (creating or
/// truncating it) before any work and starts recording; finish() stops and writes. If finish() is never called
/// (an error path), the destructor stops and writes what was recorded, ignoring write errors.
class TraceSession {
 public:
  /// Errors: kIo naming `path` (cannot be opened for writing); kInvalidArgument if a trace is already recording.
  static Expected<std::unique_ptr<TraceSession>> start(const std::string& path);
  /// Stops recording, writes the file and closes it. Errors: trace_write_json()'s, or closing the file failed.
  Status finish();
  ~TraceSession();
  TraceSession(const TraceSession&) = delete;
  TraceSession& operator=(const TraceSession&) = delete;
  const std::string& path() const { return path_; }

 private:
  TraceSession(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace hetmoe::profiler
