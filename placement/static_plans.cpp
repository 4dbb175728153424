#include "placement/static_plans.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hetmoe::placement {
namespace {

std::string gib(uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30)); }

std::string override_name(const ExpertOverride& o) {
  return fmt::format("placement.overrides {{layer = {}, expert = {}, device = \"{}\"}}", o.layer_idx, o.expert_idx,
                     device_kind_name(o.device));
}

}  // namespace

Expected<Plan> static_gpu_experts_plan(const ModelHparams& hp, const std::vector<std::vector<float>>& router_bias,
                                       uint32_t num_gpu_experts, uint32_t context_length) {
  const uint32_t L = hp.num_layers, E = hp.num_experts;
  if (num_gpu_experts > E)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("--n-gpu-experts {} is out of range: the model has {} experts per layer",
                                  num_gpu_experts, E));
  if (router_bias.size() != L)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("router biases for {} layers, the model has {}", router_bias.size(), L));
  for (const auto& row : router_bias)
    if (!row.empty() && row.size() != E)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("a router bias row has {} entries, expected {}", row.size(), E));
  Plan plan = all_cpu_plan(L, E, hp.num_experts_used, context_length);
  plan.strategy = num_gpu_experts == 0 ? "cpu-moe" : "router-bias";
  plan.output = Device::kGpu;
  for (uint32_t l = 0; l < L; ++l) {
    LayerPlan& lp = plan.layers[l];
    lp.attention = Device::kGpu;
    std::vector<uint32_t> order(E);
    std::iota(order.begin(), order.end(), 0u);
    if (!router_bias[l].empty()) {
      const std::vector<float>& bias = router_bias[l];
      std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return bias[a] > bias[b]; });
    }
    for (uint32_t i = 0; i < num_gpu_experts; ++i) lp.experts[order[i]] = Device::kGpu;
  }
  if (num_gpu_experts == 0)
    plan.notes.push_back(fmt::format("--cpu-moe: all {} experts ({} layers × {}) run on the CPU; attention, router "
                                     "and unembedding on the GPU",
                                     static_cast<uint64_t>(L) * E, L, E));
  else if (num_gpu_experts < E)
    plan.notes.push_back(fmt::format("--n-gpu-experts {}: the {} experts of each layer with the largest router bias on "
                                     "the GPU, the other {} on the CPU",
                                     num_gpu_experts, num_gpu_experts, E - num_gpu_experts));
  return plan;
}

Status apply_expert_overrides(Plan& plan, std::span<const ExpertOverride> overrides, const CostModel& cost_model) {
  if (overrides.empty()) return {};
  const uint32_t L = plan.num_layers, E = plan.num_experts;
  std::vector<int8_t> pinned(static_cast<size_t>(L) * E, -1);  // (L, E) device pinned to, or −1
  for (const ExpertOverride& o : overrides) {
    if (o.layer_idx >= L || o.expert_idx >= E)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: the model has {} layers of {} experts", override_name(o), L, E));
    int8_t& p = pinned[static_cast<size_t>(o.layer_idx) * E + o.expert_idx];
    const auto d = static_cast<int8_t>(o.device == DeviceKind::kGpu ? Device::kGpu : Device::kCpu);
    if (p >= 0 && p != d)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: layer {} expert {} is pinned to both the CPU and the GPU", override_name(o),
                                    o.layer_idx, o.expert_idx));
    p = d;
    if (o.device == DeviceKind::kGpu && (!plan.uses_gpu() || plan.layers[o.layer_idx].attention != Device::kGpu))
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: this plan does not use the GPU for layer {} (no GPU, or a VRAM budget that "
                                    "does not hold the attention and KV cache): {}",
                                    override_name(o), o.layer_idx,
                                    plan.notes.empty() ? std::string("everything on the CPU") : plan.notes.front()));
  }
  HETMOE_RETURN_IF_ERROR(cost_model.evaluate(plan));
  const uint64_t gpu_limit = std::max(plan.vram_budget_bytes, plan.totals.gpu_bytes);
  const uint64_t cpu_before = plan.totals.cpu_bytes;

  uint32_t num_moved = 0;
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t e = 0; e < E; ++e) {
      const int8_t p = pinned[static_cast<size_t>(l) * E + e];
      if (p < 0 || plan.layers[l].experts[e] == static_cast<Device>(p)) continue;
      plan.layers[l].experts[e] = static_cast<Device>(p);
      ++num_moved;
    }
  HETMOE_RETURN_IF_ERROR(cost_model.evaluate(plan));

  // Room for the pins on the GPU: evict the least probable unpinned GPU experts.
  const std::vector<double>& prob = cost_model.inputs().probabilities;
  std::vector<std::pair<double, uint32_t>> evictable;  // (probability, l·E + e)
  for (uint32_t l = 0; l < L; ++l)
    for (uint32_t e = 0; e < E; ++e) {
      const size_t i = static_cast<size_t>(l) * E + e;
      if (pinned[i] < 0 && plan.layers[l].experts[e] == Device::kGpu)
        evictable.emplace_back(prob[i], static_cast<uint32_t>(i));
    }
  std::sort(evictable.begin(), evictable.end());
  uint32_t num_evicted = 0;
  for (size_t k = 0; plan.totals.gpu_bytes > gpu_limit; ++k) {
    if (k == evictable.size())
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("placement.overrides: the experts pinned to the GPU do not fit in the VRAM budget "
                                    "{} even with every other expert on the CPU ({} needed)",
                                    gib(gpu_limit), gib(plan.totals.gpu_bytes)));
    const uint32_t i = evictable[k].second;
    plan.layers[i / E].experts[i % E] = Device::kCpu;
    ++num_evicted;
    HETMOE_RETURN_IF_ERROR(cost_model.evaluate(plan));
  }
  if (plan.ram_budget_bytes > 0 && plan.totals.cpu_bytes > std::max(plan.ram_budget_bytes, cpu_before))
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("placement.overrides: with the experts pinned to the CPU the plan keeps {} in RAM, "
                                  "over the RAM budget {}",
                                  gib(plan.totals.cpu_bytes), gib(plan.ram_budget_bytes)));
  plan.notes.push_back(fmt::format("placement.overrides: {} pins, {} experts moved{}", overrides.size(), num_moved,
                                   num_evicted > 0 ? fmt::format(", {} least probable GPU experts moved to the CPU to "
                                                                 "make room",
                                                                 num_evicted)
                                                   : std::string()));
  return {};
}

double half_life_from_decay(double decay) {
  if (!(decay < 1.0)) return kNoDecayHalfLifeTokens;
  return -std::log(2.0) / std::log(decay);
}

void apply_placement_settings(Plan& plan, const PlacementSettings& settings, bool dynamic) {
  const PlacementSettings::Dynamic& d = settings.dynamic;
  if (d.decay) plan.dynamic.half_life_tokens = half_life_from_decay(*d.decay);
  if (d.replan_interval) plan.dynamic.replan_interval_tokens = *d.replan_interval;
  if (d.max_migrations_per_step) plan.dynamic.max_migrations_per_step = *d.max_migrations_per_step;
  if (d.hysteresis) plan.dynamic.hysteresis = *d.hysteresis;
  if (settings.prefill_crossover) plan.prefill_crossover_tokens = *settings.prefill_crossover;
  bool gpu_experts = false, cpu_experts = false;
  for (const LayerPlan& l : plan.layers)
    for (Device e : l.experts) (e == Device::kGpu ? gpu_experts : cpu_experts) = true;
  plan.dynamic.enabled = dynamic && gpu_experts && cpu_experts;
}

}  // namespace hetmoe::placement
