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

  bool dense_fits = true;
  if (gpu && req.dense_on_gpu) {
    uint64_t dense = in.bytes.output_bytes;
    for (uint32_t l = 0; l < L; ++l) dense += cm.attention_resident_bytes(l);
    dense_fits = dense <= req.vram_budget_bytes - workspace;
    if (!dense_fits)
      plan.notes.push_back(fmt::format("VRAM budget {} does not hold every block's attention and KV cache and the "
                                       "unembedding with the GPU workspace ({} needed), which the GPU runtime keeps "
                                       "on the GPU: everything on the CPU",
                                       gib(req.vram_budget_bytes), gib(dense + workspace)));
  }

  if (gpu && dense_fits) {
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
          if (req.dense_on_gpu && a == Device::kCpu) continue;
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
      if (req.dense_on_gpu && d == Device::kCpu) continue;
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

    // With dense_on_gpu, the smallest option of every group may still not fit once rounded to units.
    uint64_t min_units = 0;
    for (const auto& g : groups) {
      uint64_t m = UINT64_MAX;
      for (const Option& o : g) m = std::min(m, o.units);
      min_units += m;
    }
    if (min_units > capacity)
      plan.notes.push_back(fmt::format("VRAM budget {} does not hold every block's attention and KV cache and the "
                                       "unembedding with the GPU workspace, which the GPU runtime keeps on the GPU: "
                                       "everything on the CPU",
                                       gib(req.vram_budget_bytes)));
    if (min_units <= capacity) {
      // The placement as (attention device, number of GPU experts) per block and the output's device.
      struct State {
        std::vector<Device> attention;
        std::vector<uint32_t> num_gpu;
        Device output = Device::kCpu;
        uint64_t gpu_bytes = 0, cpu_bytes = 0;
        double time_s = 0;
      };
      const auto state_of = [&](const Solution& sol) {
        State st;
        for (uint32_t l = 0; l < L; ++l) {
          const Option& o = groups[l][sol.choice[l]];
          st.attention.push_back(o.attention);
          st.num_gpu.push_back(o.num_gpu);
        }
        st.output = groups[L][sol.choice[L]].attention;
        for (uint32_t g = 0; g <= L; ++g) {
          const Option& o = groups[g][sol.choice[g]];
          st.gpu_bytes += o.gpu_bytes, st.cpu_bytes += o.cpu_bytes, st.time_s += o.time_s;
        }
        return st;
      };
      const uint64_t fixed_cpu = in.bytes.embedding_bytes;
      const auto fits_ram = [&](const State& st) {
        return req.ram_budget_bytes == 0 || st.cpu_bytes + fixed_cpu <= req.ram_budget_bytes;
      };
      State best = state_of(solve(groups, capacity, 0.0));
      if (!fits_ram(best)) {
        // (1) Fill the VRAM the fastest plan leaves free, moving what costs least predicted time per byte first.
        State fill = best;
        const auto block_time = [&](uint32_t l, Device a, uint32_t n) {
          return cm.block_cost(l, a, prefix_mass[l][n], n).step_s;
        };
        while (!fits_ram(fill)) {
          double best_ratio = std::numeric_limits<double>::infinity();
          int best_group = -1;
          bool best_attention = false;
          uint64_t best_bytes = 0;
          double best_delta = 0;
          for (uint32_t l = 0; l <= L; ++l) {
            for (bool attention_move : {false, true}) {
              uint64_t bytes = 0;
              double delta = 0;
              if (l == L) {
                if (attention_move || fill.output == Device::kGpu) continue;
                bytes = in.bytes.output_bytes;
                delta = cm.output_time_s(Device::kGpu) - cm.output_time_s(Device::kCpu);
              } else if (attention_move) {
                if (fill.attention[l] == Device::kGpu || strategy == PlanStrategy::kPerLayer) continue;
                bytes = cm.attention_resident_bytes(l);
                delta = block_time(l, Device::kGpu, fill.num_gpu[l]) - block_time(l, Device::kCpu, fill.num_gpu[l]);
              } else {
                const uint32_t n = fill.num_gpu[l];
                const uint32_t to = strategy == PlanStrategy::kPerLayer ? E : n + 1;
                if (n >= E) continue;
                bytes = static_cast<uint64_t>(to - n) * in.bytes.layers[l].expert_bytes;
                delta = block_time(l, fill.attention[l], to) - block_time(l, fill.attention[l], n);
              }
              if (fill.gpu_bytes + bytes > available) continue;
              const double ratio = delta / static_cast<double>(bytes);
              if (ratio < best_ratio) {
                best_ratio = ratio, best_group = static_cast<int>(l), best_attention = attention_move;
                best_bytes = bytes, best_delta = delta;
              }
            }
          }
          if (best_group < 0) break;
          const auto g = static_cast<uint32_t>(best_group);
          if (g == L) fill.output = Device::kGpu;
          else if (best_attention) fill.attention[g] = Device::kGpu;
          else fill.num_gpu[g] = strategy == PlanStrategy::kPerLayer ? E : fill.num_gpu[g] + 1;
          fill.gpu_bytes += best_bytes, fill.cpu_bytes -= best_bytes, fill.time_s += best_delta;
        }
        // (2) A Lagrange penalty per RAM byte, raised until the DP's plan fits, then bisected towards the smallest.
        double lo = 0, hi = 1e-13;
        State lagrange = state_of(solve(groups, capacity, hi));
        while (!fits_ram(lagrange) && hi < 1.0) {
          lo = hi;
          hi *= 8;
          lagrange = state_of(solve(groups, capacity, hi));
        }
        if (fits_ram(lagrange))
          for (int it = 0; it < 24; ++it) {
            const double mid = 0.5 * (lo + hi);
            State st = state_of(solve(groups, capacity, mid));
            if (fits_ram(st)) {
              hi = mid;
              lagrange = std::move(st);
            } else {
              lo = mid;
            }
          }
        if (!fits_ram(fill) && !fits_ram(lagrange))
          return make_error(ErrorCode::kInvalidArgument,
                            fmt::format("RAM budget {} cannot be met: even with {} of VRAM, {} must stay in RAM "
                                        "(embedding table {}, and what does not fit on the GPU)",
                                        gib(req.ram_budget_bytes), gib(req.vram_budget_bytes),
                                        gib(std::min(fill.cpu_bytes, lagrange.cpu_bytes) + fixed_cpu), gib(fixed_cpu)));
        best = !fits_ram(lagrange) || (fits_ram(fill) && fill.time_s <= lagrange.time_s) ? fill : lagrange;
      }
      for (uint32_t l = 0; l < L; ++l) {
        plan.layers[l].attention = best.attention[l];
        for (uint32_t i = 0; i < best.num_gpu[l]; ++i) plan.layers[l].experts[order[l][i]] = Device::kGpu;
      }
      plan.output = best.output;
    }
  }

  // NUMA: spread each block's CPU experts over the nodes, most probable first, each to the node whose expected
  // expert time (selection mass / node bandwidth) stays lowest (nodes compute their experts in parallel).
  const std::vector<double>& node_bw = in.rates.numa_node_read_bytes_per_s;
  if (node_bw.size() > 1)
    for (uint32_t l = 0; l < L; ++l) {
      std::vector<double> node_mass(node_bw.size(), 0.0);
      LayerPlan& lp = plan.layers[l];
      lp.expert_numa_nodes.assign(E, -1);
      for (uint32_t e : order[l]) {
        if (lp.experts[e] != Device::kCpu) continue;
        const double p = in.probabilities[static_cast<size_t>(l) * E + e];
        size_t best = 0;
        for (size_t n = 1; n < node_bw.size(); ++n)
          if ((node_mass[n] + p) / node_bw[n] < (node_mass[best] + p) / node_bw[best]) best = n;
        node_mass[best] += p;
        lp.expert_numa_nodes[e] = static_cast<int32_t>(best);
      }
    }
  HETMOE_RETURN_IF_ERROR(cm.evaluate(plan));
  plan.dynamic.enabled = req.dynamic_placement && plan.uses_gpu() && plan.totals.num_cpu_experts > 0;
  if (req.ram_budget_bytes > 0 && plan.totals.cpu_bytes > req.ram_budget_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("RAM budget {} cannot be met: the plan keeps {} in RAM{}", gib(req.ram_budget_bytes),
                                  gib(plan.totals.cpu_bytes), gpu ? "" : " (no GPU to hold the rest)"));
  if (plan.uses_gpu()) {
    // Say whether the budget or the cost model kept something on the CPU.
    const uint64_t free_vram = req.vram_budget_bytes - std::min(req.vram_budget_bytes, plan.totals.gpu_bytes);
    uint32_t cpu_attention = 0;
    uint64_t smallest_attention = UINT64_MAX, smallest_expert = UINT64_MAX;
    for (uint32_t l = 0; l < L; ++l) {
      if (plan.layers[l].attention == Device::kCpu) {
        ++cpu_attention;
        smallest_attention = std::min(smallest_attention, cm.attention_resident_bytes(l));
      }
      if (std::count(plan.layers[l].experts.begin(), plan.layers[l].experts.end(), Device::kCpu) > 0)
        smallest_expert = std::min(smallest_expert, in.bytes.layers[l].expert_bytes);
    }
    const auto why = [free_vram](uint64_t bytes) {
      return bytes <= free_vram ? "predicted faster there" : "VRAM budget";
    };
    if (cpu_attention > 0)
      plan.notes.push_back(fmt::format("attention and KV cache of {} of {} blocks stay on the CPU ({})",
                                       cpu_attention, L, why(smallest_attention)));
    if (plan.output == Device::kCpu)
      plan.notes.push_back(fmt::format("the unembedding stays on the CPU ({})", why(in.bytes.output_bytes)));
    if (plan.totals.num_cpu_experts > 0)
      plan.notes.push_back(fmt::format("{} of {} experts stay on the CPU ({})", plan.totals.num_cpu_experts, L * E,
                                       why(smallest_expert)));
  } else if (gpu && dense_fits) {
    plan.notes.push_back(fmt::format("VRAM budget {} holds no block's attention and KV cache ({} each at this "
                                     "context) nor enough experts to beat the CPU: everything on the CPU",
                                     gib(req.vram_budget_bytes), gib(cm.attention_resident_bytes(L > 1 ? 1 : 0))));
  }
  return plan;
}

}  // namespace hetmoe::placement
