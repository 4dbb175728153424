#include "runtime/cli/run_options.h"

#include <random>

#include "runtime/cli/cli_util.h"
#include "runtime/cli/trace_options.h"
#include "runtime/kv_cache.h"

namespace hetmoe::cli {

void add_run_options(CLI::App* cmd, RunArgs& args) {
  args.num_threads = default_num_threads();
  auto* threads = cmd->add_option("-t,--threads", args.num_threads, "CPU threads")
                      ->check(CLI::Range(1, 4096))
                      ->capture_default_str();
  auto* ctx = cmd->add_option("-c,--ctx", args.context_length, "Context length in tokens")
                  ->check(CLI::Range(1u, 1u << 24))
                  ->capture_default_str();
  auto* kv_type = cmd->add_option("--kv-type", args.kv_type, "KV cache type: f16 or f32")->capture_default_str();
  cmd->add_option("--load", args.load, kLoadHelp)->capture_default_str();
  cmd->add_flag("--reference", args.use_reference, "Run the scalar reference forward pass (the correctness oracle)");
  auto* config = cmd->add_option("--config", args.config_path,
                                 "TOML configuration file (hetmoe config --print-default); flags override it")
                    ->option_text("FILE");
  // After the command line is parsed: file values for the flags that were not given (count() == 0).
  add_trace_option(cmd, args.trace_path);
  auto* trace = cmd->get_option("--trace");
  cmd->parse_complete_callback([&args, threads, ctx, kv_type, config, trace] {
    if (config->count() == 0) return;
    auto loaded = load_config(args.config_path);
    if (!loaded) {
      args.config_status = loaded.error();
      return;
    }
    args.config = std::move(*loaded);
    const RuntimeConfig& c = *args.config;
    if (c.threads.count && threads->count() == 0) args.num_threads = *c.threads.count;
    if (c.model.context_length && ctx->count() == 0) args.context_length = *c.model.context_length;
    if (c.model.kv_type && kv_type->count() == 0) args.kv_type = *c.model.kv_type == KvCacheType::kF16 ? "f16" : "f32";
    if (c.trace.output && trace->count() == 0) args.trace_path = *c.trace.output;
  });
}

Expected<ForwardOptions> forward_options(const RunArgs& args) {
  if (!args.config_status) return args.config_status.error();
  auto kv_type = parse_kv_cache_type(args.kv_type);
  if (!kv_type) return kv_type.error();
  ForwardOptions options;
  options.context_length = args.context_length;
  options.kv_type = *kv_type;
  options.num_threads = args.num_threads;
  options.use_reference = args.use_reference;
  return options;
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
  args.seed_option = cmd->add_option("-s,--seed", p.seed, "Sampling seed (default: random, printed on stderr)");
}

Expected<SamplerParams> sampler_params(const SamplingArgs& args) {
  SamplerParams p = args.params;
  if (!args.seed_option || args.seed_option->count() == 0) p.seed = std::random_device{}();
  if (auto s = validate(p); !s) return s.error();
  return p;
}

}  // namespace hetmoe::cli
