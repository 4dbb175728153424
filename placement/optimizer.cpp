#include "placement/optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace hetmoe::placement {
namespace {

std::string gib(uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30)); }

/// One choice for a group (a block, or the output layer).
struct Option {
  uint64_t units = 0;      // GPU bytes rounded up to budget units
  uint64_t gpu_bytes = 0;
  uint64_t cpu_bytes = 0;
  double time_s = 0;       // predicted decode time of the group
  Device attention = Device::kCpu;  // blocks: attention device; output group: the output's device
  uint32_t num_gpu = 0;    // blocks: the num_gpu most probable experts are on the GPU
};

struct Solution {
  std::vector<uint32_t> choice;  // (num_groups) option index
  uint64_t cpu_bytes = 0;
};

/// Multiple-choice knapsack: minimizes Σ time + λ·cpu_bytes over one option per group with Σ units ≤ capacity.
Solution solve(const std::vector<std::vector<Option>>& groups, uint64_t capacity, double lambda) {
  const size_t U = capacity;
  std::vector<double> f(U + 1, 0.0), nf(U + 1);
  std::vector<std::vector<uint16_t>> choice(groups.size(), std::vector<uint16_t>(U + 1, 0));
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& opts = groups[gi];
    std::fill(nf.begin(), nf.end(), std::numeric_limits<double>::infinity());
    for (size_t oi = 0; oi < opts.size(); ++oi) {
      const Option& o = opts[oi];
      if (o.units > U) continue;
      const double add = o.time_s + lambda * static_cast<double>(o.cpu_bytes);
      for (size_t u = o.units; u <= U; ++u) {
        const double v = f[u - o.units] + add;
        if (v < nf[u]) {
          nf[u] = v;
          choice[gi][u] = static_cast<uint16_t>(oi);
        }
      }
    }
    std::swap(f, nf);
  }
  Solution s;
  s.choice.resize(groups.size());
  size_t u = U;
  for (size_t gi = groups.size(); gi-- > 0;) {
    const uint16_t oi = choice[gi][u];
    s.choice[gi] = oi;
    u -= groups[gi][oi].units;
    s.cpu_bytes += groups[gi][oi].cpu_bytes;
  }
  return s;
}

}  // namespace

uint32_t num_cpu_moe_layers(const Plan& plan) {
  uint32_t n = 0;
  for (const LayerPlan& l : plan.layers)
    n += std::all_of(l.experts.begin(), l.experts.end(), [](Device d) { return d == Device::kCpu; });
  return n;
}

Expected<Plan> optimize_plan(const CostModel& cm, const PlanRequest& req, PlanStrategy strategy) {
  const CostInputs& in = cm.inputs();
  const ModelHparams& hp = in.hp;
  const uint32_t L = hp.num_layers, E = hp.num_experts;
  Plan plan = all_cpu_plan(L, E, hp.num_experts_used, in.context_length);
  plan.model_name = req.model_name;
  plan.strategy = strategy == PlanStrategy::kPerExpert ? "per-expert" : "per-layer";
  plan.num_cpu_threads = req.num_cpu_threads;
  plan.vram_budget_bytes = req.vram_budget_bytes;
  plan.ram_budget_bytes = req.ram_budget_bytes;

  // Experts of each block, most probable first (ties: lower id first), and prefix sums of their probabilities.
  std::vector<std::vector<uint32_t>> order(L);
  std::vector<std::vector<double>> prefix_mass(L);
  for (uint32_t l = 0; l < L; ++l) {
    const double* p = &in.probabilities[static_cast<size_t>(l) * E];
    order[l].resize(E);
    std::iota(order[l].begin(), order[l].end(), 0u);
    std::stable_sort(order[l].begin(), order[l].end(), [p](uint32_t a, uint32_t b) { return p[a] > p[b]; });
    prefix_mass[l].assign(E + 1, 0.0);
    for (uint32_t i = 0; i < E; ++i) prefix_mass[l][i + 1] = prefix_mass[l][i] + p[order[l][i]];
  }

  const uint64_t workspace = cm.gpu_workspace_bytes();
  const bool gpu = in.rates.has_gpu && req.vram_budget_bytes > workspace;
  if (!in.rates.has_gpu) {
    plan.notes.push_back("no GPU: everything on the CPU");
  } else if (req.vram_budget_bytes == 0) {
    plan.notes.push_back("VRAM budget 0: everything on the CPU");
  } else if (!gpu) {
    plan.notes.push_back(fmt::format("VRAM budget {} does not cover the GPU workspace ({}): everything on the CPU",
                                     gib(req.vram_budget_bytes), gib(workspace)));
  }

  if (gpu) {
    const uint64_t available = req.vram_budget_bytes - workspace;
    const uint64_t everything = cm.all_gpu_bytes() - workspace;
    const bool unconstrained = everything <= available;
    uint64_t max_expert = 1;
    for (const LayerBytes& lb : in.bytes.layers) max_expert = std::max(max_expert, lb.expert_bytes);
    const uint64_t span = std::min(available, everything);
    const uint64_t unit = std::max<uint64_t>({(max_expert + 3) / 4, (span + 8191) / 8192, 1});
    const auto units = [unit](uint64_t bytes) { return (bytes + unit - 1) / unit; };

    std::vector<std::vector<Option>> groups(L + 1);
    for (uint32_t l = 0; l < L; ++l) {
      const uint64_t s = in.bytes.layers[l].expert_bytes, attn = cm.attention_resident_bytes(l);
      for (Device a : {Device::kCpu, Device::kGpu})
        for (uint32_t n = 0; n <= E; ++n) {
          if (strategy == PlanStrategy::kPerLayer && n != 0 && n != E) continue;
          Option o;
          o.attention = a;
          o.num_gpu = n;
          o.gpu_bytes = n * s + (a == Device::kGpu ? attn : 0);
          o.cpu_bytes = (E - n) * s + (a == Device::kCpu ? attn : 0);
          o.units = units(n * s) + (a == Device::kGpu ? units(attn) : 0);
          o.time_s = cm.block_cost(l, a, prefix_mass[l][n], n).step_s;
          groups[l].push_back(o);
        }
    }
    for (Device d : {Device::kCpu, Device::kGpu}) {
      Option o;
      o.attention = d;
      (d == Device::kGpu ? o.gpu_bytes : o.cpu_bytes) = in.bytes.output_bytes;
      o.units = d == Device::kGpu ? units(in.bytes.output_bytes) : 0;
      o.time_s = cm.output_time_s(d);
      groups[L].push_back(o);
    }
    uint64_t capacity = available / unit;
    if (unconstrained) {
      capacity = 0;
      for (const auto& g : groups) {
        uint64_t m = 0;
        for (const Option& o : g) m = std::max(m, o.units);
        capacity += m;
      }
    }

    Solution sol = solve(groups, capacity, 0.0);
    const uint64_t fixed_cpu = in.bytes.embedding_bytes;
    if (req.ram_budget_bytes > 0 && sol.cpu_bytes + fixed_cpu > req.ram_budget_bytes) {
      // Lagrange penalty per RAM byte: find a λ that meets the RAM budget, then bisect towards the smallest.
      double lo = 0, hi = 1e-13;
      Solution best = solve(groups, capacity, hi);
      while (best.cpu_bytes + fixed_cpu > req.ram_budget_bytes && hi < 1.0) {
        lo = hi;
        hi *= 8;
        best = solve(groups, capacity, hi);
      }
      if (best.cpu_bytes + fixed_cpu > req.ram_budget_bytes)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("RAM budget {} cannot be met: even with {} of VRAM, {} must stay in RAM "
                                      "(embedding table {}, and what does not fit on the GPU)",
                                      gib(req.ram_budget_bytes), gib(req.vram_budget_bytes),
                                      gib(best.cpu_bytes + fixed_cpu), gib(fixed_cpu)));
      for (int it = 0; it < 24; ++it) {
        const double mid = 0.5 * (lo + hi);
        Solution s = solve(groups, capacity, mid);
        if (s.cpu_bytes + fixed_cpu <= req.ram_budget_bytes) {
          hi = mid;
          best = std::move(s);
        } else {
          lo = mid;
        }
      }
      sol = std::move(best);
    }
    for (uint32_t l = 0; l < L; ++l) {
      const Option& o = groups[l][sol.choice[l]];
      plan.layers[l].attention = o.attention;
      for (uint32_t i = 0; i < o.num_gpu; ++i) plan.layers[l].experts[order[l][i]] = Device::kGpu;
    }
    plan.output = groups[L][sol.choice[L]].attention;
  }

  HETMOE_RETURN_IF_ERROR(cm.evaluate(plan));
  if (req.ram_budget_bytes > 0 && plan.totals.cpu_bytes > req.ram_budget_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("RAM budget {} cannot be met: the plan keeps {} in RAM{}", gib(req.ram_budget_bytes),
                                  gib(plan.totals.cpu_bytes), gpu ? "" : " (no GPU to hold the rest)"));
  if (plan.uses_gpu()) {
    uint32_t cpu_attention = 0;
    for (const LayerPlan& l : plan.layers) cpu_attention += l.attention == Device::kCpu;
    if (cpu_attention > 0)
      plan.notes.push_back(fmt::format("attention and KV cache of {} of {} blocks stay on the CPU (VRAM budget)",
                                       cpu_attention, L));
    if (plan.output == Device::kCpu) plan.notes.push_back("the unembedding stays on the CPU (VRAM budget)");
    if (plan.totals.num_cpu_experts > 0)
      plan.notes.push_back(fmt::format("{} of {} experts stay on the CPU (VRAM budget)", plan.totals.num_cpu_experts,
                                       L * E));
  } else if (gpu) {
    plan.notes.push_back(fmt::format("VRAM budget {} holds no block's attention and KV cache ({} each at this "
                                     "context) nor enough experts to beat the CPU: everything on the CPU",
                                     gib(req.vram_budget_bytes), gib(cm.attention_resident_bytes(L > 1 ? 1 : 0))));
  }
  return plan;
}

}  // namespace hetmoe::placement
