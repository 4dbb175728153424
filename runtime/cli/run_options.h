#pragma once
// Option groups shared by the commands that run a model (generate, chat): how to load and run it, and how to
// sample. One definition each, so the flags, defaults and checks are the same everywhere.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/app/config.h"
#include "runtime/base/expected.h"
#include "runtime/app/runtime_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/gguf.h"
#include "runtime/app/sampler.h"

namespace hetmoe::cli {

/// --device, --vram-budget, --n-gpu-experts, --cpu-moe, --n-cpu-moe (docs/gpu.md) and the placement flags --plan,
/// --stats, --placement, --ram-budget (docs/placement.md); used by every command that runs a model. The placement
/// Plan is made from them by make_run_plan (runtime/cli/plan_options.h).
struct DeviceArgs {
  std::string device = "auto";
  std::string vram_budget;   // empty: the config file's gpu.vram_budget, else the GPU's free memory minus a reserve
  int num_gpu_experts = -1;  // -1: not given
  bool cpu_moe = false;
  bool no_overlap = false;   // --no-overlap: the hybrid's GPU experts after its CPU experts (ForwardOptions::overlap)
  bool no_repack = false;    // --no-repack: the CPU path keeps the file's layout (ForwardOptions::repack_weights)
  bool attention_bf16 = false;  // --attention-bf16: attention products in bf16 (ForwardOptions::attention_bf16)
  int num_cpu_moe_layers = -1;  // --n-cpu-moe N: the first N blocks' experts on the CPU; -1: not given
  std::string plan_path;     // --plan FILE: a Plan from `hetmoe plan`, executed as is
  std::string stats_path;    // --stats FILE: expert statistics for the optimizer (default: router-bias prior)
  std::string placement;     // --placement static|dynamic; empty: the config file's placement.mode, else dynamic
  std::string ram_budget;    // --ram-budget SIZE; empty: the config file's gpu.ram_budget, else no limit
  int ubatch_size = 512;     // --ubatch-size: prefill tokens per forward batch (ForwardOptions::max_batch_tokens);
                             // 512 measured fastest for pp512 (docs/performance.md)
};
void add_device_options(CLI::App* cmd, DeviceArgs& args);
/// Sets options.device and vram_budget_bytes. Errors: kInvalidArgument for a bad --device or --vram-budget,
/// --cpu-moe with --n-gpu-experts, or --reference (options.use_reference) with --device gpu.
Status apply_device_options(const DeviceArgs& args, ForwardOptions& options);

/// The KV cache's types: --kv-type (K and V), -ctk/--cache-type-k and -ctv/--cache-type-v (llama.cpp's names, over
/// --kv-type), each f16, f32, q8_0 or q4_0. Empty: not given.
struct KvTypeArgs {
  std::string kv_type;
  std::string cache_type_k;
  std::string cache_type_v;
};
void add_kv_type_options(CLI::App* cmd, KvTypeArgs& args);
/// K's type: -ctk, else --kv-type, else the config file's model.kv_type_k, else model.kv_type, else f16; V's
/// likewise (-ctv, model.kv_type_v). config may be nullptr. Errors: kInvalidArgument naming the flag and the value
/// (a library caller's bad string; the CLI checks the choices while parsing).
struct KvTypes {
  KvCacheType k = KvCacheType::kF16;
  KvCacheType v = KvCacheType::kF16;
};
Expected<KvTypes> resolve_kv_types(const KvTypeArgs& args, const RuntimeConfig* config);
/// "K q8_0, V q8_0: 1088 B per token and layer, 25.5 MiB per token ... " — the KV cache's size for `hp` at
/// context_length tokens (sliding layers keep at most their window): one line for info, bench and the start-up notes.
std::string kv_size_text(const ModelHparams& hp, KvTypes types, uint32_t context_length);

/// -t, -c/--ctx-size, --kv-type/-ctk/-ctv, --load, --reference, --config, --trace and the device options.
struct RunArgs {
  int num_threads = 1;
  uint32_t context_length = 8192;
  KvTypeArgs kv;
  std::string load = "auto";
  bool use_reference = false;
  /// --config FILE: when given, the parsed file (all of it, for the keys other parts consume), and its values for
  /// threads.count and model.context are copied into the fields above unless the flag was given too (command-line
  /// flags override the file; model.kv_type* are applied by resolve_kv_types). config_status holds the file's error.
  std::string config_path;
  std::optional<RuntimeConfig> config;
  Status config_status;
  std::string trace_path;  // --trace FILE (runtime/cli/trace_options.h); empty: no trace
  std::string stats_out;   // --stats-out FILE (generate, chat): the run's expert selection counts
  bool threads_given = false;  // -t was on the command line
  DeviceArgs device;
};
/// Registers the options; when the command line is parsed, applies --config as described above.
void add_run_options(CLI::App* cmd, RunArgs& args);
/// Options with the --config file's keys applied (apply_runtime_config). Errors: the --config file's (kIo, kFormat);
/// kInvalidArgument for a bad --kv-type, --device or --vram-budget, --cpu-moe with --n-gpu-experts, or --reference
/// with --device gpu; apply_runtime_config's.
Expected<ForwardOptions> forward_options(const RunArgs& args);
/// "4 threads", "2 threads per NUMA node", "3 threads (the listed CPUs)" or "one thread per core": the CPU workers the
/// options ask for (num_threads, or the config file's thread layout).
std::string threads_text(const ForwardOptions& options);
/// Prints create_forward's notes as "hetmoe <command>: <note>" lines on stderr.
void print_notes(std::string_view command, const std::vector<std::string>& notes);
/// Errors: kInvalidArgument for a bad --load.
Expected<gguf::File::LoadMode> load_mode(const RunArgs& args);

/// --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, -s/--seed.
struct SamplingArgs {
  SamplerParams params;              // defaults as in runtime/app/sampler.h (llama.cpp's)
  int64_t seed = -1;                   // --seed; -1: random (llama.cpp's meaning)
  CLI::Option* seed_option = nullptr;  // set by add_sampling_options; count() > 0 when --seed was given
};
void add_sampling_options(CLI::App* cmd, SamplingArgs& args);
/// The parameters with the given seed, or a random one when --seed was not given or is -1. Errors: validate()'s.
Expected<SamplerParams> sampler_params(const SamplingArgs& args);

}  // namespace hetmoe::cli
