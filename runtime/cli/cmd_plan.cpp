// hetmoe plan -m MODEL --vram-budget 8GiB [--ram-budget 14GiB] [--ctx 32768] [--stats stats.json] [--json]:
// the placement the optimizer chooses (placement/optimizer.h), per block, with bytes and predicted times per device,
// and the best per-layer split (what --n-cpu-moe can do) at the same budget. Needs only the file header.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <optional>

#include "gpu_kernels/cuda_device.h"
#include "placement/cost_model.h"
#include "placement/expert_stats.h"
#include "placement/kernel_rates.h"
#include "placement/optimizer.h"
#include "placement/profile_rates.h"
#include "placement/ram_tier.h"
#include "profiler/bandwidth.h"
#include "profiler/memory.h"
#include "profiler/memory_limit.h"
#include "runtime/base/byte_size.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/gguf.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe::cli {
namespace {

struct PlanArgs {
  std::string model_path;
  std::string vram_budget = "0";
  std::string ram_budget = "0";
  uint32_t context_length = 8192;
  int64_t depth = -1;  // -1: context_length − 1
  std::string kv_type = "f16";
  std::string stats_path;
  std::string output_path;
  bool json = false;
  int num_threads = default_num_threads();
  double cpu_bw_gbs = 0, gpu_bw_gbs = 0, pcie_bw_gbs = 0;
  bool measure_cpu_bw = false;
  uint32_t prefill_batch = 512;
  std::string placement = "dynamic";
  int check_decode_tokens = 0;
  int check_rounds = 3;
  bool attention_bf16 = false;
};

/// A budget flag's value (runtime/base/byte_size.h), the error prefixed with the flag.
Expected<uint64_t> parse_byte_size(const std::string& flag, const std::string& text) {
  auto bytes = hetmoe::parse_byte_size(text);
  if (!bytes) return make_error(bytes.error().code, flag + ": " + bytes.error().message);
  return *bytes;
}

/// "0-5,7,9-11" for a sorted list of ids.
std::string id_ranges(const std::vector<uint32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ',';
    s += j > i ? fmt::format("{}-{}", ids[i], ids[j]) : fmt::format("{}", ids[i]);
    i = j + 1;
  }
  return s.empty() ? "-" : s;
}

std::string gib(uint64_t b) { return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1ull << 30)); }

void print_plan(const placement::Plan& plan, const placement::Plan& per_layer, const placement::CostInputs& in,
                const std::string& stats_source, const std::string& rates_source) {
  using placement::Device;
  const placement::DeviceRates& r = in.rates;
  fmt::print("model {} ({} blocks × {} experts, top-{}) | context {} ({} KV cache) | decode predicted at depth {}\n",
             plan.model_name, plan.num_layers, plan.num_experts, plan.num_experts_used, plan.context_length,
             plan.kv_type, plan.prediction.depth);
  fmt::print("budgets: VRAM {}, RAM {} | rates: CPU {:.1f} GB/s (GEMV efficiency: experts {:.0f} %, dense {:.0f} %; "
             "attention {:.0f} GFLOP/s){}{} | statistics: {}\n",
             gib(plan.vram_budget_bytes), plan.ram_budget_bytes ? gib(plan.ram_budget_bytes) : "unlimited",
             r.cpu_read_bytes_per_s / 1e9, r.cpu_expert_efficiency * 100, r.cpu_dense_efficiency * 100,
             r.cpu_attention_flops / 1e9,
             r.has_gpu ? fmt::format(", GPU {:.1f} GB/s", r.gpu_read_bytes_per_s / 1e9) : ", no GPU",
             r.has_gpu ? fmt::format(", PCIe {:.1f} GB/s", r.pcie_bytes_per_s / 1e9) : "", stats_source);
  fmt::print("rates from: {}\n", rates_source);
  fmt::print("\n{:>5} {:>4} {:>4} {:>4} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}  {}\n", "block", "attn", "#gpu", "#cpu",
             "GPU MB", "CPU MB", "GPU ms", "CPU ms", "sync ms", "step ms", "experts on the GPU | on the CPU");
  for (uint32_t l = 0; l < plan.num_layers; ++l) {
    const placement::LayerPlan& lp = plan.layers[l];
    std::vector<uint32_t> gpu, cpu;
    for (uint32_t e = 0; e < lp.experts.size(); ++e) (lp.experts[e] == Device::kGpu ? gpu : cpu).push_back(e);
    fmt::print("{:>5} {:>4} {:>4} {:>4} {:>10.1f} {:>10.1f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f}  {} | {}\n", l,
               placement::device_name(lp.attention), gpu.size(), cpu.size(), lp.gpu_bytes / 1e6, lp.cpu_bytes / 1e6,
               lp.gpu_time_s * 1e3, lp.cpu_time_s * 1e3, lp.sync_time_s * 1e3, lp.step_time_s * 1e3, id_ranges(gpu),
               id_ranges(cpu));
  }
  const placement::PlanTotals& t = plan.totals;
  const placement::PlanPrediction& p = plan.prediction;
  fmt::print("{:>5} {:>4} {:>49.3f}  unembedding ({}), embedding table in RAM\n", "out",
             placement::device_name(plan.output), p.output_time_s * 1e3, gib(in.bytes.output_bytes));
  fmt::print("\ntotals: GPU {} (KV cache {}, workspace {}) | RAM {} (KV cache {}) | experts: {} on the GPU, {} on the "
             "CPU\n",
             gib(t.gpu_bytes), gib(t.gpu_kv_bytes), gib(t.gpu_workspace_bytes), gib(t.cpu_bytes), gib(t.cpu_kv_bytes),
             t.num_gpu_experts, t.num_cpu_experts);
  fmt::print("prediction: decode {:.2f} ms/token = {:.2f} tok/s (GPU busy {:.2f} ms, CPU busy {:.2f} ms per token) | "
             "prefill {:.1f} tok/s in batches of {}",
             p.decode_time_s * 1e3, p.decode_tok_s, p.gpu_time_s * 1e3, p.cpu_time_s * 1e3, p.prefill_tok_s,
             p.prefill_batch);
  if (p.prefill_crossover_batch > 0)
    fmt::print(" (streaming CPU experts to the GPU beats CPU compute from batch {})", p.prefill_crossover_batch);
  fmt::print("\n");
  const placement::PlanPrediction& q = per_layer.prediction;
  fmt::print("best per-layer split (--n-cpu-moe {}: experts of {} blocks on the CPU): decode {:.2f} tok/s, GPU {} → "
             "per-expert placement is {:.2f}× its decode speed\n",
             placement::num_cpu_moe_layers(per_layer), placement::num_cpu_moe_layers(per_layer), q.decode_tok_s,
             gib(per_layer.totals.gpu_bytes), q.decode_tok_s > 0 ? p.decode_tok_s / q.decode_tok_s : 0.0);
  if (plan.dynamic.enabled)
    fmt::print("dynamic placement: re-plan every {} tokens, at most {} expert migrations each, hysteresis {:.0f} % "
               "(--placement static: off)\n",
               plan.dynamic.replan_interval_tokens, plan.dynamic.max_migrations_per_step, plan.dynamic.hysteresis * 100);
  for (const std::string& n : plan.notes)
    if (n.rfind("best per-layer split", 0) != 0) fmt::print("note: {}\n", n);
}

/// Read bandwidth, the GEMV kernels' rates and the decode attention FLOP rate, so the CPU efficiencies and
/// cpu_attention_flops are this machine's (placement/kernel_rates.h).
Status measure_cpu_rates(int num_threads, bool attention_bf16, placement::DeviceRates* rates) {
  constexpr uint64_t kProbeBytes = 512ull << 20;
  rates->cpu_read_bytes_per_s = profiler::measure_read_bandwidth(kProbeBytes, num_threads);
  double expert_rate = 0, dense_rate = 0;
  HETMOE_ASSIGN_OR_RETURN(expert_rate,
                          placement::measure_cpu_gemv_bytes_per_s(TensorType::kMXFP4, kProbeBytes, num_threads));
  HETMOE_ASSIGN_OR_RETURN(dense_rate,
                          placement::measure_cpu_gemv_bytes_per_s(TensorType::kQ8_0, kProbeBytes, num_threads));
  // At most 1: on a host whose bandwidth swings, a GEMV timed in a faster minute than the read probe read up to 1.49×
  // the probe (`--check-decode`, Zen 4 VM), which would predict decode above the memory roofline.
  rates->cpu_expert_efficiency = std::min(1.0, expert_rate / rates->cpu_read_bytes_per_s);
  rates->cpu_dense_efficiency = std::min(1.0, dense_rate / rates->cpu_read_bytes_per_s);
  HETMOE_ASSIGN_OR_RETURN(rates->cpu_attention_flops,
                          placement::measure_cpu_attention_flops(num_threads, 3, attention_bf16));
  return {};
}

/// --check-decode N: runs the plan on this machine and compares predicted with measured decode speed, in rounds
/// that each measure the rates right before decoding N tokens at the prediction's depth (so both see the same
/// machine load). Only all-CPU plans run today.
int check_decode(const PlanArgs& args, placement::Plan plan, placement::CostInputs inputs) {
  if (plan.uses_gpu())
    return report_error("plan", make_error(ErrorCode::kUnsupported,
                                           "--check-decode runs the plan, and only the CPU path exists: use "
                                           "--vram-budget 0"));
  auto model = Model::load(args.model_path, gguf::File::LoadMode::kAuto);
  if (!model) return report_error("plan", model.error());
  const uint32_t n = static_cast<uint32_t>(args.check_decode_tokens);
  ForwardOptions options;
  options.context_length = args.context_length;
  options.kv_type = inputs.kv_type;
  options.num_threads = args.num_threads;
  // The layout `generate` runs and the rate probes time (the R16 kernels where the variant has them): without it the
  // check measured the file layout, 12–18 % slower than predicted (session 12, Zen 4).
  options.repack_weights = true;
  options.rollback_slots = n;
  options.attention_bf16 = args.attention_bf16;
  options.plan = &plan;
  auto forward = create_forward(*model, options);
  if (!forward) return report_error("plan", forward.error());
  if (inputs.depth + n > (*forward)->context_length())
    return report_error("plan", make_error(ErrorCode::kInvalidArgument,
                                           fmt::format("--depth {} + --check-decode {} exceeds the context {}",
                                                       inputs.depth, n, (*forward)->context_length())));
  std::vector<float> logits(model->hparams.vocab_size);  // (vocab_size)
  std::vector<int32_t> prompt(inputs.depth);
  for (uint32_t i = 0; i < inputs.depth; ++i) prompt[i] = static_cast<int32_t>((i * 7919u + 13u) % 1000u);
  if (!prompt.empty())
    if (auto s = (*forward)->forward_batch(prompt, logits); !s) return report_error("plan", s.error());
  std::vector<double> ratios;
  for (int round = 0; round < args.check_rounds; ++round) {
    if (auto s = measure_cpu_rates(args.num_threads, args.attention_bf16, &inputs.rates); !s)
      return report_error("plan", s.error());
    auto cost_model = placement::CostModel::create(inputs);
    if (!cost_model) return report_error("plan", cost_model.error());
    placement::Plan predicted = plan;
    if (auto s = cost_model->evaluate(predicted); !s) return report_error("plan", s.error());
    if (auto s = (*forward)->truncate(inputs.depth); !s) return report_error("plan", s.error());
    int32_t token = 1;
    const double t0 = profiler::now_seconds();
    for (uint32_t i = 0; i < n; ++i) {
      if (auto s = (*forward)->forward(token, logits); !s) return report_error("plan", s.error());
      token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    const double measured_tok_s = n / (profiler::now_seconds() - t0);
    const double predicted_tok_s = predicted.prediction.decode_tok_s;
    ratios.push_back(predicted_tok_s / measured_tok_s);
    fmt::print("check round {}: CPU read {:.1f} GB/s, GEMV efficiency experts {:.0f} % dense {:.0f} %, attention "
               "{:.0f} GFLOP/s → predicted {:.2f} tok/s; measured {:.2f} tok/s ({} tokens at depth {}); "
               "predicted/measured {:.3f}\n",
               round + 1, inputs.rates.cpu_read_bytes_per_s / 1e9, inputs.rates.cpu_expert_efficiency * 100,
               inputs.rates.cpu_dense_efficiency * 100, inputs.rates.cpu_attention_flops / 1e9, predicted_tok_s,
               measured_tok_s, n, inputs.depth, ratios.back());
  }
  std::sort(ratios.begin(), ratios.end());
  fmt::print("check: median predicted/measured decode speed {:.3f} over {} rounds\n", ratios[ratios.size() / 2],
             ratios.size());
  return 0;
}

int run_plan(const PlanArgs& args) {
  uint64_t vram = 0, ram = 0;
  if (auto v = parse_byte_size("--vram-budget", args.vram_budget); v) vram = *v;
  else return report_error("plan", v.error());
  if (auto v = parse_byte_size("--ram-budget", args.ram_budget); v) ram = *v;
  else return report_error("plan", v.error());
  auto kv_type = parse_kv_cache_type(args.kv_type);
  if (!kv_type) return report_error("plan", kv_type.error());
  if (auto s = check_input_file("-m", args.model_path); !s) return report_error("plan", s.error());
  if (!args.stats_path.empty())
    if (auto s = check_input_file("--stats", args.stats_path); !s) return report_error("plan", s.error());
  if (!args.output_path.empty())
    if (auto s = check_output_path("-o", args.output_path); !s) return report_error("plan", s.error());
  auto file = gguf::File::open(args.model_path, gguf::File::LoadMode::kMmap);
  if (!file) return report_error("plan", file.error());

  std::optional<placement::ExpertStats> stats;
  std::string stats_source = "router-bias prior (no --stats)";
  if (!args.stats_path.empty()) {
    auto loaded = placement::expert_stats_load(args.stats_path);
    if (!loaded) return report_error("plan", loaded.error());
    stats = std::move(*loaded);
    stats_source = fmt::format("{} ({} tokens)", args.stats_path, stats->num_tokens);
  }
  // Rates: measured now (--measure-cpu-bw), else the cached `hetmoe probe` profile as `generate` uses it, else the
  // laptop defaults; then the --cpu-bw / --gpu-bw / --pcie-bw flags override single figures.
  placement::DeviceRates rates = placement::DeviceRates::laptop();
  std::string rates_source = "defaults of a DDR5 laptop";
  if (!args.measure_cpu_bw && args.check_decode_tokens == 0) {
    std::string reason;
    if (auto profile = placement::cached_profile_for_this_machine({}, &reason)) {
      rates = placement::rates_from_profile(*profile, args.num_threads, rates);
      rates_source = fmt::format("hetmoe probe profile of {} for {} threads", profile->measured_at, args.num_threads);
    } else {
      rates_source += fmt::format(" ({})", reason);
    }
  } else {
    rates_source = fmt::format("CPU measured now with {} threads", args.num_threads);
  }
  std::vector<std::string> overridden;
  if (args.cpu_bw_gbs > 0) overridden.push_back("--cpu-bw");
  if (args.gpu_bw_gbs > 0) overridden.push_back("--gpu-bw");
  if (args.pcie_bw_gbs > 0) overridden.push_back("--pcie-bw");
  if (!overridden.empty()) rates_source += fmt::format("; {} from the command line", fmt::join(overridden, ", "));
  rates.has_gpu = vram > 0;
  if (vram > 0) {
    auto devices = gpu::list_devices();
    if (!devices || devices->empty())
      fmt::print(stderr, "hetmoe plan: no CUDA GPU is visible here; planning for one with --gpu-bw {:.0f} GB/s\n",
                 (args.gpu_bw_gbs > 0 ? args.gpu_bw_gbs * 1e9 : rates.gpu_read_bytes_per_s) / 1e9);
  }
  if (args.measure_cpu_bw || args.check_decode_tokens > 0)
    if (auto s = measure_cpu_rates(args.num_threads, args.attention_bf16, &rates); !s)
      return report_error("plan", s.error());
  if (args.cpu_bw_gbs > 0) rates.cpu_read_bytes_per_s = args.cpu_bw_gbs * 1e9;
  if (args.gpu_bw_gbs > 0) rates.gpu_read_bytes_per_s = args.gpu_bw_gbs * 1e9;
  if (args.pcie_bw_gbs > 0) rates.pcie_bytes_per_s = args.pcie_bw_gbs * 1e9;
  const uint32_t depth = args.depth < 0 ? args.context_length - 1 : static_cast<uint32_t>(args.depth);
  auto inputs = placement::cost_inputs_from_header(*file, stats ? &*stats : nullptr, rates, args.context_length,
                                                   depth, *kv_type);
  if (!inputs) return report_error("plan", inputs.error());
  inputs->prefill_batch = args.prefill_batch;
  auto cost_model = placement::CostModel::create(*inputs);
  if (!cost_model) return report_error("plan", cost_model.error());

  placement::PlanRequest request;
  request.vram_budget_bytes = vram;
  // Without a GPU every expert is in RAM or, under the RAM tier, paged from disk: the budget is the tier's (below),
  // not a constraint the optimizer could meet by moving experts.
  request.ram_budget_bytes = vram > 0 ? ram : 0;
  request.num_cpu_threads = args.num_threads;
  if (args.placement != "dynamic" && args.placement != "static")
    return report_error("plan", make_error(ErrorCode::kInvalidArgument,
                                           fmt::format("--placement {}: expected dynamic or static", args.placement)));
  request.dynamic_placement = args.placement == "dynamic";
  request.dense_on_gpu = true;  // what the GPU runtime executes (generate --plan FILE runs this plan as is)
  if (auto name = file->get_string("general.name"); name) request.model_name = std::string(*name);
  auto plan = placement::optimize_plan(*cost_model, request);
  if (!plan) return report_error("plan", plan.error());
  plan->ram_budget_bytes = ram;
  auto per_layer = placement::best_per_layer_split(*cost_model, request);
  if (!per_layer) return report_error("plan", per_layer.error());
  // Memory as a default run on this machine would have it (--ram-budget stands for what the run may use): weights
  // copied into memory when they fit with the reserve, else mapped with the RAM tier.
  {
    const profiler::MemoryRoom room = profiler::memory_room();
    const uint64_t usable = ram > 0 ? ram : room.bytes();
    const bool copied = gguf::File::choose_load_mode(file->file_size(), usable, gguf::File::kDefaultReserveBytes) ==
                        gguf::File::LoadMode::kMemory;
    if (!copied) {
      placement::RamTierRequest tier;
      tier.room_bytes = usable;
      tier.kv_bytes = plan->totals.cpu_kv_bytes;
      std::string reason;
      if (auto profile = placement::cached_profile_for_this_machine({}, &reason); profile && profile->disk)
        tier.disk_read_bytes_per_s = profile->disk->read_bytes_per_s;
      if (auto s = placement::plan_ram_tier(*plan, cost_model->inputs().bytes, cost_model->inputs().probabilities,
                                            tier);
          !s)
        return report_error("plan", s.error());
    }
    for (std::string& n : memory_lines(*plan, *cost_model, room, usable, args.context_length, *kv_type, copied))
      plan->notes.push_back(std::move(n));
  }

  if (per_layer->prediction.decode_tok_s > 0)
    plan->notes.push_back(fmt::format("best per-layer split at the same budgets (--n-cpu-moe {}): {:.2f} tok/s "
                                      "predicted; this plan: {:.2f} tok/s",
                                      placement::num_cpu_moe_layers(*per_layer), per_layer->prediction.decode_tok_s,
                                      plan->prediction.decode_tok_s));
  if (!args.output_path.empty())
    if (auto s = write_output_file("-o", args.output_path, placement::plan_to_json(*plan).dump(1) + "\n"); !s)
      return report_error("plan", s.error());
  if (args.check_decode_tokens > 0) {
    print_plan(*plan, *per_layer, cost_model->inputs(), stats_source, rates_source);
    return check_decode(args, *plan, cost_model->inputs());
  }
  if (args.json) {
    fmt::print(stderr, "hetmoe plan: rates from: {}\n", rates_source);
    fmt::print("{}\n", placement::plan_to_json(*plan).dump(1));
  } else {
    print_plan(*plan, *per_layer, cost_model->inputs(), stats_source, rates_source);
  }
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("plan", "Choose where every weight goes (per expert) for a VRAM/RAM budget and print "
                                         "the plan with predicted memory and tok/s per device (reads only the header)");
  auto args = std::make_shared<PlanArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF model file")->required();
  cmd->add_option("--vram-budget", args->vram_budget, "GPU memory hetmoe may use, e.g. 8GiB (0: no GPU)")
      ->check(byte_size_arg())
      ->capture_default_str();
  cmd->add_option("--ram-budget", args->ram_budget, "RAM hetmoe may use for weights and KV cache (0: no limit)")
      ->check(byte_size_arg())
      ->capture_default_str();
  cmd->add_option("-c,--ctx,--ctx-size", args->context_length, "Context length the KV cache is sized for")
      ->check(int_range(1, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--depth", args->depth, "Context depth the decode prediction is for (default: ctx − 1)")
      ->check(int_range(0, 1 << 24));
  cmd->add_option("--kv-type", args->kv_type, "KV cache type of K and V: f16, f32, q8_0 or q4_0")
      ->check(CLI::IsMember({"f16", "f32", "q8_0", "q4_0"}))
      ->capture_default_str();
  cmd->add_option("--stats", args->stats_path, "Expert statistics from `hetmoe profile` (default: router-bias prior)");
  cmd->add_flag("--json", args->json, "Print the Plan as JSON");
  cmd->add_option("-o,--output", args->output_path, "Also write the Plan as JSON to this file");
  cmd->add_option("-t,--threads", args->num_threads, "CPU threads the plan is for")
      ->check(int_range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--cpu-bw", args->cpu_bw_gbs,
                  "CPU read bandwidth in GB/s (default: the cached hetmoe probe profile, else 60, a DDR5 laptop)")
      ->check(positive_number());
  cmd->add_flag("--measure-cpu-bw", args->measure_cpu_bw,
                "Measure the CPU read bandwidth and the GEMV kernels' rates with -t threads first (about a second)");
  cmd->add_option("--gpu-bw", args->gpu_bw_gbs,
                  "GPU memory bandwidth in GB/s (default: the cached hetmoe probe profile, else 256, an RTX 4060)")
      ->check(positive_number());
  cmd->add_option("--pcie-bw", args->pcie_bw_gbs,
                  "Host-to-GPU copy bandwidth in GB/s (default: the cached hetmoe probe profile, else 12, PCIe 4.0 x8)")
      ->check(positive_number());
  cmd->add_option("--prefill-batch", args->prefill_batch, "Tokens per prefill batch for the prefill prediction")
      ->check(int_range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--placement", args->placement,
                  "dynamic: with a GPU, the runtime migrates experts to follow the conversation; static: never")
      ->capture_default_str();
  cmd->add_option("--check-decode", args->check_decode_tokens,
                  "Then run the plan: decode this many tokens at --depth per round and compare with the prediction "
                  "(rates measured before each round; CPU plans only)")
      ->check(int_range(0, 1 << 16));
  cmd->add_option("--check-rounds", args->check_rounds, "Rounds of --check-decode")
      ->check(int_range(1, 100))
      ->capture_default_str();
  cmd->add_flag("--attention-bf16", args->attention_bf16,
                "Time CPU attention with bf16 products for the prediction (--measure-cpu-bw, --check-decode), and "
                "run --check-decode with them: the plan for `generate --attention-bf16`");
  cmd->callback([args, &exit_code] { exit_code = run_plan(*args); });
}

}  // namespace hetmoe::cli
