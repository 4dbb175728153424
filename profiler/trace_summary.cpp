#include "profiler/trace_summary.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

namespace hetmoe::profiler {
namespace {

using nlohmann::json;

enum class Device { kNone, kCpu, kGpu, kCopy };

Device device_of(const std::string& category) {
  if (category == "step" || category == "layer" || category == "flow" || category == "counter" || category == "serve")
    return Device::kNone;
  if (category == "gpu") return Device::kGpu;
  if (category == "copy") return Device::kCopy;
  return Device::kCpu;  // op, chunk, expert, and anything another producer calls its work
}

struct Span {
  double ts = 0, end = 0;  // µs
  int64_t tid = 0;
  std::string name, category;
  int64_t layer = -1;
  int64_t num_tokens = -1;  // arg num_tokens (step spans)
  double bytes = -1;        // arg bytes (work spans that read weights), -1 without
  Device device = Device::kNone;
  double self = 0;
};

struct Interval {
  double begin, end;
};

/// Sorted, disjoint union of intervals.
std::vector<Interval> merge_intervals(std::vector<Interval> v) {
  std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  std::vector<Interval> out;
  for (const Interval& i : v) {
    if (!out.empty() && i.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, i.end);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

double total_length(const std::vector<Interval>& v) {
  double s = 0;
  for (const Interval& i : v) s += i.end - i.begin;
  return s;
}

/// Length of the intersection of two sorted disjoint interval lists.
double overlap_length(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  double s = 0;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const double lo = std::max(a[i].begin, b[j].begin), hi = std::min(a[i].end, b[j].end);
    if (hi > lo) s += hi - lo;
    if (a[i].end < b[j].end) ++i; else ++j;
  }
  return s;
}

Error format_error(const std::string& path, const std::string& what) {
  return make_error(ErrorCode::kFormat,
                    fmt::format("{}: {} (expected a Trace Event JSON file as `--trace` writes it: "
                                "{{\"traceEvents\": [...]}})",
                                path, what));
}

}  // namespace

Expected<TraceSummary> summarize_trace(std::string_view json_text, const std::string& path) {
  json doc;
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const json::parse_error& e) {
    return format_error(path, fmt::format("not valid JSON: {}", e.what()));
  }
  const json* events = nullptr;
  if (doc.is_array()) {
    events = &doc;
  } else if (doc.is_object() && doc.contains("traceEvents") && doc["traceEvents"].is_array()) {
    events = &doc["traceEvents"];
  } else {
    return format_error(path, "no \"traceEvents\" array");
  }

  TraceSummary summary;
  summary.path = path;
  std::map<int64_t, std::string> track_names;
  std::vector<Span> spans;
  std::map<std::string, std::vector<double>> counter_samples;
  double first = std::numeric_limits<double>::max(), last = std::numeric_limits<double>::lowest();
  size_t index = 0;
  for (const json& e : *events) {
    ++summary.num_events;
    const size_t idx = index++;
    if (!e.is_object() || !e.contains("ph") || !e["ph"].is_string())
      return format_error(path, fmt::format("traceEvents[{}] is not an object with a string \"ph\"", idx));
    const std::string ph = e["ph"].get<std::string>();
    const int64_t tid = e.contains("tid") && e["tid"].is_number_integer() ? e["tid"].get<int64_t>() : 0;
    const std::string name = e.contains("name") && e["name"].is_string() ? e["name"].get<std::string>() : "";
    const std::string cat = e.contains("cat") && e["cat"].is_string() ? e["cat"].get<std::string>() : "";
    if (ph == "M") {
      if (name == "thread_name" && e.contains("args") && e["args"].is_object() && e["args"].contains("name") &&
          e["args"]["name"].is_string())
        track_names[tid] = e["args"]["name"].get<std::string>();
      continue;
    }
    if (ph == "X") {
      if (!e.contains("ts") || !e["ts"].is_number() || !e.contains("dur") || !e["dur"].is_number())
        return format_error(path, fmt::format("traceEvents[{}] (\"X\" {}) lacks a numeric ts or dur", idx, name));
      Span s;
      s.ts = e["ts"].get<double>();
      s.end = s.ts + std::max(0.0, e["dur"].get<double>());
      s.tid = tid;
      s.name = name;
      s.category = cat;
      s.device = device_of(cat);
      if (e.contains("args") && e["args"].is_object() && e["args"].contains("layer") &&
          e["args"]["layer"].is_number_integer())
        s.layer = e["args"]["layer"].get<int64_t>();
      if (e.contains("args") && e["args"].is_object() && e["args"].contains("num_tokens") &&
          e["args"]["num_tokens"].is_number_integer())
        s.num_tokens = e["args"]["num_tokens"].get<int64_t>();
      if (e.contains("args") && e["args"].is_object() && e["args"].contains("bytes") && e["args"]["bytes"].is_number())
        s.bytes = e["args"]["bytes"].get<double>();
      first = std::min(first, s.ts);
      last = std::max(last, s.end);
      spans.push_back(std::move(s));
      if (!track_names.count(tid)) track_names[tid] = "";
      continue;
    }
    if (ph == "C" && e.contains("args") && e["args"].is_object()) {
      for (auto it = e["args"].begin(); it != e["args"].end(); ++it)
        if (it.value().is_number()) counter_samples[name + " " + it.key()].push_back(it.value().get<double>());
      continue;
    }
    if (ph == "s") ++summary.num_flows;
  }
  summary.num_spans = spans.size();
  summary.duration_us = spans.empty() ? 0.0 : last - first;
  for (const auto& [tid, name] : track_names)
    summary.track_names.push_back(name.empty() ? fmt::format("tid {}", tid) : name);

  // Self time: per track, by start (enclosing spans first at equal starts), minus directly nested spans.
  std::map<int64_t, std::vector<size_t>> by_track;
  for (size_t i = 0; i < spans.size(); ++i) by_track[spans[i].tid].push_back(i);
  for (auto& [tid, idx] : by_track) {
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
      if (spans[a].ts != spans[b].ts) return spans[a].ts < spans[b].ts;
      return spans[a].end > spans[b].end;
    });
    std::vector<size_t> stack;
    for (size_t i : idx) {
      Span& s = spans[i];
      s.self = s.end - s.ts;
      while (!stack.empty() && spans[stack.back()].end <= s.ts) stack.pop_back();
      if (!stack.empty()) spans[stack.back()].self -= std::min(s.end, spans[stack.back()].end) - s.ts;
      stack.push_back(i);
    }
  }

  // Devices: union of work spans, thread time, tracks.
  const std::pair<Device, const char*> kDevices[] = {{Device::kCpu, "cpu"}, {Device::kGpu, "gpu"},
                                                     {Device::kCopy, "copy"}};
  std::map<Device, std::vector<Interval>> busy;
  for (const auto& [device, name] : kDevices) {
    std::vector<Interval> v;
    TraceSummary::Device d;
    d.name = name;
    std::vector<int64_t> tids;
    for (const Span& s : spans) {
      if (s.device != device) continue;
      v.push_back({s.ts, s.end});
      d.span_us += std::max(0.0, s.self);
      if (std::find(tids.begin(), tids.end(), s.tid) == tids.end()) tids.push_back(s.tid);
    }
    busy[device] = merge_intervals(std::move(v));
    d.busy_us = total_length(busy[device]);
    d.num_tracks = static_cast<uint32_t>(tids.size());
    summary.devices.push_back(d);
  }

  // Layers: their step spans, and each device's busy time inside them.
  std::map<int64_t, std::vector<Interval>> windows;
  std::map<int64_t, TraceSummary::Layer> layers;
  for (const Span& s : spans) {
    if (s.category != "layer" || s.layer < 0) continue;
    TraceSummary::Layer& l = layers[s.layer];
    l.layer_idx = s.layer;
    const double d = s.end - s.ts;
    l.step_us += d;
    if (s.name.find("attention") != std::string::npos) {
      l.attention_us += d;
      ++l.num_steps;
    } else {
      l.moe_us += d;
    }
    windows[s.layer].push_back({s.ts, s.end});
  }
  for (auto& [layer_idx, l] : layers) {
    const std::vector<Interval> w = merge_intervals(windows[layer_idx]);
    l.cpu_busy_us = overlap_length(busy[Device::kCpu], w);
    l.gpu_busy_us = overlap_length(busy[Device::kGpu], w);
    l.copy_busy_us = overlap_length(busy[Device::kCopy], w);
    summary.layers.push_back(l);
  }

  // Ops: the work categories by (category, name).
  std::map<std::pair<std::string, std::string>, TraceSummary::Op> ops;
  for (const Span& s : spans) {
    if (s.device == Device::kNone) continue;
    TraceSummary::Op& op = ops[{s.category, s.name}];
    op.name = s.name;
    op.category = s.category;
    ++op.count;
    op.total_us += s.end - s.ts;
    op.self_us += std::max(0.0, s.self);
  }
  for (auto& [key, op] : ops) summary.ops.push_back(op);
  std::sort(summary.ops.begin(), summary.ops.end(),
            [](const TraceSummary::Op& a, const TraceSummary::Op& b) { return a.total_us > b.total_us; });

  // Step kinds: each op span goes to the step span it starts in (steps do not overlap: one forward at a time).
  struct StepWindow {
    double begin, end;
    std::string kind;
  };
  std::vector<StepWindow> steps;
  std::map<std::string, TraceSummary::StepKind> kinds;
  for (const Span& s : spans) {
    if (s.category != "step") continue;
    const std::string kind =
        s.num_tokens < 0 ? s.name : fmt::format("{} of {} token{}", s.name, s.num_tokens, s.num_tokens == 1 ? "" : "s");
    steps.push_back({s.ts, s.end, kind});
    TraceSummary::StepKind& k = kinds[kind];
    k.name = kind;
    ++k.num_steps;
    k.step_us += s.end - s.ts;
  }
  std::sort(steps.begin(), steps.end(), [](const StepWindow& a, const StepWindow& b) { return a.begin < b.begin; });
  // The step that a span starting at ts starts in, or nullptr.
  const auto step_at = [&steps](double ts) -> const StepWindow* {
    auto it = std::upper_bound(steps.begin(), steps.end(), ts,
                               [](double t, const StepWindow& w) { return t < w.begin; });
    if (it == steps.begin()) return nullptr;
    --it;
    return ts < it->end ? &*it : nullptr;
  };
  std::map<std::string, std::map<std::string, double>> op_us;  // kind → op → µs
  struct OpWindow {
    double begin, end;
    const std::string* kind;
    const std::string* name;
  };
  std::vector<OpWindow> op_windows;  // the op spans inside steps (one track runs them one after another)
  for (const Span& s : spans) {
    if (s.category != "op") continue;
    const StepWindow* step = step_at(s.ts);
    if (step == nullptr) continue;
    op_us[step->kind][s.name] += s.end - s.ts;
    op_windows.push_back({s.ts, s.end, &step->kind, &s.name});
  }
  std::sort(op_windows.begin(), op_windows.end(),
            [](const OpWindow& a, const OpWindow& b) { return a.begin < b.begin; });
  std::map<std::string, std::map<std::string, double>> op_bytes;  // kind → op → bytes of its work spans
  for (const Span& s : spans) {
    if (s.bytes < 0 || (s.category != "chunk" && s.category != "expert")) continue;
    auto it = std::upper_bound(op_windows.begin(), op_windows.end(), s.ts,
                               [](double ts, const OpWindow& w) { return ts < w.begin; });
    if (it == op_windows.begin()) continue;
    --it;
    if (s.ts < it->end) op_bytes[*it->kind][*it->name] += s.bytes;
  }
  // Outside the work: per step, its length minus the union of the chunk/expert spans starting in it (clipped).
  std::vector<std::vector<std::pair<double, double>>> step_work(steps.size());  // (begin, end) per step
  for (const Span& s : spans) {
    if (s.category != "chunk" && s.category != "expert") continue;
    const StepWindow* step = step_at(s.ts);
    if (step != nullptr)
      step_work[static_cast<size_t>(step - steps.data())].emplace_back(s.ts, std::min(s.end, step->end));
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    std::vector<std::pair<double, double>>& work = step_work[i];
    std::sort(work.begin(), work.end());
    double covered = 0, open_end = steps[i].begin;
    for (const auto& [b, e] : work) {
      if (e > open_end) covered += e - std::max(b, open_end);
      open_end = std::max(open_end, e);
    }
    TraceSummary::StepKind& k = kinds[steps[i].kind];
    k.num_work_spans += work.size();
    k.outside_work_us += (steps[i].end - steps[i].begin) - covered;
  }
  for (auto& [name, k] : kinds) {
    for (const auto& [op, us] : op_us[name]) k.ops.emplace_back(op, us);
    std::sort(k.ops.begin(), k.ops.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    for (const auto& [op, us] : k.ops) k.op_bytes.push_back(op_bytes[name][op]);
    summary.step_kinds.push_back(std::move(k));
  }

  for (const auto& [name, samples] : counter_samples) {
    TraceSummary::Counter c;
    c.name = name;
    c.num_samples = samples.size();
    c.min = *std::min_element(samples.begin(), samples.end());
    c.max = *std::max_element(samples.begin(), samples.end());
    double sum = 0;
    for (double v : samples) sum += v;
    c.mean = sum / static_cast<double>(samples.size());
    summary.counters.push_back(c);
  }
  return summary;
}

Expected<TraceSummary> summarize_trace_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open the trace: {}", path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, fmt::format("{}: reading the trace failed", path));
  const std::string text = ss.str();
  return summarize_trace(text, path);
}

std::string format_trace_summary(const TraceSummary& s, size_t top_n) {
  std::string out;
  const auto add = [&]<typename... T>(fmt::format_string<T...> f, T&&... args) {
    fmt::format_to(std::back_inserter(out), f, std::forward<T>(args)...);
  };
  const auto ms = [](double us) { return us / 1000.0; };
  add("trace {}: {} events, {} spans, {} flows, {} tracks, {:.3f} ms recorded\n", s.path, s.num_events, s.num_spans,
      s.num_flows, s.track_names.size(), ms(s.duration_us));
  for (const std::string& t : s.track_names) add("  track: {}\n", t);

  add("\nper layer (all steps summed; busy = wall time the device had work, inside the layer's steps)\n");
  add("| layer | steps | step ms | attention ms | moe ms | cpu busy ms | gpu busy ms | copy busy ms | overlap |\n");
  add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const TraceSummary::Layer& l : s.layers)
    add("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.2f} |\n", l.layer_idx, l.num_steps,
        ms(l.step_us), ms(l.attention_us), ms(l.moe_us), ms(l.cpu_busy_us), ms(l.gpu_busy_us), ms(l.copy_busy_us),
        l.overlap_efficiency());
  if (s.layers.empty()) add("(no layer spans)\n");
  add("overlap = max(cpu busy, gpu busy) / step time");
  bool gpu = false;
  for (const TraceSummary::Device& d : s.devices) gpu |= d.name == "gpu" && d.num_tracks > 0;
  out += (gpu ? "\n" : "; no GPU spans in this trace, so gpu busy is 0 and overlap is the CPU's share of the step\n");

  add("\nper device\n");
  add("| device | tracks | busy ms | thread time ms | busy share of recorded time |\n");
  add("| --- | ---: | ---: | ---: | ---: |\n");
  for (const TraceSummary::Device& d : s.devices)
    add("| {} | {} | {:.3f} | {:.3f} | {:.1f} % |\n", d.name, d.num_tracks, ms(d.busy_us), ms(d.span_us),
        s.duration_us > 0 ? 100.0 * d.busy_us / s.duration_us : 0.0);

  add("\ntop {} ops by total time (self = minus nested spans on the same track)\n", std::min(top_n, s.ops.size()));
  add("| op | category | count | total ms | self ms | mean us |\n");
  add("| --- | --- | ---: | ---: | ---: | ---: |\n");
  for (size_t i = 0; i < s.ops.size() && i < top_n; ++i) {
    const TraceSummary::Op& op = s.ops[i];
    add("| {} | {} | {} | {:.3f} | {:.3f} | {:.2f} |\n", op.name, op.category, op.count, ms(op.total_us),
        ms(op.self_us), op.count ? op.total_us / static_cast<double>(op.count) : 0.0);
  }

  for (const TraceSummary::StepKind& k : s.step_kinds) {
    const double n = static_cast<double>(k.num_steps);
    add("\n{}: {} step{}, {:.3f} ms per step; ops started inside them, per step\n", k.name, k.num_steps,
        k.num_steps == 1 ? "" : "s", ms(k.step_us) / n);
    if (k.num_work_spans > 0)
      add("no chunk or expert span open (serial steps between the parallel regions, fork and join): {:.3f} ms per "
          "step ({:.1f} % of the step)\n",
          ms(k.outside_work_us) / n, k.step_us > 0 ? 100.0 * k.outside_work_us / k.step_us : 0.0);
    add("| op | ms per step | share of the step | MB read per step | read GB/s |\n");
    add("| --- | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < k.ops.size(); ++i) {
      const auto& [op, us] = k.ops[i];
      const double bytes = i < k.op_bytes.size() ? k.op_bytes[i] : 0.0;
      add("| {} | {:.3f} | {:.1f} % | {} | {} |\n", op, ms(us) / n, k.step_us > 0 ? 100.0 * us / k.step_us : 0.0,
          bytes > 0 ? fmt::format("{:.1f}", bytes / n / 1e6) : "—",
          bytes > 0 && us > 0 ? fmt::format("{:.1f}", bytes / us / 1e3) : "—");
    }
  }

  if (!s.counters.empty()) {
    add("\ncounters\n");
    add("| counter | samples | min | mean | max |\n");
    add("| --- | ---: | ---: | ---: | ---: |\n");
    for (const TraceSummary::Counter& c : s.counters)
      add("| {} | {} | {:.6g} | {:.6g} | {:.6g} |\n", c.name, c.num_samples, c.min, c.mean, c.max);
  }
  return out;
}

}  // namespace hetmoe::profiler
