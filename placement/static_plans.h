#pragma once
// Plans made by rule rather than by the optimizer, and the edits the configuration file makes to any plan:
//   --cpu-moe / --n-gpu-experts K   static_gpu_experts_plan (every block's attention and the unembedding on the GPU,
//                                   K experts per block by router bias)
//   [placement] overrides           apply_expert_overrides (pins, within the plan's budgets)
//   [placement] mode, prefill_crossover and [placement.dynamic]
//                                   apply_placement_settings (the plan's DynamicPolicy and prefill crossover)
// The runtime executes the result like any other Plan (runtime/exec/forward_factory.h).

#include <cstdint>
#include <span>
#include <vector>

#include "placement/cost_model.h"
#include "placement/plan.h"
#include "placement/settings.h"
#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe::placement {

/// The static GPU plan of issue 5: every block's attention (router, norms, KV cache) and the unembedding on the GPU,
/// the num_gpu_experts experts of each block with the largest router bias on the GPU (ties: the lower expert id
/// first), the others on the CPU; num_gpu_experts 0 is --cpu-moe. router_bias: (num_layers) rows of num_experts
/// values, or an empty row (all zero). No predictions (CostModel::evaluate fills them).
/// Errors: kInvalidArgument for num_gpu_experts > hp.num_experts ("--n-gpu-experts K is out of range"), a router
/// bias table of another shape.
Expected<Plan> static_gpu_experts_plan(const ModelHparams& hp, const std::vector<std::vector<float>>& router_bias,
                                       uint32_t num_gpu_experts, uint32_t context_length);

/// Pins experts to devices ([placement] overrides of the config file), then re-evaluates the plan with `cost_model`.
/// A pin to the GPU that pushes the plan's GPU bytes over its VRAM budget (or, when the plan was already over it, over
/// what it used before) evicts the least probable unpinned GPU expert of any block, one at a time, until it fits.
/// A pin to the CPU that pushes the RAM bytes over a non-zero RAM budget is an error. The notes say what moved.
/// Errors (kInvalidArgument, naming the override): a layer or expert out of range, one expert pinned to both
/// devices, a pin to the GPU in a plan that does not use the GPU (no GPU, or a budget too small for the dense part),
/// pins that cannot fit in the budget; CostModel::evaluate's.
Status apply_expert_overrides(Plan& plan, std::span<const ExpertOverride> overrides, const CostModel& cost_model);

/// The per-token decay d of the config file ([placement.dynamic] decay, in (0, 1]) as the policy's half-life in
/// tokens: d^h = 1/2, h = −ln 2 / ln d. d = 1 (no decay) gives kNoDecayHalfLifeTokens.
inline constexpr double kNoDecayHalfLifeTokens = 1e15;
double half_life_from_decay(double decay);

/// The config file's [placement] mode and [placement.dynamic] keys onto plan.dynamic (a key not in the file keeps
/// the plan's value), and prefill_crossover onto plan.prefill_crossover_tokens. Dynamic placement is enabled when
/// `dynamic` is true and the plan has experts on both devices (there is nothing to migrate otherwise).
void apply_placement_settings(Plan& plan, const PlacementSettings& settings, bool dynamic);

}  // namespace hetmoe::placement
