#include "profiler/trace.h"

#include <fmt/format.h>
#include <numa.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

namespace hetmoe::profiler {
namespace detail {

std::atomic<bool> g_trace_enabled{false};
bool g_trace_clock_is_tsc = false;

uint64_t trace_ticks_slow() {
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

}  // namespace detail

namespace {

static_assert(std::is_same_v<std::chrono::steady_clock::duration, std::chrono::nanoseconds>,
              "trace_ticks_slow() and trace_now_ns() count steady_clock nanoseconds");

enum class EventKind : uint8_t { kSpan, kCounter, kFlowEnd };

// One recorded event: plain data, written in place in a thread's chunk (never constructed, never destroyed).
struct Event {
  uint64_t begin;         // clock ticks (detail::trace_ticks), or steady ns when times_in_ns
  uint64_t end;           // spans
  double value;           // counters
  const char* name;       // static string
  uint64_t flow_out;      // spans: flow started in the span (0: none)
  uint64_t flow_in;       // spans: flow ended in the span (0: none)
  TraceArg args[kMaxTraceArgs];  // counters: args[0].key is the series; kFlowEnd: the values are the flow ids
  TraceTrack track;       // -1: the recording thread's own track
  TraceCategory category;
  EventKind kind;
  uint8_t num_args;
  bool times_in_ns;
};
static_assert(std::is_trivially_copyable_v<Event>);

constexpr size_t kChunkEvents = 4096;
constexpr size_t kChunkBytes = kChunkEvents * sizeof(Event);
constexpr size_t kPreallocChunks = 16;  // prefaulted at trace_start(): 65536 events, ~9 MB

// Aligned to two cache lines (the adjacent-line prefetcher pairs them): buffers of different threads are separate
// allocations that could otherwise share a line, and each thread writes `cur` on every event (false sharing measured:
// +6 % per decode token of the tiny model with 2 threads).
struct alignas(128) ThreadBuffer {
  Event* cur = nullptr;  // next free event in the current chunk
  Event* end = nullptr;  // end of the current chunk
  std::vector<Event*> chunks;  // in recording order; all full but the last
  bool full = false;           // the memory cap was reached: drop without locking
  TraceTrack tid = 0;
  int sort_index = 0;
  int numa_node = -1;  // node of all the cores the thread may run on, -1 if several
  std::string name;

  size_t num_events() const {
    if (chunks.empty()) return 0;
    return (chunks.size() - 1) * kChunkEvents + static_cast<size_t>(cur - chunks.back());
  }
};

struct NamedTrack {
  std::string name;
  TraceTrack tid;
  int sort_index;
};

struct Recorder {
  std::mutex mutex;  // registration, chunk hand-out, start and write; never per event
  std::vector<std::unique_ptr<ThreadBuffer>> threads;
  std::vector<NamedTrack> tracks;
  std::vector<Event*> free_chunks;
  uint64_t num_chunks = 0;  // allocated in total
  uint64_t num_written = 0;  // entries of traceEvents written by the last trace_write_json
  std::atomic<uint64_t> num_dropped{0};
  TraceTrack next_tid = 1;
  int num_workers = 0;
  uint64_t origin_ticks = 0;
  int64_t origin_ns = 0;
};

// Never destroyed: worker threads may outlive static destruction.
Recorder& recorder() {
  static Recorder* r = new Recorder();
  return *r;
}

thread_local ThreadBuffer* t_buffer __attribute__((tls_model("initial-exec"))) = nullptr;

int64_t steady_ns() { return std::chrono::steady_clock::now().time_since_epoch().count(); }

/// The TSC is used when it is invariant (CPUID 0x80000007 EDX bit 8) and the kernel keeps it as its clocksource,
/// which it only does while the TSCs of all cores agree.
bool tsc_usable() {
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned max_leaf = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(max_leaf), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000000u), "c"(0));
  if (max_leaf < 0x80000007u) return false;
  unsigned a = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000007u), "c"(0));
  if ((d & (1u << 8)) == 0) return false;
  std::ifstream in("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string source;
  in >> source;
  return source == "tsc";
#else
  return false;
#endif
}

/// A (ticks, steady ns) pair read as close together as possible.
std::pair<uint64_t, int64_t> clock_pair() {
  const int64_t a = steady_ns();
  const uint64_t t = detail::trace_ticks();
  const int64_t b = steady_ns();
  return {t, a + (b - a) / 2};
}

/// "0-3,8" from sorted distinct values.
std::string format_ranges(const std::vector<int>& values) {
  std::string out;
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    while (j + 1 < values.size() && values[j + 1] == values[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? fmt::format("{}", values[i]) : fmt::format("{}-{}", values[i], values[j]);
    i = j + 1;
  }
  return out;
}

/// "node 0, core 5" when pinned to one core, "node 0, cores 0-7" or "nodes 0-1, cores 0-63" otherwise; *node is the
/// single node or -1.
std::string thread_location(int* node) {
  *node = -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "cores unknown";
  std::vector<int> cpus, nodes;
  const bool have_numa = numa_available() >= 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    cpus.push_back(cpu);
    const int n = have_numa ? numa_node_of_cpu(cpu) : 0;
    if (n >= 0 && std::find(nodes.begin(), nodes.end(), n) == nodes.end()) nodes.push_back(n);
  }
  std::sort(nodes.begin(), nodes.end());
  if (nodes.size() == 1) *node = nodes[0];
  const std::string node_text =
      nodes.empty() ? "node ?" : fmt::format("{} {}", nodes.size() == 1 ? "node" : "nodes", format_ranges(nodes));
  if (cpus.size() == 1) return fmt::format("{}, core {}", node_text, cpus[0]);
  return fmt::format("{}, cores {}", node_text, format_ranges(cpus));
}

ThreadBuffer* register_thread(bool is_main) {
  Recorder& r = recorder();
  auto buffer = std::make_unique<ThreadBuffer>();
  int node = -1;
  const std::string location = thread_location(&node);
  buffer->numa_node = node;
  std::lock_guard lock(r.mutex);
  buffer->tid = r.next_tid++;
  if (is_main) {
    buffer->name = fmt::format("main ({})", location);
    buffer->sort_index = 0;
  } else {
    const int n = ++r.num_workers;
    buffer->name = fmt::format("cpu worker {} ({})", n, location);
    buffer->sort_index = n;
  }
  t_buffer = buffer.get();
  r.threads.push_back(std::move(buffer));
  return t_buffer;
}

ThreadBuffer* this_thread_buffer() { return t_buffer ? t_buffer : register_thread(false); }

/// A new prefaulted chunk; nullptr beyond kTraceMaxBytes. Caller holds the mutex.
Event* allocate_chunk(Recorder& r) {
  if ((r.num_chunks + 1) * kChunkBytes > kTraceMaxBytes) return nullptr;
  auto* chunk = static_cast<Event*>(std::malloc(kChunkBytes));
  if (!chunk) return nullptr;
  // Fault the pages in now, not while recording (a volatile write per page: malloc + memset 0 may become calloc,
  // which touches nothing).
  auto* bytes = reinterpret_cast<volatile unsigned char*>(chunk);
  for (size_t i = 0; i < kChunkBytes; i += 4096) bytes[i] = 1;
  ++r.num_chunks;
  return chunk;
}

/// A chunk from the free list, else a new one. Caller holds the mutex.
Event* take_chunk(Recorder& r) {
  if (r.free_chunks.empty()) return allocate_chunk(r);
  Event* chunk = r.free_chunks.back();
  r.free_chunks.pop_back();
  return chunk;
}

bool grow(ThreadBuffer* b) {
  Recorder& r = recorder();
  if (b->full) {
    r.num_dropped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  std::lock_guard lock(r.mutex);
  Event* chunk = take_chunk(r);
  if (!chunk) {
    b->full = true;
    r.num_dropped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  b->chunks.push_back(chunk);
  b->cur = chunk;
  b->end = chunk + kChunkEvents;
  return true;
}

/// A new event at the end of the calling thread's buffer, or nullptr when the trace is full. Every field but name,
/// category, kind, begin, end, value and the arguments is set to its default; the caller sets those it uses.
Event* append(ThreadBuffer* b) {
  if (b->cur == b->end && !grow(b)) return nullptr;
  Event* e = b->cur++;
  e->flow_out = 0;
  e->flow_in = 0;
  e->track = -1;
  e->num_args = 0;
  e->times_in_ns = false;
  return e;
}

void copy_args(Event* e, const TraceArg* args, int num_args) {
  e->num_args = static_cast<uint8_t>(std::min(num_args, kMaxTraceArgs));
  for (int i = 0; i < e->num_args; ++i) e->args[i] = args[i];
}

// ---- JSON writing ----

void append_escaped(fmt::memory_buffer& out, std::string_view s) {
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out.push_back(' ');  // control characters are not allowed in JSON strings
    } else {
      out.push_back(c);
    }
  }
}

/// Microseconds with three decimals from nanoseconds, e.g. 1234567 → "1234.567".
void append_us(fmt::memory_buffer& out, int64_t ns) {
  if (ns < 0) {
    out.push_back('-');
    ns = -ns;
  }
  fmt::format_to(std::back_inserter(out), "{}.{:03}", ns / 1000, ns % 1000);
}

struct Item {
  int64_t ts;   // ns since the origin
  int64_t end;  // ns since the origin (spans)
  const Event* event;
  const ThreadBuffer* thread;
};

}  // namespace

void trace_start() {
  Recorder& r = recorder();
  detail::g_trace_enabled.store(false, std::memory_order_relaxed);
  if (!t_buffer) register_thread(/*is_main=*/true);
  std::lock_guard lock(r.mutex);
  for (auto& b : r.threads) {
    for (Event* chunk : b->chunks) r.free_chunks.push_back(chunk);
    b->chunks.clear();
    b->cur = b->end = nullptr;
    b->full = false;
  }
  while (r.free_chunks.size() < kPreallocChunks) {
    Event* chunk = allocate_chunk(r);
    if (!chunk) break;
    r.free_chunks.push_back(chunk);
  }
  r.num_dropped.store(0);
  detail::g_trace_clock_is_tsc = tsc_usable();
  std::tie(r.origin_ticks, r.origin_ns) = clock_pair();
  detail::g_trace_enabled.store(true, std::memory_order_release);
}

void trace_stop() { detail::g_trace_enabled.store(false, std::memory_order_release); }

TraceStats trace_stats() {
  Recorder& r = recorder();
  std::lock_guard lock(r.mutex);
  TraceStats stats;
  for (const auto& b : r.threads) {
    const size_t n = b->num_events();
    stats.num_events += n;
    stats.num_threads += n > 0;
  }
  stats.num_dropped = r.num_dropped.load();
  stats.num_written = r.num_written;
  return stats;
}

void trace_name_thread(const std::string& name) {
  // Registered here (not yet recording): no "cpu worker N" number is taken, so the workers stay numbered 1, 2, ...
  ThreadBuffer* b = t_buffer ? t_buffer : register_thread(/*is_main=*/true);
  std::lock_guard lock(recorder().mutex);
  b->name = name;
}

TraceTrack trace_track(const char* name) {
  Recorder& r = recorder();
  std::lock_guard lock(r.mutex);
  for (const NamedTrack& t : r.tracks)
    if (t.name == name) return t.tid;
  const TraceTrack tid = r.next_tid++;
  r.tracks.push_back(NamedTrack{name, tid, 1000 + static_cast<int>(r.tracks.size())});
  return tid;
}

int64_t trace_now_ns() { return steady_ns(); }

namespace detail {

void record_span(TraceCategory category, const char* name, uint64_t begin_ticks, uint64_t end_ticks,
                 const TraceArg* args, int num_args, uint64_t flow_out) {
  Event* e = append(this_thread_buffer());
  if (!e) return;
  e->kind = EventKind::kSpan;
  e->category = category;
  e->name = name;
  e->begin = begin_ticks;
  e->end = end_ticks;
  e->flow_out = flow_out;
  copy_args(e, args, num_args);
}

}  // namespace detail

void trace_span(TraceTrack track, TraceCategory category, const char* name, int64_t begin_ns, int64_t end_ns,
                std::initializer_list<TraceArg> args, uint64_t flow_out, uint64_t flow_in) {
  if (!trace_enabled()) return;
  Event* e = append(this_thread_buffer());
  if (!e) return;
  e->kind = EventKind::kSpan;
  e->category = category;
  e->name = name;
  e->track = track;
  e->times_in_ns = true;
  e->begin = static_cast<uint64_t>(begin_ns);
  e->end = static_cast<uint64_t>(std::max(begin_ns, end_ns));
  e->flow_out = flow_out;
  e->flow_in = flow_in;
  copy_args(e, args.begin(), static_cast<int>(args.size()));
}

void trace_counter(const TraceCounterName& counter, double value) {
  if (!trace_enabled() || !std::isfinite(value)) return;
  Event* e = append(this_thread_buffer());
  if (!e) return;
  e->kind = EventKind::kCounter;
  e->category = TraceCategory::kCounter;
  e->name = counter.name;
  e->begin = detail::trace_ticks();
  e->value = value;
  e->args[0] = TraceArg{counter.series, 0};
}

uint64_t trace_new_flow_id() {
  if (!trace_enabled()) return 0;
  static thread_local uint64_t num_flows = 0;  // no shared counter: workers would bounce its cache line
  return (static_cast<uint64_t>(this_thread_buffer()->tid) << 32) | ++num_flows;
}

namespace {

/// One event ending up to kMaxTraceArgs flows at the current instant.
void record_flow_ends(const uint64_t* ids, int num_ids) {
  Event* e = append(this_thread_buffer());
  if (!e) return;
  e->kind = EventKind::kFlowEnd;
  e->category = TraceCategory::kFlow;
  e->name = kTraceFlowName;
  e->begin = detail::trace_ticks();
  for (int i = 0; i < num_ids; ++i) e->args[i] = TraceArg{"id", static_cast<int64_t>(ids[i])};
  e->num_args = static_cast<uint8_t>(num_ids);
}

}  // namespace

void trace_flow_end(uint64_t id) {
  if (!trace_enabled() || id == 0) return;
  record_flow_ends(&id, 1);
}

uint64_t TraceFlowSet::add() {
  if (!trace_enabled()) return 0;
  Slot& slot = slots_[static_cast<uint32_t>(this_thread_buffer()->tid) % kSlots];
  const uint32_t idx = slot.count.fetch_add(1, std::memory_order_relaxed);
  if (idx >= kPerSlot) return 0;
  const uint64_t id = trace_new_flow_id();
  slot.ids[idx] = id;
  return id;
}

void TraceFlowSet::end_all() {
  if (!trace_enabled()) return;  // add() remembered nothing while off
  for (Slot& slot : slots_) {
    const uint32_t n = std::min(slot.count.load(std::memory_order_acquire), kPerSlot);
    for (uint32_t i = 0; i < n; i += kMaxTraceArgs)
      record_flow_ends(&slot.ids[i], static_cast<int>(std::min<uint32_t>(kMaxTraceArgs, n - i)));
    slot.count.store(0, std::memory_order_relaxed);
  }
}

void TraceWorkLane::begin_span(uint32_t job_key, int64_t expert_idx) {
  const uint64_t now = detail::trace_ticks();
  if (end_) *end_ = now;
  job_ = job_key;
  open_ = true;
  end_ = nullptr;
  Event* e = append(this_thread_buffer());
  if (!e) return;
  e->kind = EventKind::kSpan;
  e->category = info_->category;
  e->name = info_->name;
  int n = 0;
  if (info_->layer_idx >= 0) e->args[n++] = TraceArg{"layer", info_->layer_idx};
  if (expert_idx >= 0) e->args[n++] = TraceArg{"expert", expert_idx};
  e->args[n++] = TraceArg{"rows", 0};
  e->args[n++] = TraceArg{"bytes", 0};
  e->num_args = static_cast<uint8_t>(n);
  e->flow_out = info_->flows ? info_->flows->add() : 0;
  e->begin = now;
  e->end = now;
  end_ = &e->end;
  rows_ = &e->args[n - 2].value;
  bytes_ = &e->args[n - 1].value;
}

Status trace_write_json(std::FILE* out, const std::string& path) {
  Recorder& r = recorder();
  // Map ticks to ns over the whole recording; give the calibration at least 20 ms.
  double ns_per_tick = 1.0;
  if (detail::g_trace_clock_is_tsc) {
    auto [ticks, ns] = clock_pair();
    if (ns - r.origin_ns < 20'000'000) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(20'000'000 - (ns - r.origin_ns)));
      std::tie(ticks, ns) = clock_pair();
    }
    if (ticks > r.origin_ticks)
      ns_per_tick = static_cast<double>(ns - r.origin_ns) / static_cast<double>(ticks - r.origin_ticks);
  }
  const auto to_ns = [&](const Event& e, uint64_t t) -> int64_t {
    if (e.times_in_ns) return static_cast<int64_t>(t) - r.origin_ns;
    const auto d = static_cast<int64_t>(t - r.origin_ticks);
    if (!detail::g_trace_clock_is_tsc) return d;
    return static_cast<int64_t>(std::llround(static_cast<double>(d) * ns_per_tick));
  };

  std::lock_guard lock(r.mutex);
  std::map<TraceTrack, std::vector<Item>> by_track;
  for (const auto& b : r.threads) {
    for (size_t c = 0; c < b->chunks.size(); ++c) {
      const Event* first = b->chunks[c];
      const Event* last = c + 1 < b->chunks.size() ? first + kChunkEvents : b->cur;
      for (const Event* e = first; e < last; ++e) {
        const TraceTrack track = e->track >= 0 ? e->track : b->tid;
        const int64_t ts = to_ns(*e, e->begin);
        by_track[track].push_back(Item{ts, e->kind == EventKind::kSpan ? to_ns(*e, e->end) : ts, e, b.get()});
      }
    }
  }
  // Within a track: by start; at equal starts spans before points and enclosing spans before nested ones.
  for (auto& [track, items] : by_track)
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      if (a.ts != b.ts) return a.ts < b.ts;
      const bool a_span = a.event->kind == EventKind::kSpan, b_span = b.event->kind == EventKind::kSpan;
      if (a_span != b_span) return a_span;
      return a.end > b.end;
    });

  const int pid = static_cast<int>(::getpid());
  fmt::memory_buffer buf;
  bool write_failed = false;
  const auto flush = [&](bool force) {
    if (buf.size() < (1u << 20) && !force) return;
    if (std::fwrite(buf.data(), 1, buf.size(), out) != buf.size()) write_failed = true;
    buf.clear();
  };
  bool first = true;
  uint64_t num_written = 0;
  const auto begin_event = [&](char ph) {
    if (!first) buf.append(std::string_view(",\n"));
    first = false;
    ++num_written;
    fmt::format_to(std::back_inserter(buf), "{{\"ph\":\"{}\",\"pid\":{}", ph, pid);
  };
  const auto name_field = [&](const char* key, std::string_view value) {
    fmt::format_to(std::back_inserter(buf), ",\"{}\":\"", key);
    append_escaped(buf, value);
    buf.push_back('"');
  };

  buf.append(std::string_view("{\"traceEvents\":[\n"));
  // Metadata: the process, and a name and sort index for every track used.
  begin_event('M');
  fmt::format_to(std::back_inserter(buf), ",\"tid\":{},\"name\":\"process_name\",\"args\":{{\"name\":\"hetmoe\"}}}}",
                 by_track.empty() ? 1 : by_track.begin()->first);
  for (const auto& [track, items] : by_track) {
    std::string name = fmt::format("track {}", track);
    int sort_index = 10000 + track;
    for (const auto& b : r.threads)
      if (b->tid == track) name = b->name, sort_index = b->sort_index;
    for (const NamedTrack& t : r.tracks)
      if (t.tid == track) name = t.name, sort_index = t.sort_index;
    begin_event('M');
    fmt::format_to(std::back_inserter(buf), ",\"tid\":{},\"name\":\"thread_name\",\"args\":{{\"name\":\"", track);
    append_escaped(buf, name);
    buf.append(std::string_view("\"}}"));
    begin_event('M');
    fmt::format_to(std::back_inserter(buf),
                   ",\"tid\":{},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{}}}}}", track, sort_index);
  }

  const auto flow_point = [&](char ph, TraceTrack track, uint64_t id, int64_t ts) {
    begin_event(ph);
    fmt::format_to(std::back_inserter(buf), ",\"tid\":{}", track);
    if (ph == 'f') buf.append(std::string_view(",\"bp\":\"e\""));
    name_field("cat", trace_category_name(TraceCategory::kFlow));
    name_field("name", kTraceFlowName);
    fmt::format_to(std::back_inserter(buf), ",\"id\":{},\"ts\":", id);
    append_us(buf, ts);
    buf.push_back('}');
  };
  for (const auto& [track, items] : by_track) {
    for (const Item& item : items) {
      const Event& e = *item.event;
      switch (e.kind) {
        case EventKind::kSpan: {
          begin_event('X');
          fmt::format_to(std::back_inserter(buf), ",\"tid\":{}", track);
          name_field("cat", trace_category_name(e.category));
          name_field("name", e.name ? e.name : "?");
          buf.append(std::string_view(",\"ts\":"));
          append_us(buf, item.ts);
          buf.append(std::string_view(",\"dur\":"));
          append_us(buf, item.end - item.ts);
          const bool node_arg = (e.category == TraceCategory::kChunk || e.category == TraceCategory::kExpert) &&
                                e.track < 0 && item.thread->numa_node >= 0;
          if (e.num_args > 0 || node_arg) {
            buf.append(std::string_view(",\"args\":{"));
            for (int i = 0; i < e.num_args; ++i) {
              if (i > 0) buf.push_back(',');
              buf.push_back('"');
              append_escaped(buf, e.args[i].key ? e.args[i].key : "?");
              fmt::format_to(std::back_inserter(buf), "\":{}", e.args[i].value);
            }
            if (node_arg)
              fmt::format_to(std::back_inserter(buf), "{}\"numa_node\":{}", e.num_args > 0 ? "," : "",
                             item.thread->numa_node);
            buf.push_back('}');
          }
          buf.push_back('}');
          const int64_t mid = item.ts + (item.end - item.ts) / 2;
          if (e.flow_out) flow_point('s', track, e.flow_out, mid);
          if (e.flow_in) flow_point('f', track, e.flow_in, mid);
          break;
        }
        case EventKind::kCounter: {
          begin_event('C');
          fmt::format_to(std::back_inserter(buf), ",\"tid\":{}", track);
          name_field("cat", trace_category_name(TraceCategory::kCounter));
          name_field("name", e.name ? e.name : "?");
          buf.append(std::string_view(",\"ts\":"));
          append_us(buf, item.ts);
          buf.append(std::string_view(",\"args\":{\""));
          append_escaped(buf, e.args[0].key ? e.args[0].key : "value");
          fmt::format_to(std::back_inserter(buf), "\":{}}}}}", e.value);
          break;
        }
        case EventKind::kFlowEnd:
          for (int i = 0; i < e.num_args; ++i) flow_point('f', track, static_cast<uint64_t>(e.args[i].value), item.ts);
          break;
      }
      flush(false);
    }
  }
  buf.append(std::string_view("\n],\n\"otherData\":{\"producer\":\"hetmoe\""));
  fmt::format_to(std::back_inserter(buf), ",\"clock\":\"{}\",\"dropped_events\":{}",
                 detail::g_trace_clock_is_tsc ? "tsc" : "steady_clock", r.num_dropped.load());
  for (const TraceCategoryInfo& c : kTraceCategories) {
    fmt::format_to(std::back_inserter(buf), ",\"category {}\":\"", c.name);
    append_escaped(buf, c.description);
    buf.push_back('"');
  }
  buf.append(std::string_view("}}\n"));
  flush(true);
  r.num_written = num_written;
  if (write_failed || std::fflush(out) != 0 || std::ferror(out))
    return make_error(ErrorCode::kIo, fmt::format("{}: writing the trace failed: {}", path, std::strerror(errno)));
  return {};
}

Status trace_write_json(const std::string& path) {
  std::FILE* out = std::fopen(path.c_str(), "w");
  if (!out)
    return make_error(ErrorCode::kIo,
                      fmt::format("{}: cannot open the trace file for writing: {}", path, std::strerror(errno)));
  Status s = trace_write_json(out, path);
  if (std::fclose(out) != 0 && s)
    return make_error(ErrorCode::kIo, fmt::format("{}: closing the trace file failed: {}", path, std::strerror(errno)));
  return s;
}

Expected<std::unique_ptr<TraceSession>> TraceSession::start(const std::string& path) {
  if (trace_enabled())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{}: a trace is already being recorded in this process", path));
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (!file)
    return make_error(ErrorCode::kIo,
                      fmt::format("{}: cannot open the trace file for writing: {}", path, std::strerror(errno)));
  trace_start();
  return std::unique_ptr<TraceSession>(new TraceSession(path, file));
}

Status TraceSession::finish() {
  if (!file_) return {};
  trace_stop();
  Status s = trace_write_json(file_, path_);
  const bool close_failed = std::fclose(file_) != 0;
  file_ = nullptr;
  if (!s) return s;
  if (close_failed)
    return make_error(ErrorCode::kIo,
                      fmt::format("{}: closing the trace file failed: {}", path_, std::strerror(errno)));
  return {};
}

TraceSession::~TraceSession() {
  if (file_) (void)finish();
}

}  // namespace hetmoe::profiler
