#include "runtime/cli/run_options.h"

#include <cstdint>
#include <random>

#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/trace_options.h"
#include "runtime/exec/kv_cache.h"

namespace hetmoe::cli {

void add_run_options(CLI::App* cmd, RunArgs& args) {
  args.num_threads = default_num_threads();
  auto* threads = cmd->add_option("-t,--threads", args.num_threads, "CPU threads")
                      ->check(int_range(1, 4096))
                      ->capture_default_str();
  auto* ctx = cmd->add_option("-c,--ctx,--ctx-size", args.context_length, "Context length in tokens")
                  ->check(int_range(1, 1 << 24))
                  ->capture_default_str();
  add_kv_type_options(cmd, args.kv);
  cmd->add_option("--load", args.load, kLoadHelp)->check(CLI::IsMember({"auto", "mmap", "memory"}))->capture_default_str();
  cmd->add_flag("--reference", args.use_reference, "Run the scalar reference forward pass (the correctness oracle)");
  auto* config = cmd->add_option("--config", args.config_path,
                                 "TOML configuration file (hetmoe config --print-default); flags override it")
                    ->option_text("FILE");
  // After the command line is parsed: file values for the flags that were not given (count() == 0).
  add_trace_option(cmd, args.trace_path);
  auto* trace = cmd->get_option("--trace");
  cmd->parse_complete_callback([&args, threads, ctx, config, trace] {
    args.threads_given = threads->count() > 0;
    if (config->count() == 0) return;
    if (auto s = check_input_file("--config", args.config_path); !s) {
      args.config_status = s.error();
      return;
    }
    auto loaded = load_config(args.config_path);
    if (!loaded) {
      args.config_status = loaded.error();
      return;
    }
    args.config = std::move(*loaded);
    const RuntimeConfig& c = *args.config;
    if (c.threads.count && threads->count() == 0) args.num_threads = *c.threads.count;
    if (c.model.context_length && ctx->count() == 0) args.context_length = *c.model.context_length;
    if (c.trace.output && trace->count() == 0) args.trace_path = *c.trace.output;
  });
  add_device_options(cmd, args.device);
  cmd->add_option("--stats-out", args.stats_out,
                  "Save the run's expert selection counts (hetmoe profile's format: for --stats, profile --merge)")
      ->option_text("FILE");
}

void add_kv_type_options(CLI::App* cmd, KvTypeArgs& args) {
  const auto choices = CLI::IsMember({"f16", "f32", "q8_0", "q4_0"});
  cmd->add_option("--kv-type", args.kv_type,
                  "KV cache type of K and V: f16 (default), f32, q8_0 or q4_0 (f32: CPU pass only)")
      ->check(choices)
      ->option_text("TYPE");
  cmd->add_option("--cache-type-k", args.cache_type_k,
                  "KV cache type of K (llama.cpp's -ctk, accepted too; over --kv-type): f16, f32, q8_0, q4_0")
      ->check(choices)
      ->option_text("TYPE");
  cmd->add_option("--cache-type-v", args.cache_type_v,
                  "KV cache type of V (llama.cpp's -ctv, accepted too; over --kv-type): f16, f32, q8_0, q4_0")
      ->check(choices)
      ->option_text("TYPE");
}

Expected<KvTypes> resolve_kv_types(const KvTypeArgs& args, const RuntimeConfig* config) {
  const auto pick = [&](const std::string& specific, const char* flag, const std::optional<KvCacheType>& config_specific,
                        KvCacheType& out) -> Status {
    const std::string& given = !specific.empty() ? specific : args.kv_type;
    if (!given.empty()) {
      auto t = parse_kv_cache_type(given);
      if (!t) return make_error(t.error().code, fmt::format("{}: {}", !specific.empty() ? flag : "--kv-type",
                                                           t.error().message));
      out = *t;
    } else if (config && config_specific) {
      out = *config_specific;
    } else if (config && config->model.kv_type) {
      out = *config->model.kv_type;
    }
    return {};
  };
  KvTypes types;
  HETMOE_RETURN_IF_ERROR(pick(args.cache_type_k, "--cache-type-k", config ? config->model.kv_type_k : std::nullopt,
                              types.k));
  HETMOE_RETURN_IF_ERROR(pick(args.cache_type_v, "--cache-type-v", config ? config->model.kv_type_v : std::nullopt,
                              types.v));
  return types;
}

std::string kv_size_text(const ModelHparams& hp, KvTypes types, uint32_t context_length) {
  const uint64_t per_position = kv_bytes_per_position(hp, types.k, types.v);
  return fmt::format("KV cache K {}, V {}: {} per token ({} B per layer), {} at context {}", kv_cache_type_name(types.k),
                     kv_cache_type_name(types.v), format_bytes(per_position * hp.num_layers), per_position,
                     format_bytes(kv_cache_bytes(hp, context_length, types.k, types.v)), context_length);
}

Expected<ForwardOptions> forward_options(const RunArgs& args) {
  if (!args.config_status) return args.config_status.error();
  HETMOE_ASSIGN_OR_RETURN(const KvTypes kv_types, resolve_kv_types(args.kv, args.config ? &*args.config : nullptr));
  ForwardOptions options;
  options.context_length = args.context_length;
  options.kv_type = kv_types.k;
  options.kv_type_v = kv_types.v;
  options.num_threads = args.num_threads;
  options.use_reference = args.use_reference;
  if (auto s = apply_device_options(args.device, options); !s) return s.error();
  if (args.config)
    if (auto s = apply_runtime_config(*args.config, args.threads_given || args.config->threads.count, options); !s)
      return s.error();
  return options;
}

void add_device_options(CLI::App* cmd, DeviceArgs& args) {
  cmd->add_option("--device", args.device, "cpu, gpu (an error without a usable GPU) or auto (the GPU when usable)")
      ->check(CLI::IsMember({"auto", "cpu", "gpu"}))
      ->capture_default_str();
  cmd->add_option("--vram-budget", args.vram_budget,
                  "Hard limit on GPU memory, e.g. 6GiB or 512MiB (default: free GPU memory minus 512 MiB)")
      ->check(byte_size_arg());
  cmd->add_option("--ubatch-size", args.ubatch_size,
                  "Prefill tokens per forward batch (llama.cpp's -ub; GPU steps take at most 512)")
      ->check(int_range(1, 4096))
      ->capture_default_str();
  auto* n_gpu_experts = cmd->add_option("--n-gpu-experts", args.num_gpu_experts,
                  "Experts per layer kept on the GPU: the K with the largest router bias; the rest run on the CPU")
      ->check(int_range(0, 1 << 20));
  auto* cpu_moe =
      cmd->add_flag("--cpu-moe", args.cpu_moe, "Run every expert on the CPU (attention and router stay on the GPU)");
  cmd->add_flag("--no-overlap", args.no_overlap,
                "Hybrid: run a layer's GPU experts after its CPU experts instead of at the same time (to measure the "
                "overlap's gain)");
  cmd->add_flag("--no-repack", args.no_repack,
                "CPU path: keep the weights (MXFP4 experts, Q8_0 matrices) in the file's layout instead of repacking "
                "them at load for the SIMD kernels (AVX-512 and AVX2 with AVX-VNNI: both; AVX2: the experts) "
                "(llama.cpp's --no-repack; to measure the repack's gain)");
  cmd->add_flag("--attention-bf16", args.attention_bf16,
                "CPU path: multiply attention in bf16 instead of f32 where the CPU has AVX512_BF16 (gpt-oss's "
                "training precision; less attention time at depth; logits differ from f32 by more than rounding)");
  auto* n_cpu_moe = cmd->add_option("--n-cpu-moe", args.num_cpu_moe_layers,
                  "The experts of the first N blocks on the CPU, the others' on the GPU (a static plan, as llama.cpp)")
      ->check(int_range(0, 1 << 16));
  auto* plan = cmd->add_option("--plan", args.plan_path,
                               "Execute this placement Plan (JSON from hetmoe plan -o FILE) instead of planning now")
                    ->option_text("FILE");
  // The static placements and a saved Plan exclude each other: the parser refuses the pair (a usage error, exit 2).
  cpu_moe->excludes(n_gpu_experts)->excludes(n_cpu_moe)->excludes(plan);
  n_gpu_experts->excludes(n_cpu_moe)->excludes(plan);
  n_cpu_moe->excludes(plan);
  cmd->add_option("--stats", args.stats_path,
                  "Expert statistics (hetmoe profile, --stats-out) for the placement optimizer (default: router-bias "
                  "prior)")
      ->option_text("FILE");
  cmd->add_option("--placement", args.placement,
                  "dynamic (default with a GPU: experts follow the conversation) or static")
      ->check(CLI::IsMember({"static", "dynamic"}));
  cmd->add_option("--ram-budget", args.ram_budget, "RAM the plan may use for weights and KV cache (default: no limit)")
      ->check(byte_size_arg());
}

Status apply_device_options(const DeviceArgs& args, ForwardOptions& options) {
  if (!args.plan_path.empty()) HETMOE_RETURN_IF_ERROR(check_input_file("--plan", args.plan_path));
  if (!args.stats_path.empty()) HETMOE_RETURN_IF_ERROR(check_input_file("--stats", args.stats_path));
  auto device = parse_device(args.device);
  if (!device) return device.error();
  options.device = *device;
  options.overlap = !args.no_overlap;
  options.repack_weights = !args.no_repack;
  options.attention_bf16 = args.attention_bf16;
  options.max_batch_tokens = static_cast<uint32_t>(args.ubatch_size);
  if (options.use_reference && options.device == ForwardOptions::Device::kGpu)
    return make_error(ErrorCode::kInvalidArgument, "--reference runs on the CPU; it cannot be used with --device gpu");
  if (!args.vram_budget.empty()) {
    auto budget = parse_byte_size(args.vram_budget);
    if (!budget) return budget.error();
    options.vram_budget_bytes = *budget;
    if (options.vram_budget_bytes == 0)
      return make_error(ErrorCode::kInvalidArgument, "--vram-budget 0: use --device cpu to run without the GPU");
  }
  if ((args.cpu_moe ? 1 : 0) + (args.num_gpu_experts >= 0 ? 1 : 0) + (args.num_cpu_moe_layers >= 0 ? 1 : 0) > 1)
    return make_error(ErrorCode::kInvalidArgument, "--cpu-moe, --n-cpu-moe and --n-gpu-experts exclude each other");
  return {};
}

std::string threads_text(const ForwardOptions& options) {
  if (options.num_threads > 0) return fmt::format("{} threads", options.num_threads);
  if (options.thread_layout.threads_per_node > 0)
    return fmt::format("{} threads per NUMA node", options.thread_layout.threads_per_node);
  if (!options.thread_layout.worker_pus.empty())
    return fmt::format("{} threads (the listed CPUs)", options.thread_layout.worker_pus.size());
  return "one thread per core";
}

void print_notes(std::string_view command, const std::vector<std::string>& notes) {
  for (const std::string& note : notes) fmt::print(stderr, "hetmoe {}: {}\n", command, note);
}

Expected<gguf::File::LoadMode> load_mode(const RunArgs& args) { return parse_load_mode(args.load); }

void add_sampling_options(CLI::App* cmd, SamplingArgs& args) {
  SamplerParams& p = args.params;
  cmd->add_option("--temp", p.temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", p.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", p.top_p, "Nucleus: keep the smallest set with this probability (1 = off)")
      ->capture_default_str();
  cmd->add_option("--min-p", p.min_p, "Drop tokens below min-p × the top probability (0 = off)")
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", p.repetition_penalty, "Penalty for recently seen tokens (1 = off)")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", p.repeat_last_n, "Tokens of history the penalty looks at")
      ->capture_default_str();
  args.seed_option = cmd->add_option("-s,--seed", args.seed, "Sampling seed; -1 = random (the default, printed on stderr)")
                         ->check(int_range(-1, INT64_MAX));
}

Expected<SamplerParams> sampler_params(const SamplingArgs& args) {
  SamplerParams p = args.params;
  if (!args.seed_option || args.seed_option->count() == 0 || args.seed < 0)
    p.seed = std::random_device{}();
  else
    p.seed = static_cast<uint64_t>(args.seed);
  if (auto s = validate(p); !s) return s.error();
  return p;
}

}  // namespace hetmoe::cli
