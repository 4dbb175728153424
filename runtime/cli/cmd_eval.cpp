// hetmoe eval -m MODEL --ids FILE --logits-out OUT.f32: teacher-forced logits (CPU path, or --reference).
#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "profiler/memory.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_options.h"
#include "runtime/cli/run_options.h"
#include "runtime/app/runtime_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"
#include "runtime/text/token_ids.h"

namespace hetmoe::cli {
namespace {

struct EvalArgs {
  std::string model_path;
  std::string ids_path;
  std::string logits_path;
  int num_threads = default_num_threads();
  uint32_t context_length = 0;  // 0: the number of ids, at least 8192 (capped at the model's context)
  KvTypeArgs kv;  // --kv-type, -ctk, -ctv
  std::string load = "auto";
  bool use_reference = false;
  std::string config_path;  // --config FILE: thread layout, NUMA, GPU and placement keys
  bool threads_given = false;
  DeviceArgs device;
};

int run_eval(const EvalArgs& args) {
  const double t_start = profiler::now_seconds();
  auto load_mode = parse_load_mode(args.load);
  if (!load_mode) return report_error("eval", load_mode.error());
  if (auto s = check_input_file("-m", args.model_path); !s) return report_error("eval", s.error());
  if (auto s = check_input_file("--ids", args.ids_path); !s) return report_error("eval", s.error());
  if (auto s = check_output_path("--logits-out", args.logits_path); !s) return report_error("eval", s.error());
  std::optional<RuntimeConfig> config;
  if (!args.config_path.empty()) {
    if (auto s = check_input_file("--config", args.config_path); !s) return report_error("eval", s.error());
    auto loaded = load_config(args.config_path);
    if (!loaded) return report_error("eval", loaded.error());
    config = std::move(*loaded);
  }
  auto model = Model::load(args.model_path, *load_mode);
  if (!model) return report_error("eval", model.error());
  const ModelHparams& hp = model->hparams;
  auto ids = read_token_ids(args.ids_path, hp.vocab_size);
  if (!ids) return report_error("eval", ids.error());
  const auto num_tokens = static_cast<uint32_t>(ids->size());
  uint32_t ctx = args.context_length;
  if (ctx == 0) ctx = std::min(std::max<uint32_t>(num_tokens, 8192), hp.context_length);
  if (num_tokens > ctx)
    return report_error("eval", make_error(ErrorCode::kInvalidArgument,
                                           fmt::format("{} has {} tokens but the context is {} (--ctx)",
                                                       args.ids_path, num_tokens, ctx)));
  auto kv_types = resolve_kv_types(args.kv, config ? &*config : nullptr);
  if (!kv_types) return report_error("eval", kv_types.error());
  ForwardOptions options;
  options.context_length = ctx;
  options.kv_type = kv_types->k;
  options.kv_type_v = kv_types->v;
  options.num_threads = args.num_threads;
  options.use_reference = args.use_reference;
  if (auto s = apply_device_options(args.device, options); !s) return report_error("eval", s.error());
  if (config) {
    if (config->threads.count && !args.threads_given) options.num_threads = *config->threads.count;
    if (auto s = apply_runtime_config(*config, args.threads_given || config->threads.count, options); !s)
      return report_error("eval", s.error());
  }
  std::vector<std::string> forward_notes;
  auto plan = make_run_plan(*model, args.device, config ? &*config : nullptr, options, &forward_notes);
  if (!plan) {
    print_notes("eval", forward_notes);
    return report_error("eval", plan.error());
  }
  options.plan = &*plan;
  auto forward = create_forward(*model, options, &forward_notes);
  print_notes("eval", forward_notes);
  if (!forward) return report_error("eval", forward.error());
  const double t_loaded = profiler::now_seconds();

  // Logits stream row by row (runtime/cli/cli_files.h: a regular file is replaced only when complete, so a failed
  // run leaves no partial file; /dev/null, a FIFO or a symbolic link is written through).
  auto out = OutputFile::open("--logits-out", args.logits_path);
  if (!out) return report_error("eval", out.error());
  std::vector<float> logits(hp.vocab_size);  // (vocab_size) one row
  for (uint32_t i = 0; i < num_tokens; ++i) {
    if (auto s = (*forward)->forward((*ids)[i], logits); !s) return report_error("eval", s.error());
    if (auto s = (*out)->write(logits.data(), logits.size() * sizeof(float)); !s) return report_error("eval", s.error());
  }
  if (auto s = (*out)->commit(); !s) return report_error("eval", s.error());
  const double t_end = profiler::now_seconds();
  fmt::print(stderr,
             "eval: {} tokens x {} logits -> {} | load {:.2f} s | eval {:.2f} s ({:.2f} tok/s, {} threads, {} path) | "
             "peak RSS {}\n",
             num_tokens, hp.vocab_size, args.logits_path, t_loaded - t_start, t_end - t_loaded,
             num_tokens / std::max(t_end - t_loaded, 1e-9), args.num_threads, forward_path_name(options, forward->get()),
             format_bytes(profiler::peak_rss_bytes()));
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("eval", "Teacher-forced logits for a token-id file, written as float32 row-major "
                                         "[n_tokens][n_vocab], little-endian");
  auto args = std::make_shared<EvalArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF model file")->required();
  cmd->add_option("--ids", args->ids_path, "Whitespace-separated token ids")->required();
  cmd->add_option("--logits-out", args->logits_path, "Output file (float32 [n_tokens][n_vocab])")->required();
  auto* threads =
      cmd->add_option("-t,--threads", args->num_threads, "CPU threads")->check(int_range(1, 4096))->capture_default_str();
  cmd->add_option("-c,--ctx,--ctx-size", args->context_length, "Context length (default: max(8192, n_tokens))")
      ->check(int_range(1, 1 << 24));
  add_kv_type_options(cmd, args->kv);
  cmd->add_option("--load", args->load, kLoadHelp)->check(CLI::IsMember({"auto", "mmap", "memory"}))->capture_default_str();
  cmd->add_flag("--reference", args->use_reference, "Run the scalar reference forward pass (the correctness oracle)");
  cmd->add_option("--config", args->config_path,
                  "TOML configuration file: its thread, NUMA, GPU and placement keys (flags override it)")
      ->option_text("FILE");
  add_device_options(cmd, args->device);
  cmd->callback([args, threads, &exit_code] {
    args->threads_given = threads->count() > 0;
    exit_code = run_eval(*args);
  });
}

}  // namespace hetmoe::cli
