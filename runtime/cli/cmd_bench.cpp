// hetmoe bench: prefill (pp N) and decode (tg N) throughput at context depths, like llama-bench, plus the measured
// memory read bandwidth, bytes read per decoded token and the roofline fraction.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <optional>
#include <functional>
#include <random>
#include <set>

#include "placement/traffic.h"
#include "profiler/bandwidth.h"
#include "profiler/memory_limit.h"
#include "profiler/memory.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/default_model.h"
#include "runtime/cli/model_loading.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_options.h"
#include "runtime/cli/trace_options.h"
#include "runtime/cli/run_options.h"
#include "runtime/app/runtime_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"

namespace hetmoe::cli {
namespace {

constexpr uint64_t kProbeBytes = 1ull << 30;  // several times any last-level cache
// The probe's buffer is at most a quarter of what the process can still use (profiler::memory_room: MemAvailable
// and the cgroup's room), so it never pushes a run over its memory limit; below 64 MiB (not clear of a large L3) the
// probe is skipped and the roofline columns read 0.
constexpr uint64_t kMinProbeBytes = 64ull << 20;
constexpr int kProbePasses = 5;                // best of: a pass disturbed by a neighbour does not count

struct BenchArgs {
  std::string model_path;
  bool interleave = false;
  std::vector<int> num_prompt = {512};
  std::vector<int> num_gen = {128};
  std::vector<int> depths = {0};
  std::string depth_fill = "prefill";  // --depth-fill: prefill, or repeat (CPU path)
  std::vector<int> threads = {default_num_threads()};
  int num_reps = 5;
  std::string output = "md";
  KvTypeArgs kv;  // --kv-type, -ctk, -ctv
  std::string load = "auto";
  bool use_reference = false;
  std::string trace_path;
  std::string config_path;  // --config FILE: thread layout, NUMA, GPU and placement keys (not threads.count)
  DeviceArgs device;
};

struct Row {
  int n_prompt = 0, n_gen = 0, n_depth = 0, n_threads = 0;
  std::vector<double> samples_ns;
  double bandwidth = 0;        // bytes/s, measured in this run for n_threads
  uint64_t bytes_per_token = 0;  // decode rows only
  std::string path;

  std::vector<double> samples_ts() const {
    std::vector<double> ts;
    const int n = n_gen > 0 ? n_gen : n_prompt;
    for (double ns : samples_ns) ts.push_back(n / (ns * 1e-9));
    return ts;
  }
};

std::pair<double, double> mean_stddev(const std::vector<double>& v) {
  if (v.empty()) return {0, 0};
  double m = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0};
}

std::string test_name(const Row& r) {
  std::string s = r.n_gen > 0 ? fmt::format("tg{}", r.n_gen) : fmt::format("pp{}", r.n_prompt);
  if (r.n_depth > 0) s += fmt::format(" @ d{}", r.n_depth);
  return s;
}

int run_bench(const BenchArgs& args) {
  if (args.output != "md" && args.output != "csv" && args.output != "json")
    return report_error("bench", make_error(ErrorCode::kInvalidArgument,
                                            fmt::format("-o {}: expected md, csv or json", args.output)));
  auto load_mode = parse_load_mode(args.load);
  if (!load_mode) return report_error("bench", load_mode.error());
  auto trace = start_trace(args.trace_path);
  if (!trace) return report_error("bench", trace.error());
  std::optional<RuntimeConfig> config;
  if (!args.config_path.empty()) {
    if (auto s = check_input_file("--config", args.config_path); !s) return report_error("bench", s.error());
    auto loaded = load_config(args.config_path);
    if (!loaded) return report_error("bench", loaded.error());
    config = std::move(*loaded);
  }
  auto kv_types = resolve_kv_types(args.kv, config ? &*config : nullptr);
  if (!kv_types) return report_error("bench", kv_types.error());
  if (!args.model_path.empty())
    if (auto s = check_input_file("-m", args.model_path); !s) return report_error("bench", s.error());
  auto model_path = model_or_default(args.model_path);
  if (!model_path) return report_error("bench", model_path.error());
  auto model = load_model_with_progress("bench", *model_path, *load_mode);
  if (!model) return report_error("bench", model.error());
  const ModelHparams& hp = model->hparams;
  placement::ExpertStats expert_counts = run_expert_stats(*model);  // every run counts expert selections

  const uint64_t file_bytes = model->file->file_size();
  const uint64_t available = profiler::mem_available_bytes();
  if (available > 0 && file_bytes > available)
    fmt::print(stderr,
               "hetmoe bench: warning: the model ({}) does not fit in available memory ({}): weights are re-read from "
               "disk every token (page-cache thrashing), so these figures measure the disk, not hetmoe\n",
               format_bytes(file_bytes), format_bytes(available));

  int max_p = 0, max_n = 0, max_d = 0;
  for (int p : args.num_prompt) max_p = std::max(max_p, p);
  for (int n : args.num_gen) max_n = std::max(max_n, n);
  for (int d : args.depths) max_d = std::max(max_d, d);
  const auto ctx = static_cast<uint32_t>(std::max(max_d + std::max(max_p, max_n) + 1, 16));
  if (ctx > hp.context_length)
    return report_error("bench", make_error(ErrorCode::kInvalidArgument,
                                            fmt::format("depth {} + {} tokens exceed the model's context {}", max_d,
                                                        std::max(max_p, max_n), hp.context_length)));

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token_dist(0, static_cast<int32_t>(hp.vocab_size) - 1);
  std::vector<int32_t> tokens(static_cast<size_t>(max_d + max_p + max_n + 1));
  for (auto& t : tokens) t = token_dist(rng);
  std::vector<float> logits(hp.vocab_size);  // (vocab_size)

  std::vector<Row> rows;
  std::set<std::string> printed_notes;  // a note ("no GPU found ...") once per run, not once per thread count
  // Peak RSS without the bandwidth probe's buffer: the high-water mark before each probe, and after it once reset.
  uint64_t peak_rss = profiler::rss_high_water_bytes();
  bool peak_rss_exact = true;
  bool probe_size_reported = false;
  const auto probe_bandwidth = [&](int num_threads) {
    peak_rss = std::max(peak_rss, profiler::rss_high_water_bytes());
    const profiler::MemoryRoom room = profiler::memory_room();
    const uint64_t probe_bytes = profiler::fitted_buffer_bytes(kProbeBytes, room.bytes(), kMinProbeBytes);
    if (probe_bytes < kProbeBytes && !probe_size_reported) {
      probe_size_reported = true;
      if (probe_bytes == 0)
        fmt::print(stderr, "hetmoe bench: bandwidth probe skipped: {} can still be used, below 4 × {} (memory "
                           "bandwidth and roofline columns read 0)\n", room.describe(), format_bytes(kMinProbeBytes));
      else
        fmt::print(stderr, "hetmoe bench: bandwidth probe buffer reduced to {} (from {}) to stay within the memory "
                           "this run can use: {}\n", format_bytes(probe_bytes), format_bytes(kProbeBytes),
                   room.describe());
    }
    if (probe_bytes == 0) return 0.0;
    const double bw = profiler::measure_read_bandwidth(probe_bytes, num_threads, kProbePasses);
    peak_rss_exact = profiler::reset_rss_high_water() && peak_rss_exact;
    return bw;
  };
  for (int num_threads : args.threads) {
    ForwardOptions options;
    options.context_length = ctx;
    options.kv_type = kv_types->k;
    options.kv_type_v = kv_types->v;
    options.num_threads = num_threads;
    options.use_reference = args.use_reference;
    options.rollback_slots = static_cast<uint32_t>(std::max(max_p, max_n) + 1);
    if (auto s = apply_device_options(args.device, options); !s) return report_error("bench", s.error());
    if (config)
      if (auto s = apply_runtime_config(*config, /*threads_given=*/true, options); !s)
        return report_error("bench", s.error());
    std::vector<std::string> forward_notes;
    const auto print_new_notes = [&] {
      for (const std::string& n : forward_notes)
        if (printed_notes.insert(n).second) fmt::print(stderr, "hetmoe bench: {}\n", n);
      forward_notes.clear();
    };
    auto plan = make_run_plan(*model, args.device, config ? &*config : nullptr, options, &forward_notes);
    if (!plan) {
      print_new_notes();
      return report_error("bench", plan.error());
    }
    options.plan = &*plan;
    if (!options.use_reference) options.expert_counts = expert_counts.counts.data();
    auto forward = create_forward(*model, options, &forward_notes);
    print_new_notes();
    if (!forward) return report_error("bench", forward.error());
    ForwardPass& fwd = **forward;
    // The read bandwidth of this thread count, measured before and after its tests (best of both).
    const double bandwidth_before = probe_bandwidth(num_threads);
    const std::string path = forward_path_name(options, forward->get());
    const size_t first_row = rows.size();
    for (int depth : args.depths) {
      // Fill the context to `depth` once (untimed); every repetition then truncates back to it.
      fwd.reset();
      const std::span<const int32_t> all(tokens);
      if (depth > 0) {
        const double t0 = profiler::now_seconds();
        const bool repeat = args.depth_fill == "repeat";
        const int computed = repeat ? std::min(depth, 128) : depth;
        if (auto s = fwd.forward_batch(all.subspan(0, computed), {}); !s) return report_error("bench", s.error());
        if (repeat && depth > computed)
          if (auto s = fwd.append_repeated_positions(static_cast<uint32_t>(depth - computed)); !s)
            return report_error("bench", Error{s.error().code, "--depth-fill repeat: " + s.error().message, {}});
        fmt::print(stderr, "hetmoe bench: filled depth {} in {:.1f} s{}\n", depth, profiler::now_seconds() - t0,
                   repeat && depth > computed
                       ? fmt::format(" ({} tokens computed, {} positions repeating their KV entries)", computed,
                                     depth - computed)
                       : std::string());
      }
      struct Test {
        Row row;
        std::function<Status()> body;
      };
      std::vector<Test> tests;
      for (int p : args.num_prompt) {
        if (p <= 0) continue;
        tests.push_back({Row{p, 0, depth, num_threads, {}, 0, 0, path},
                         [&fwd, &logits, all, depth, p] { return fwd.forward_batch(all.subspan(depth, p), logits); }});
      }
      for (int n : args.num_gen) {
        if (n <= 0) continue;
        Row row{0, n, depth, num_threads, {}, 0, 0, path};
        // decode_traffic takes one KV type; K and V each take half of a position's bytes of their type.
        const auto traffic_depth = static_cast<uint32_t>(depth + n / 2);
        const placement::DecodeTraffic k_traffic = placement::decode_traffic(*model, traffic_depth, kv_types->k);
        const placement::DecodeTraffic v_traffic = placement::decode_traffic(*model, traffic_depth, kv_types->v);
        row.bytes_per_token = k_traffic.total() - k_traffic.kv_bytes + (k_traffic.kv_bytes + v_traffic.kv_bytes) / 2;
        tests.push_back({row, [&fwd, &logits, &tokens, depth, n]() -> Status {
                           for (int i = 0; i < n; ++i) HETMOE_RETURN_IF_ERROR(fwd.forward(tokens[depth + i], logits));
                           return {};
                         }});
      }
      const auto run_once = [&](Test& test, bool timed) -> Status {
        HETMOE_RETURN_IF_ERROR(fwd.truncate(static_cast<uint32_t>(depth)));
        const auto t0 = std::chrono::steady_clock::now();
        HETMOE_RETURN_IF_ERROR(test.body());
        const auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
        if (timed) test.row.samples_ns.push_back(ns);
        if (test.row.n_gen > 0) profiler::trace_counter(profiler::kTraceCounterDecode, test.row.n_gen / (ns * 1e-9));
        return {};
      };
      // Repetition -1 is the warm-up. --interleave: round by round over the tests (A B A B ...), so a slow minute on
      // a shared machine spreads over every test instead of deciding one comparison; else test by test.
      if (args.interleave) {
        for (int rep = -1; rep < args.num_reps; ++rep)
          for (Test& test : tests)
            if (auto s = run_once(test, rep >= 0); !s) return report_error("bench", s.error());
      } else {
        for (Test& test : tests)
          for (int rep = -1; rep < args.num_reps; ++rep)
            if (auto s = run_once(test, rep >= 0); !s) return report_error("bench", s.error());
      }
      for (Test& test : tests) rows.push_back(std::move(test.row));
    }
    const double bandwidth = std::max(bandwidth_before, probe_bandwidth(num_threads));
    for (size_t i = first_row; i < rows.size(); ++i) {
      Row& r = rows[i];
      r.bandwidth = bandwidth;
      // A decode that read faster than the probe proves the probe low: the roofline is then computed against what
      // the decode read (never above 100 %), and said.
      const double read_rate = mean_stddev(r.samples_ts()).first * static_cast<double>(r.bytes_per_token);
      if (r.bytes_per_token > 0 && read_rate > r.bandwidth) {
        fmt::print(stderr,
                   "hetmoe bench: {} at {} threads read {:.1f} GB/s, more than the bandwidth probe's {:.1f} GB/s: the "
                   "probe under-measured (a busy host?); its roofline is computed against {:.1f} GB/s\n",
                   test_name(r), r.n_threads, read_rate / 1e9, r.bandwidth / 1e9, read_rate / 1e9);
        r.bandwidth = read_rate;
      }
    }
  }
  peak_rss = std::max(peak_rss, profiler::rss_high_water_bytes());
  if (!peak_rss_exact) peak_rss = profiler::peak_rss_bytes();  // the kernel refused the reset: the probe is in it

  const uint64_t anon_rss = profiler::rss_anon_bytes();
  // Resident memory beyond the weights (and the KV cache, which is anonymous too): anonymous RSS minus the weights
  // when they were loaded into memory (mapped weights are file-backed and not in the anonymous count).
  const bool in_memory = model->file->in_memory();
  // Weights in anonymous memory: the whole file when copied, or the RAM tier's resident part of a mapped one.
  const uint64_t anon_weights = in_memory ? file_bytes : model->file->resident_bytes();
  const uint64_t beyond_weights = anon_rss - std::min(anon_rss, anon_weights);
  uint64_t num_params = 0;
  for (const auto& t : model->file->tensors()) num_params += t.num_elements;
  const std::string model_type = fmt::format("gpt-oss {}L {}x{}E", hp.num_layers, hp.num_experts,
                                             hp.num_experts_used);
  // KV cache: one position in every layer, and all of it at the run's context (sliding layers: their window).
  const uint64_t kv_bytes_per_token = kv_bytes_per_position(hp, kv_types->k, kv_types->v) * hp.num_layers;
  const uint64_t kv_bytes_at_context = kv_cache_bytes(hp, ctx, kv_types->k, kv_types->v);
  // The GPU pass keeps the KV cache in VRAM in the same types (f16, q8_0, q4_0), not in the RSS figures.
  const bool kv_on_gpu =
      std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.path.rfind("gpu", 0) == 0; });
  // bandwidth ≥ the decode's read rate (raised to it above), so the fraction is ≤ 1 but for rounding: when it was
  // raised, avg_ts · bytes / (mean · bytes) can come out 1 + 2⁻⁵² (seen in CliUnix.BenchPeakRss…), clamped.
  const auto roofline = [](const Row& r, double avg_ts) {
    return r.bytes_per_token > 0 && r.bandwidth > 0
               ? std::min(1.0, avg_ts / (r.bandwidth / static_cast<double>(r.bytes_per_token)))
               : 0.0;
  };

  if (args.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows) {
      const auto ts = r.samples_ts();
      const auto [avg_ts, sd_ts] = mean_stddev(ts);
      const auto [avg_ns, sd_ns] = mean_stddev(r.samples_ns);
      nlohmann::json j = {{"model_filename", *model_path}, {"model_type", model_type},
                          {"model_size", file_bytes}, {"model_n_params", num_params},
                          {"backend", r.path}, {"n_threads", r.n_threads}, {"type_k", kv_cache_type_name(kv_types->k)},
                          {"type_v", kv_cache_type_name(kv_types->v)}, {"n_prompt", r.n_prompt}, {"n_gen", r.n_gen},
                          {"n_depth", r.n_depth}, {"avg_ns", avg_ns}, {"stddev_ns", sd_ns}, {"avg_ts", avg_ts},
                          {"stddev_ts", sd_ts}, {"samples_ns", r.samples_ns}, {"samples_ts", ts},
                          {"peak_rss_bytes", peak_rss}, {"rss_anon_bytes", anon_rss},
                          {"rss_beyond_weights_bytes", beyond_weights},
                          {"weights_load", in_memory ? "memory" : "mmap"},
                          {"mem_read_bw_gbs", r.bandwidth / 1e9},
                          {"kv_bytes_per_token", kv_bytes_per_token},
                          {"kv_bytes_at_context", kv_bytes_at_context}, {"n_ctx", ctx},
                          {"kv_device", r.path.rfind("gpu", 0) == 0 ? "gpu" : "cpu"}};
      if (r.n_gen > 0) {
        j["bytes_per_token"] = r.bytes_per_token;
        j["roofline_fraction"] = roofline(r, avg_ts);
      } else {
        j["bytes_per_token"] = nullptr;
        j["roofline_fraction"] = nullptr;
      }
      out.push_back(std::move(j));
    }
    fmt::print("{}\n", out.dump(2));
  } else if (args.output == "csv") {
    fmt::print("model_type,backend,n_threads,n_prompt,n_gen,n_depth,avg_ts,stddev_ts,bytes_per_token,mem_read_bw_gbs,"
               "roofline_fraction,peak_rss_bytes\n");
    for (const Row& r : rows) {
      const auto [avg_ts, sd_ts] = mean_stddev(r.samples_ts());
      fmt::print("\"{}\",\"{}\",{},{},{},{},{:.3f},{:.3f},{},{:.2f},{:.3f},{}\n", model_type, r.path, r.n_threads,
                 r.n_prompt, r.n_gen, r.n_depth, avg_ts, sd_ts, r.bytes_per_token, r.bandwidth / 1e9,
                 roofline(r, avg_ts), peak_rss);
    }
  } else {
    fmt::print("| model | size | params | backend | threads | test | t/s | read GB/s | GB/token | roofline |\n");
    fmt::print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Row& r : rows) {
      const auto [avg_ts, sd_ts] = mean_stddev(r.samples_ts());
      fmt::print("| {} | {} | {:.2f} B | {} | {} | {} | {:.2f} ± {:.2f} | {:.1f} | {} | {} |\n", model_type,
                 format_bytes(file_bytes), static_cast<double>(num_params) / 1e9, r.path, r.n_threads, test_name(r),
                 avg_ts, sd_ts, r.bandwidth / 1e9,
                 r.n_gen > 0 ? fmt::format("{:.3f}", static_cast<double>(r.bytes_per_token) / 1e9) : "-",
                 r.n_gen > 0 ? fmt::format("{:.0f} %", 100.0 * roofline(r, avg_ts)) : "-");
    }
    fmt::print("\nweights {} ({}); peak RSS {}; resident beyond the weights (KV cache and buffers included): {}\n",
               format_bytes(file_bytes),
               in_memory          ? std::string("loaded into huge-page memory")
               : anon_weights > 0 ? fmt::format("memory-mapped, {} of it resident (RAM tier)", format_bytes(anon_weights))
                                  : std::string("memory-mapped"),
               format_bytes(peak_rss), format_bytes(beyond_weights));
    fmt::print("{}{}\n", kv_size_text(hp, *kv_types, ctx),
               kv_on_gpu ? " (in VRAM on the GPU pass, not in the RSS above)" : "");
  }
  if (auto s = finish_trace(*trace); !s) return report_error("bench", s.error());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("bench", "Prefill (pp N) and decode (tg N) tok/s at context depths, like llama-bench, "
                                          "with memory bandwidth and roofline");
  auto args = std::make_shared<BenchArgs>();
  auto* model = cmd->add_option("-m,--model", args->model_path,
                                 "GGUF model file (default: the synthetic tiny model, made once)");
  cmd->add_option("MODEL", args->model_path, "The model file, as -m")->excludes(model);
  cmd->add_flag("--interleave", args->interleave,
                "Run the repetitions of the tests round by round (pp tg pp tg ...) instead of test by test, so a "
                "noisy minute does not decide a comparison");
  cmd->add_option("-p,--n-prompt", args->num_prompt, "Prompt lengths for pp tests (0 = none)")
      ->delimiter(',')
      ->check(int_range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", args->num_gen, "Generation lengths for tg tests (0 = none)")
      ->delimiter(',')
      ->check(int_range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("-d,--n-depth", args->depths, "Context depths (tokens already in the KV cache)")
      ->delimiter(',')
      ->check(int_range(0, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--depth-fill", args->depth_fill,
                  "How the context is filled to a depth: prefill (every token computed, like llama-bench) or repeat "
                  "(CPU path: 128 tokens prefilled, then their KV entries repeated without computing; decode tests "
                  "cost the same, the fill takes seconds instead of minutes at depth 32768; pp tests at depth then "
                  "attend to a context that is not a real one, their cost is the same too)")
      ->check(CLI::IsMember({"prefill", "repeat"}))
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", args->num_reps, "Repetitions per test (after one warm-up)")
      ->check(int_range(1, 1000))
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Thread counts")
      ->delimiter(',')
      ->check(int_range(1, 4096))
      ->capture_default_str();
  cmd->add_option("-o,--output", args->output, "Output format: md, csv or json")
      ->check(CLI::IsMember({"md", "csv", "json"}))
      ->capture_default_str();
  add_kv_type_options(cmd, args->kv);
  cmd->add_option("--load", args->load, kLoadHelp)->check(CLI::IsMember({"auto", "mmap", "memory"}))->capture_default_str();
  cmd->add_flag("--reference", args->use_reference, "Benchmark the scalar reference path");
  add_trace_option(cmd, args->trace_path);
  cmd->add_option("--config", args->config_path,
                  "TOML configuration file: its thread layout, NUMA, GPU and placement keys (flags override it)")
      ->option_text("FILE");
  add_device_options(cmd, args->device);
  cmd->callback([args, &exit_code] { exit_code = run_bench(*args); });
}

}  // namespace hetmoe::cli
