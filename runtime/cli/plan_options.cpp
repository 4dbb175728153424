#include "runtime/cli/plan_options.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <optional>

#include "gpu_kernels/cuda_device.h"
#include "runtime/backend/gpu_backend.h"
#include "placement/cost_model.h"
#include "placement/optimizer.h"
#include "placement/profile_rates.h"
#include "placement/ram_tier.h"
#include "profiler/memory.h"
#include "profiler/memory_limit.h"
#include "placement/static_plans.h"
#include "runtime/base/byte_size.h"
#include "runtime/cli/cli_files.h"

namespace hetmoe::cli {
namespace {

std::string gib(uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30)); }

/// A usable GPU (its free memory), or why there is none.
struct GpuCheck {
  bool usable = false;
  uint64_t free_bytes = 0;
  std::string reason;
};

GpuCheck check_gpu(int gpu_idx) {
  GpuCheck c;
  if (!gpu::cuda_built()) {
    c.reason = "no GPU support (hetmoe was built without CUDA)";
    return c;
  }
  auto devices = gpu::list_devices();
  if (!devices) {
    c.reason = "no usable GPU (" + devices.error().message + ")";
  } else if (devices->empty()) {
    c.reason = "no GPU found (no CUDA device or no NVIDIA driver)";
  } else if (gpu_idx < 0 || static_cast<size_t>(gpu_idx) >= devices->size()) {
    c.reason = fmt::format("GPU {} does not exist ({} CUDA device(s) found)", gpu_idx, devices->size());
  } else if (auto free_bytes = gpu::device_free_bytes(gpu_idx); !free_bytes) {
    c.reason = "no usable GPU (" + free_bytes.error().message + ")";
  } else {
    c.usable = true;
    c.free_bytes = *free_bytes;
  }
  return c;
}

Expected<uint64_t> byte_size(const std::string& what, const std::string& text) {
  auto bytes = parse_byte_size(text);
  if (!bytes) return make_error(bytes.error().code, what + ": " + bytes.error().message);
  return *bytes;
}

std::vector<std::vector<float>> router_biases(const Model& model) {
  std::vector<std::vector<float>> bias;
  for (const LayerWeights& l : model.layers) bias.push_back(l.router_bias);
  return bias;
}

std::string summary_line(const placement::Plan& plan, const std::string& source, bool gpu_words) {
  const uint64_t total = static_cast<uint64_t>(plan.num_layers) * plan.num_experts;
  uint64_t num_gpu = 0;
  for (const placement::LayerPlan& l : plan.layers)
    for (placement::Device d : l.experts) num_gpu += d == placement::Device::kGpu;
  const std::string where = gpu_words ? fmt::format("{}/{} experts on the GPU", num_gpu, total)
                                      : fmt::format("all {} experts on the CPU", total);
  std::string line = fmt::format("plan: {} blocks, {} ({})", plan.num_layers, where, source);
  if (plan.prediction.decode_tok_s > 0)
    line += fmt::format(", predicted {:.1f} tok/s decode at depth {}", plan.prediction.decode_tok_s,
                        plan.prediction.depth);
  if (plan.dynamic.enabled) line += fmt::format(", dynamic placement every {} tokens", plan.dynamic.replan_interval_tokens);
  return line;
}

/// The cost model takes one KV type for K and V: with different types, the one with more bytes (memory estimates stay
/// on the safe side).
KvCacheType plan_kv_type(const ModelHparams& hp, const ForwardOptions& options) {
  return kv_row_bytes(options.kv_type, hp.head_dim) >= kv_row_bytes(options.v_type(), hp.head_dim)
             ? options.kv_type
             : options.v_type();
}

}  // namespace

Expected<placement::Plan> make_run_plan(const Model& model, const DeviceArgs& args, const RuntimeConfig* config,
                                        ForwardOptions& options, std::vector<std::string>* notes) {
  const ModelHparams& hp = model.hparams;
  const auto note = [notes](std::string n) {
    if (notes) notes->push_back(std::move(n));
  };
  if (options.context_length == 0 || options.context_length > hp.context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("context length {} is out of range (expected 1..{}, the model's context_length)",
                                  options.context_length, hp.context_length));
  const RuntimeConfig::Placement* settings = config ? &config->placement : nullptr;
  if (config && config->gpu.id && options.gpu_idx == 0) options.gpu_idx = *config->gpu.id;

  // Placement mode: --placement, else the file's, else dynamic.
  bool dynamic = true;
  if (!args.placement.empty()) {
    if (args.placement != "static" && args.placement != "dynamic")
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--placement {}: expected static or dynamic", args.placement));
    dynamic = args.placement == "dynamic";
  } else if (settings && settings->mode) {
    dynamic = *settings->mode == PlacementMode::kDynamic;
  }
  // Experts per block: --cpu-moe or --n-gpu-experts, else the file's placement.num_gpu_experts.
  std::optional<uint32_t> num_gpu_experts;
  if (args.cpu_moe) num_gpu_experts = 0;
  else if (args.num_gpu_experts >= 0) num_gpu_experts = static_cast<uint32_t>(args.num_gpu_experts);
  if (!args.plan_path.empty() && (num_gpu_experts || args.num_cpu_moe_layers >= 0))
    return make_error(ErrorCode::kInvalidArgument,
                      "--plan and --cpu-moe / --n-cpu-moe / --n-gpu-experts exclude each other");
  if (args.num_cpu_moe_layers > static_cast<int>(hp.num_layers))
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--n-cpu-moe {}: the model has {} blocks", args.num_cpu_moe_layers, hp.num_layers));
  // --n-cpu-moe N: every expert of the first N blocks on the CPU, the others' on the GPU (llama.cpp's meaning).
  if (args.num_cpu_moe_layers >= 0) num_gpu_experts = hp.num_experts;
  if (!num_gpu_experts && args.plan_path.empty() && settings && settings->num_gpu_experts)
    num_gpu_experts = *settings->num_gpu_experts;

  // The GPU, and the budgets.
  GpuCheck gpu;
  if (options.use_reference) {
    gpu.reason = "--reference runs on the CPU";
  } else if (options.device == ForwardOptions::Device::kCpu) {
    gpu.reason = "--device cpu";
  } else {
    gpu = check_gpu(options.gpu_idx);
    if (!gpu.usable && options.device == ForwardOptions::Device::kGpu)
      return make_error(ErrorCode::kUnsupported, "--device gpu: " + gpu.reason);
  }
  uint64_t vram = options.vram_budget_bytes;
  if (vram == 0 && config && config->gpu.vram_budget_bytes) {
    vram = *config->gpu.vram_budget_bytes;
    if (vram == 0)
      return make_error(ErrorCode::kInvalidArgument,
                        "gpu.vram_budget = 0 in the config file: use --device cpu to run without the GPU");
  }
  if (gpu.usable && vram == 0)
    vram = gpu.free_bytes > gpu::kDefaultVramReserveBytes ? gpu.free_bytes - gpu::kDefaultVramReserveBytes : 0;
  if (!gpu.usable) vram = 0;
  options.vram_budget_bytes = vram;
  uint64_t ram = 0;
  if (!args.ram_budget.empty()) {
    HETMOE_ASSIGN_OR_RETURN(ram, byte_size("--ram-budget", args.ram_budget));
  } else if (config && config->gpu.ram_budget_bytes) {
    ram = *config->gpu.ram_budget_bytes;
  }

  // Statistics and rates, for the cost model.
  std::optional<placement::ExpertStats> stats;
  std::string stats_source = "router-bias prior";
  if (!args.stats_path.empty()) {
    HETMOE_ASSIGN_OR_RETURN(stats, placement::expert_stats_load(args.stats_path));
    if (auto s = stats->check_model(hp); !s)
      return make_error(s.error().code, args.stats_path + ": " + s.error().message);
    stats_source = fmt::format("statistics {}", args.stats_path);
  }
  std::string profile_reason;
  const auto profile = placement::cached_profile_for_this_machine({}, &profile_reason);
  placement::DeviceRates rates = placement::DeviceRates::laptop();
  if (profile) rates = placement::rates_from_profile(*profile, options.num_threads, rates);
  rates.has_gpu = gpu.usable;
  const std::string rates_source = profile ? "rates of hetmoe probe" : "default rates";
  auto inputs = placement::cost_inputs_from_header(*model.file, stats ? &*stats : nullptr, rates,
                                                   options.context_length, options.context_length - 1,
                                                   plan_kv_type(model.hparams, options));
  if (!inputs) return inputs.error();
  HETMOE_ASSIGN_OR_RETURN(const placement::CostModel cost_model, placement::CostModel::create(std::move(*inputs)));
  std::string model_name;
  if (auto name = model.file->get_string("general.name"); name) model_name = std::string(*name);

  placement::Plan plan;
  std::string source;
  if (!args.plan_path.empty()) {
    HETMOE_ASSIGN_OR_RETURN(plan, placement::plan_load(args.plan_path));
    if (plan.num_layers != hp.num_layers || plan.num_experts != hp.num_experts ||
        plan.num_experts_used != hp.num_experts_used)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("--plan {}: the plan is for {} layers × {} experts (top-{}), the model has {} × {} "
                                    "(top-{})",
                                    args.plan_path, plan.num_layers, plan.num_experts, plan.num_experts_used,
                                    hp.num_layers, hp.num_experts, hp.num_experts_used));
    if (plan.context_length != options.context_length)
      note(fmt::format("--plan {} was made for a context of {}; this run's KV cache holds {}", args.plan_path,
                       plan.context_length, options.context_length));
    if (plan.uses_gpu() && !gpu.usable && options.device == ForwardOptions::Device::kAuto) {
      note(fmt::format("{}; running on the CPU (the plan's GPU placement is not used)", gpu.reason));
      options.device = ForwardOptions::Device::kCpu;
      plan = placement::all_cpu_plan(hp.num_layers, hp.num_experts, hp.num_experts_used, options.context_length);
      plan.model_name = model_name;
      if (auto s = cost_model.evaluate(plan); !s) return s.error();
    }
    source = "--plan " + args.plan_path;
    if (settings && !settings->expert_overrides.empty())
      note(fmt::format("placement.overrides: --plan {} is used as is; the {} pins are not applied", args.plan_path,
                       settings->expert_overrides.size()));
  } else {
    if (!gpu.usable) {
      if (options.device == ForwardOptions::Device::kAuto) {
        note(gpu.reason + "; running on the CPU");
        options.device = ForwardOptions::Device::kCpu;
      }
      plan = placement::all_cpu_plan(hp.num_layers, hp.num_experts, hp.num_experts_used, options.context_length);
      source = gpu.reason == "--device cpu" || gpu.reason.rfind("--reference", 0) == 0 ? gpu.reason : "no GPU";
    } else if (num_gpu_experts) {
      HETMOE_ASSIGN_OR_RETURN(plan, placement::static_gpu_experts_plan(hp, router_biases(model), *num_gpu_experts,
                                                                       options.context_length));
      for (int l = 0; l < args.num_cpu_moe_layers; ++l)
        for (placement::Device& d : plan.layers[static_cast<size_t>(l)].experts) d = placement::Device::kCpu;
      source = args.num_cpu_moe_layers >= 0 ? fmt::format("--n-cpu-moe {}", args.num_cpu_moe_layers)
               : args.cpu_moe ? "--cpu-moe"
               : args.num_gpu_experts >= 0
                   ? fmt::format("--n-gpu-experts {}", *num_gpu_experts)
                   : fmt::format("placement.num_gpu_experts = {}", *num_gpu_experts);
    } else {
      placement::PlanRequest request;
      request.vram_budget_bytes = vram;
      request.ram_budget_bytes = ram;
      request.num_cpu_threads = options.num_threads;
      request.model_name = model_name;
      request.dynamic_placement = dynamic;
      request.dense_on_gpu = true;
      HETMOE_ASSIGN_OR_RETURN(plan, placement::optimize_plan(cost_model, request));
      source = fmt::format("optimizer: VRAM budget {}{}, {}, {}", gib(vram),
                           ram > 0 ? fmt::format(", RAM budget {}", gib(ram)) : std::string(), stats_source,
                           rates_source);
    }
    plan.model_name = model_name;
    plan.num_cpu_threads = options.num_threads;
    plan.vram_budget_bytes = vram;
    plan.ram_budget_bytes = ram;
    plan.kv_type = options.kv_type == options.v_type()
                       ? std::string(kv_cache_type_name(options.kv_type))
                       : fmt::format("{}/{}", kv_cache_type_name(options.kv_type), kv_cache_type_name(options.v_type()));
    HETMOE_RETURN_IF_ERROR(cost_model.evaluate(plan));
    if (settings) {
      if (plan.uses_gpu())
        HETMOE_RETURN_IF_ERROR(placement::apply_expert_overrides(plan, settings->expert_overrides, cost_model));
      else if (!settings->expert_overrides.empty())
        note(fmt::format("placement.overrides: the plan does not use the GPU ({}); the {} pins are not applied",
                         source, settings->expert_overrides.size()));
      if (!settings->tensor_overrides.empty())
        note("placement.tensor_overrides are read but not applied: the runtime places whole blocks and experts");
      placement::apply_placement_settings(plan, *settings, dynamic);
    } else {
      placement::apply_placement_settings(plan, RuntimeConfig::Placement{}, dynamic);
    }
  }
  // Memory: what the run needs against what the process can use; the RAM tier when a mapped model is short of it.
  const profiler::MemoryRoom room = profiler::memory_room();
  // What the run can have: what is still free plus what this process holds already (the weights when copied, or the
  // resident part of an earlier forward pass of the same model); at most --ram-budget.
  uint64_t available = room.bytes() > 0 ? room.bytes() + profiler::current_rss_bytes() : 0;
  if (ram > 0) available = available > 0 ? std::min(available, ram) : ram;
  if (!options.use_reference && !model.file->in_memory() &&
      model.file->requested_mode() == gguf::File::LoadMode::kAuto) {
    placement::RamTierRequest tier;
    tier.room_bytes = available;
    tier.kv_bytes = plan.totals.cpu_kv_bytes;
    tier.disk_read_bytes_per_s = profile && profile->disk ? profile->disk->read_bytes_per_s : 0;
    tier.lock = true;
    HETMOE_RETURN_IF_ERROR(placement::plan_ram_tier(plan, cost_model.inputs().bytes,
                                                    cost_model.inputs().probabilities, tier));
  }
  for (const std::string& n : memory_lines(plan, cost_model, room, available, options.context_length,
                                           options.kv_type, model.file->in_memory()))
    note(n);
  for (const std::string& n : plan.notes)  // what did not fit and why; not `hetmoe plan`'s comparison
    if (n.rfind("no GPU", 0) != 0 && n.rfind("best per-layer split", 0) != 0) note(n);
  note(summary_line(plan, source, options.device != ForwardOptions::Device::kCpu || plan.uses_gpu()));
  return plan;
}

std::vector<std::string> memory_lines(const placement::Plan& plan, const placement::CostModel& cost_model,
                                      const profiler::MemoryRoom& room, uint64_t usable, uint32_t context_length,
                                      KvCacheType kv_type, bool weights_in_memory) {
  std::vector<std::string> lines;
  const placement::ModelBytes& bytes = cost_model.inputs().bytes;
  const uint64_t weights = placement::ram_weight_bytes(plan, bytes);
  const uint64_t kv = plan.totals.cpu_kv_bytes;
  const uint64_t buffers = placement::RamTierRequest{}.buffer_bytes;
  const uint64_t vram = plan.totals.gpu_bytes;
  const placement::RamTier& rt = plan.ram_tier;
  // The blocks whose attention runs on the GPU keep their KV cache there, in the same type (the CUDA kernels read
  // f16, q8_0 and q4_0 blocks; the cost model sized it with kv_bytes_per_position of kv_type).
  const std::string gpu_kv_text =
      plan.totals.gpu_kv_bytes > 0 ? fmt::format(" (KV cache {} of it, {})", gib(plan.totals.gpu_kv_bytes),
                                                 kv_cache_type_name(kv_type))
                                   : std::string();
  std::string weights_text = rt.enabled ? fmt::format("weights {} ({} resident, {} paged from disk)", gib(weights),
                                                      gib(rt.resident_bytes), gib(rt.paged_bytes))
                                        : fmt::format("weights {}", gib(weights));
  lines.push_back(fmt::format("memory: needs {} in RAM: {}, KV cache {} at context {} ({}), buffers {}{}; usable {}",
                              gib(weights + kv + buffers), weights_text, gib(kv), context_length,
                              kv_cache_type_name(kv_type), gib(buffers),
                              vram > 0 ? fmt::format("; {} in VRAM{}", gib(vram), gpu_kv_text) : std::string(),
                              usable > 0 ? fmt::format("{} (free now: {})", gib(usable), room.describe())
                                         : std::string("unknown")));
  if (usable == 0) return lines;
  // What must be in RAM whatever is paged: the weights that are not experts, the KV cache and the buffers.
  uint64_t experts_in_ram = 0;
  for (size_t l = 0; l < plan.layers.size() && l < bytes.layers.size(); ++l)
    for (placement::Device d : plan.layers[l].experts)
      if (d == placement::Device::kCpu) experts_in_ram += bytes.layers[l].expert_bytes;
  const uint64_t dense = weights - experts_in_ram;
  // A model copied into memory needs all of it there; a mapped one only what is not an expert (the rest pages).
  const uint64_t target = weights_in_memory ? weights + kv + buffers : dense + kv + buffers;
  if (target <= usable) return lines;
  // A context whose KV cache leaves room (KV bytes scale about linearly with the context; sliding layers less).
  std::string fix;
  if (kv > 0 && target - kv < usable) {
    const double per_token = static_cast<double>(kv) / context_length;
    const auto ctx = static_cast<uint64_t>(static_cast<double>(usable - (target - kv)) / per_token) / 256 * 256;
    if (ctx >= 256) fix = fmt::format("-c {} would fit", ctx);
  }
  // A smaller KV type: the cache scales with the bytes of a row (the ratio is the same for any head_dim that is a
  // multiple of the 32-value quantization block).
  constexpr uint32_t kHeadDimForKvRatio = 64;
  const auto row = [&](KvCacheType t) { return static_cast<double>(kv_row_bytes(t, kHeadDimForKvRatio)); };
  for (KvCacheType smaller : {KvCacheType::kF16, KvCacheType::kQ8_0, KvCacheType::kQ4_0}) {
    if (row(smaller) >= row(kv_type)) continue;
    const auto kv_smaller = static_cast<uint64_t>(static_cast<double>(kv) * row(smaller) / row(kv_type));
    if (target - kv + kv_smaller > usable) continue;
    fix += fmt::format("{}--kv-type {} would fit (KV cache {})", fix.empty() ? "" : "; ", kv_cache_type_name(smaller),
                       gib(kv_smaller));
    break;
  }
  if (fix.empty()) fix = "nothing at this context fits: free memory (close programs) or raise the limit";
  lines.push_back(fmt::format("memory: this run cannot fit: {} ({}, KV cache and buffers) exceed the usable {}; "
                              "expect reclaim or the OOM killer. {}",
                              gib(target), weights_in_memory ? "the weights copied into memory" : "the weights that are not experts",
                              gib(usable), fix));
  return lines;
}

placement::ExpertStats run_expert_stats(const Model& model) {
  const ModelHparams& hp = model.hparams;
  placement::ExpertStats stats = placement::ExpertStats::zeros(hp.num_layers, hp.num_experts, hp.num_experts_used);
  if (auto name = model.file->get_string("general.name"); name) stats.model_name = std::string(*name);
  return stats;
}

Status save_run_expert_stats(placement::ExpertStats stats, const std::string& path) {
  uint64_t row0 = 0;
  for (uint32_t e = 0; e < stats.num_experts && stats.num_layers > 0; ++e) row0 += stats.count(0, e);
  if (row0 == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--stats-out {}: no expert selection was counted (the CPU path counts; --reference "
                                  "and the GPU pass do not yet)",
                                  path));
  stats.num_tokens = stats.num_experts_used > 0 ? row0 / stats.num_experts_used : 0;
  return write_output_file("--stats-out", path, placement::expert_stats_to_json(stats).dump() + "\n");
}

}  // namespace hetmoe::cli
