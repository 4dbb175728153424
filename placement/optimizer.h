#pragma once
// The placement optimizer: under a VRAM budget (and a RAM budget) it chooses, for every block, where its attention
// (with router, norms and KV cache) lives and which of its experts are GPU-resident, and where the unembedding
// lives, to minimize the cost model's predicted decode time (placement/cost_model.h).
//
// Method. The predicted decode time is a sum over blocks (plus the output layer), and within a block, for a given
// number n of GPU experts, the n most probable experts are best (they move the most expected bytes to the faster
// device; hot experts go to the GPU first). So each block has 2·(E + 1) options (attention on CPU or GPU × n = 0..E)
// and the output 2; choosing one option per group under the budget is a multiple-choice knapsack, solved exactly
// by dynamic programming over the budget in units of g bytes (g ≈ a quarter of an expert, coarser when the budget
// would need more than 8192 units). Option sizes are rounded UP to whole units, so a plan never exceeds the
// budget; the optimum over "at most u units" is non-increasing in u, so more VRAM never predicts slower. When the
// whole model fits (all_gpu_bytes() ≤ budget) the budget is not binding and the unconstrained optimum is taken.
// The RAM budget (RAM bytes ≤ ram_budget) is enforced with a Lagrange penalty per RAM byte, raised by bisection
// until the plan fits; if even the plan that keeps the most on the GPU does not fit, that is an error.
// The per-layer split (what llama.cpp's --n-cpu-moe can express: whole blocks' experts on one device) is the same
// DP with n ∈ {0, E}; as its options are a subset, the per-expert plan never predicts slower.

#include <cstdint>

#include "placement/cost_model.h"
#include "placement/plan.h"

namespace hetmoe::placement {

struct PlanRequest {
  uint64_t vram_budget_bytes = 0;  // 0 (or rates.has_gpu false): everything on the CPU
  uint64_t ram_budget_bytes = 0;   // 0: no limit
  int num_cpu_threads = 0;         // recorded in the plan (0 = all cores)
  std::string model_name;          // recorded in the plan
  bool dynamic_placement = true;   // enable the dynamic policy when the plan uses a GPU (--placement static: off)
  /// The GPU runtime's constraint (runtime/backend/gpu_backend.h): a plan that uses the GPU keeps every block's
  /// attention (router, norms, KV cache) and the unembedding there, and places experts only. A budget that cannot
  /// hold them (with the workspace) gives the all-CPU plan, with a note naming the bytes needed.
  bool dense_on_gpu = false;
};

enum class PlanStrategy { kPerExpert, kPerLayer };

/// The best plan for the cost model's inputs under the request's budgets, with its prediction filled
/// (CostModel::evaluate). Budget edge cases: no GPU or a VRAM budget below the GPU workspace → everything on the
/// CPU (with a note); a budget that holds the whole model → everything on the GPU but the embedding table.
/// Errors: kInvalidArgument if the RAM budget cannot be met (names the bytes that must stay in RAM).
Expected<Plan> optimize_plan(const CostModel& model, const PlanRequest& request,
                             PlanStrategy strategy = PlanStrategy::kPerExpert);

/// The best plan that keeps whole blocks' experts on one device (as `--n-cpu-moe N` does) at the same budgets.
inline Expected<Plan> best_per_layer_split(const CostModel& model, const PlanRequest& request) {
  return optimize_plan(model, request, PlanStrategy::kPerLayer);
}

/// Number of blocks whose experts are all on the CPU (llama.cpp's N in --n-cpu-moe N, for a per-layer plan).
uint32_t num_cpu_moe_layers(const Plan& plan);

}  // namespace hetmoe::placement
