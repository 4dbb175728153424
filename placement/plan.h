#pragma once
// A placement Plan: plain data saying, for one model, where every weight lives (per expert), where the KV cache
// lives, how many CPU threads run, the budgets it was made for, and what the cost model predicts for it. The
// optimizer (placement/optimizer.h) makes Plans; the runtime executes a Plan and nothing else decides placement
// (create_forward in runtime/exec/forward_factory.h). Plans are JSON-serializable and testable without a GPU.
//
// JSON (top-level keys): "format" "hetmoe-plan", "version" 1, "model", "num_layers", "num_experts",
// "num_experts_used", "context_length", "kv_type", "strategy", "embedding", "output", "num_cpu_threads",
// "budgets" {"vram_bytes", "ram_bytes"}, "prefill_crossover_tokens" (optional, default 0),
// "dynamic_placement" {DynamicPolicy's fields}, "ram_tier" {RamTier's fields} (optional), "layers" [ {"attention":
// "cpu"|"gpu", "gpu_experts": [ids], "cpu_experts": [ids], "numa_nodes": [node per expert] (optional),
// "paged_experts": [ids of CPU experts paged from disk] (optional), "gpu_bytes", "cpu_bytes", "gpu_time_s",
// "cpu_time_s", "sync_time_s", "step_time_s"} ], "totals" {...}, "prediction" {...}, "notes" [strings]. Field names
// are those of the structs below; bytes are integers, times in seconds.
// This header has no dependency beyond the standard library and nlohmann's forward declarations, so the runtime
// can read a Plan without linking the optimizer.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/base/expected.h"

namespace hetmoe::placement {

enum class Device : uint8_t { kCpu = 0, kGpu = 1 };
inline std::string_view device_name(Device d) { return d == Device::kGpu ? "gpu" : "cpu"; }

/// One transformer block. The router, the norms and the block's KV cache live with its attention.
struct LayerPlan {
  Device attention = Device::kCpu;         // attention weights, norms, router, this layer's KV cache
  std::vector<Device> experts;             // (num_experts) device of each expert
  std::vector<int32_t> expert_numa_nodes;  // (num_experts) NUMA node of CPU experts, or empty when unknown
  std::vector<int32_t> paged_experts;      // CPU experts left in the mapped file, paged from disk (RAM tier); ids
  // Filled by the cost model (placement/cost_model.h):
  uint64_t gpu_bytes = 0;     // bytes this block keeps on the GPU (weights + KV cache at context_length)
  uint64_t cpu_bytes = 0;     // bytes it keeps in RAM
  double gpu_time_s = 0;      // predicted GPU time per decoded token (attention and GPU experts, if on GPU)
  double cpu_time_s = 0;      // predicted CPU time per decoded token (CPU experts, attention if on CPU)
  double sync_time_s = 0;     // CPU↔GPU hand-off per token (0 when the block runs on one device)
  double step_time_s = 0;     // the block's share of the decode step (serial parts + max(GPU, CPU) + sync)
};

struct PlanTotals {
  uint64_t gpu_bytes = 0;           // everything on the GPU: weights, KV cache, workspace
  uint64_t cpu_bytes = 0;           // everything in RAM: weights and KV cache
  uint64_t gpu_kv_bytes = 0;
  uint64_t cpu_kv_bytes = 0;
  uint64_t gpu_workspace_bytes = 0; // activations, logits, expert streaming buffers (counted in gpu_bytes)
  uint32_t num_gpu_experts = 0;
  uint32_t num_cpu_experts = 0;
};

struct PlanPrediction {
  uint32_t depth = 0;              // context depth (tokens in the KV cache) the decode figures are for
  double decode_time_s = 0;        // predicted seconds per decoded token
  double decode_tok_s = 0;         // 1 / decode_time_s
  double gpu_time_s = 0;           // Σ over blocks of GPU busy time per token (plus the output layer if on GPU)
  double cpu_time_s = 0;           // Σ over blocks of CPU busy time per token (plus the output layer if on CPU)
  double output_time_s = 0;        // unembedding (and embedding row) per token
  uint32_t prefill_batch = 0;      // tokens per prefill batch the prefill figure is for
  double prefill_tok_s = 0;        // predicted prefill throughput at that batch
  uint32_t prefill_crossover_batch = 0;  // smallest batch from which streaming CPU experts to the GPU beats CPU
                                         // compute (0: never, or no GPU)
};

/// The RAM tier (placement/ram_tier.h): which CPU weights stay resident in RAM and what paging the rest costs.
struct RamTier {
  bool enabled = false;               // false: every CPU weight resident (the model fits)
  bool lock = false;                  // lock resident weights with mlock where RLIMIT_MEMLOCK allows
  uint64_t room_bytes = 0;            // memory the run could use when planned
  uint64_t resident_bytes = 0;        // weights kept in RAM: dense and resident experts
  uint64_t paged_bytes = 0;           // experts left to the page cache
  uint32_t num_paged_experts = 0;
  double disk_read_bytes_per_s = 0;   // the rate the prediction used (0: not measured, no time predicted)
  double paged_loads_per_token = 0;   // expected paged-expert selections per decoded token
  double paged_time_s = 0;            // predicted disk time per decoded token (upper bound: no page-cache hits)
};

/// The dynamic placement policy the runtime applies on top of the plan's initial residency
/// (placement/dynamic_placement.h has the algorithm). On by default when the plan uses a GPU.
struct DynamicPolicy {
  bool enabled = false;
  double half_life_tokens = 256;         // decayed selection counts: a selection counts half after this many tokens
  uint32_t replan_interval_tokens = 32;  // re-plan every N decoded tokens
  uint32_t max_migrations_per_step = 4;  // experts loaded per re-plan (bounded copy traffic)
  double hysteresis = 0.25;              // relative margin a candidate must beat the resident by
  double min_score_gap = 1.0;            // absolute margin (decayed selections)
};

struct Plan {
  std::string model_name;           // general.name
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;
  uint32_t num_experts_used = 0;    // top-k
  uint32_t context_length = 0;      // tokens the KV cache is sized for
  std::string kv_type = "f16";
  std::string strategy = "per-expert";  // "per-expert" or "per-layer" (whole layers' experts on one device)
  Device embedding = Device::kCpu;  // token_embd (one row read per token)
  Device output = Device::kCpu;     // output_norm and the unembedding matrix
  int num_cpu_threads = 0;          // 0 = all cores
  uint64_t vram_budget_bytes = 0;   // the budgets the plan was made for (0 VRAM: no GPU; 0 RAM: unlimited)
  uint64_t ram_budget_bytes = 0;
  /// Prompt tokens from which a prefill batch streams its CPU-resident experts to the GPU instead of computing them
  /// on the CPU (the config file's placement.prefill_crossover); 0: the cost model's prefill_crossover_batch.
  uint32_t prefill_crossover_tokens = 0;
  std::vector<LayerPlan> layers;    // (num_layers)
  PlanTotals totals;
  PlanPrediction prediction;
  DynamicPolicy dynamic;            // "dynamic_placement" in JSON
  RamTier ram_tier;                 // "ram_tier" in JSON (optional)
  std::vector<std::string> notes;   // what did not fit, and why

  /// True when anything (a block, an expert, the output) is placed on the GPU.
  bool uses_gpu() const {
    if (embedding == Device::kGpu || output == Device::kGpu) return true;
    for (const LayerPlan& l : layers) {
      if (l.attention == Device::kGpu) return true;
      for (Device d : l.experts)
        if (d == Device::kGpu) return true;
    }
    return false;
  }
  /// The same placement decisions (devices, threads, shape), ignoring predictions and notes.
  bool same_placement(const Plan& other) const;
};

/// A plan with everything on the CPU (no predictions filled).
Plan all_cpu_plan(uint32_t num_layers, uint32_t num_experts, uint32_t num_experts_used, uint32_t context_length);

nlohmann::json plan_to_json(const Plan& plan);
/// Validates while reading. Errors: kFormat naming the key (with the layer index) and what was expected: a missing
/// or mistyped key, an expert id out of range, missing or listed twice, a layer count that is not num_layers.
Expected<Plan> plan_from_json(const nlohmann::json& j, const std::string& source);
/// Errors: kIo; plan_from_json's.
Expected<Plan> plan_load(const std::string& path);
Status plan_save(const Plan& plan, const std::string& path);

}  // namespace hetmoe::placement
