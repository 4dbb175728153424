#include "placement/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace hetmoe::placement {

DeviceRates DeviceRates::cpu_only(double cpu_read_bytes_per_s) {
  DeviceRates r;
  if (cpu_read_bytes_per_s > 0) r.cpu_read_bytes_per_s = cpu_read_bytes_per_s;
  r.has_gpu = false;
  return r;
}

DeviceRates DeviceRates::from_measured(double cpu_read_bytes_per_s, bool has_gpu, double gpu_read_bytes_per_s,
                                       double pcie_bytes_per_s, double pcie_latency_s) {
  DeviceRates r;
  if (cpu_read_bytes_per_s > 0) r.cpu_read_bytes_per_s = cpu_read_bytes_per_s;
  r.has_gpu = has_gpu;
  if (gpu_read_bytes_per_s > 0) r.gpu_read_bytes_per_s = gpu_read_bytes_per_s;
  if (pcie_bytes_per_s > 0) r.pcie_bytes_per_s = pcie_bytes_per_s;
  if (pcie_latency_s > 0) r.pcie_latency_s = pcie_latency_s;
  return r;
}

Expected<CostModel> CostModel::create(CostInputs in) {
  const ModelHparams& hp = in.hp;
  if (in.probabilities.size() != static_cast<size_t>(hp.num_layers) * hp.num_experts)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cost model: {} selection probabilities, expected num_layers × num_experts = {}",
                                  in.probabilities.size(), static_cast<size_t>(hp.num_layers) * hp.num_experts));
  if (in.bytes.layers.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument, fmt::format("cost model: byte accounting has {} layers, model {}",
                                                               in.bytes.layers.size(), hp.num_layers));
  const DeviceRates& r = in.rates;
  for (double v : {r.cpu_read_bytes_per_s, r.cpu_expert_efficiency, r.cpu_dense_efficiency, r.cpu_gemm_flops,
                   r.cpu_attention_flops,
                   r.gpu_read_bytes_per_s, r.gpu_efficiency, r.gpu_flops, r.pcie_bytes_per_s})
    if (!(v > 0) || !std::isfinite(v))
      return make_error(ErrorCode::kInvalidArgument, fmt::format("cost model: device rate {} must be > 0", v));
  for (double v : r.numa_node_read_bytes_per_s)
    if (!(v > 0)) return make_error(ErrorCode::kInvalidArgument, "cost model: NUMA node bandwidth must be > 0");
  if (in.context_length == 0) return make_error(ErrorCode::kInvalidArgument, "cost model: context length 0");
  return CostModel(std::move(in));
}

double CostModel::cpu_bw(bool experts) const {
  const DeviceRates& r = in_.rates;
  return r.cpu_read_bytes_per_s * (experts ? r.cpu_expert_efficiency : r.cpu_dense_efficiency);
}
double CostModel::gpu_bw() const { return in_.rates.gpu_read_bytes_per_s * in_.rates.gpu_efficiency; }
double CostModel::sync_s() const {
  const DeviceRates& r = in_.rates;
  return 2.0 * (r.pcie_latency_s + in_.hp.hidden_dim * 4.0 / r.pcie_bytes_per_s) + r.sync_latency_s;
}

uint64_t CostModel::kv_bytes(uint32_t l) const {
  const ModelHparams& hp = in_.hp;
  const uint64_t slots = hp.is_sliding(l) ? std::min<uint64_t>(in_.context_length, hp.sliding_window + 63ull)
                                          : in_.context_length;
  return slots * in_.bytes.kv_bytes_per_position;
}

uint64_t CostModel::attention_resident_bytes(uint32_t l) const {
  return in_.bytes.layers[l].dense_bytes() + kv_bytes(l);
}

uint64_t CostModel::gpu_workspace_bytes() const {
  const ModelHparams& hp = in_.hp;
  uint64_t max_expert = 0;
  for (const LayerBytes& l : in_.bytes.layers) max_expert = std::max(max_expert, l.expert_bytes);
  const uint64_t activations = static_cast<uint64_t>(in_.prefill_batch) *
                               (4ull * hp.hidden_dim + 2ull * hp.q_dim() + 3ull * hp.expert_ffn_dim) * 4;
  return static_cast<uint64_t>(hp.vocab_size) * 4 + activations + 2 * max_expert + (64ull << 20);
}

uint64_t CostModel::all_gpu_bytes() const {
  uint64_t b = in_.bytes.output_bytes + gpu_workspace_bytes();
  for (uint32_t l = 0; l < in_.hp.num_layers; ++l)
    b += attention_resident_bytes(l) + static_cast<uint64_t>(in_.hp.num_experts) * in_.bytes.layers[l].expert_bytes;
  return b;
}

BlockCost CostModel::block_cost(uint32_t l, Device attention, double gpu_mass, uint32_t num_gpu) const {
  const ModelHparams& hp = in_.hp;
  const DeviceRates& r = in_.rates;
  const LayerBytes& lb = in_.bytes.layers[l];
  double total_mass = 0;
  for (uint32_t e = 0; e < hp.num_experts; ++e) total_mass += in_.probabilities[static_cast<size_t>(l) * hp.num_experts + e];
  const double cpu_mass = std::max(0.0, total_mass - gpu_mass);
  const uint32_t num_cpu = hp.num_experts - num_gpu;
  const uint64_t keys = kv_keys_read(hp, l, in_.depth);
  const double kv_bytes = static_cast<double>(keys * in_.bytes.kv_bytes_per_position);
  BlockCost c;
  if (attention == Device::kGpu) {
    c.attention_s = (static_cast<double>(lb.dense_bytes()) + kv_bytes) / gpu_bw() +
                    r.gpu_kernels_per_block * r.kernel_launch_s;
  } else {
    // Scores and values: 4 FLOP per query head, key and head dim, at the measured rate (which includes reading the
    // K/V rows), or the K/V bytes at the bandwidth if that is longer.
    const double attn_flops = 4.0 * hp.num_heads * hp.head_dim * static_cast<double>(keys);
    c.attention_s = static_cast<double>(lb.dense_bytes()) / cpu_bw(false) +
                    std::max(kv_bytes / cpu_bw(false), attn_flops / r.cpu_attention_flops);
  }
  c.gpu_experts_s = num_gpu > 0 ? gpu_mass * lb.expert_bytes / gpu_bw() + 3 * r.kernel_launch_s : 0.0;
  c.cpu_experts_s = num_cpu > 0 ? cpu_mass * lb.expert_bytes / cpu_bw(true) : 0.0;
  const bool mixed = attention == Device::kGpu ? num_cpu > 0 : num_gpu > 0;
  c.sync_s = mixed ? sync_s() : 0.0;
  const bool cpu_work = attention == Device::kCpu || num_cpu > 0;
  const double overhead = cpu_work ? r.cpu_block_overhead_s : 0.0;
  c.step_s = c.attention_s + std::max(c.gpu_experts_s, c.cpu_experts_s) + c.sync_s + overhead;
  c.gpu_s = (attention == Device::kGpu ? c.attention_s : 0.0) + c.gpu_experts_s;
  c.cpu_s = (attention == Device::kCpu ? c.attention_s : 0.0) + c.cpu_experts_s + overhead;
  return c;
}

double CostModel::output_time_s(Device output) const {
  const double out = static_cast<double>(in_.bytes.output_bytes);
  const double embd_row = static_cast<double>(in_.bytes.embedding_row_bytes) / cpu_bw(false);
  if (output == Device::kGpu) return out / gpu_bw() + 2 * in_.rates.kernel_launch_s + embd_row;
  return out / cpu_bw(false) + embd_row;
}

void CostModel::prefill(const Plan& plan, uint32_t batch, double* time_s, double* cpu_path_s,
                        double* stream_path_s) const {
  const ModelHparams& hp = in_.hp;
  const DeviceRates& r = in_.rates;
  const double B = batch;
  double total = 0, total_cpu_path = 0, total_stream_path = 0;
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerPlan& lp = plan.layers[l];
    const LayerBytes& lb = in_.bytes.layers[l];
    const double s = static_cast<double>(lb.expert_bytes), w = static_cast<double>(lb.expert_weights);
    double used_gpu = 0, tokens_gpu = 0, used_cpu = 0, tokens_cpu = 0;
    bool any_gpu = false, any_cpu = false;
    for (uint32_t e = 0; e < hp.num_experts; ++e) {
      const double p = std::clamp(in_.probabilities[static_cast<size_t>(l) * hp.num_experts + e], 0.0, 1.0);
      const double used = 1.0 - std::pow(1.0 - p, B);
      if (lp.experts[e] == Device::kGpu) {
        used_gpu += used, tokens_gpu += B * p, any_gpu = true;
      } else {
        used_cpu += used, tokens_cpu += B * p, any_cpu = true;
      }
    }
    const double attn_flops = 2.0 * B * static_cast<double>(lb.attention_weights);
    const double attn = lp.attention == Device::kGpu
                            ? std::max(lb.dense_bytes() / gpu_bw(), attn_flops / r.gpu_flops)
                            : std::max(lb.dense_bytes() / cpu_bw(false), attn_flops / r.cpu_gemm_flops);
    const double gpu_x = std::max(used_gpu * s / gpu_bw(), 2.0 * tokens_gpu * w / r.gpu_flops);
    const double cpu_x = std::max(used_cpu * s / cpu_bw(true), 2.0 * tokens_cpu * w / r.cpu_gemm_flops);
    double step_cpu_path = std::max(gpu_x, cpu_x);
    double step = step_cpu_path;
    if (r.has_gpu && plan.uses_gpu() && any_cpu) {
      const double stream = std::max(used_cpu * (s / r.pcie_bytes_per_s + r.pcie_latency_s),
                                     2.0 * tokens_cpu * w / r.gpu_flops);
      total_stream_path += stream;
      step = std::min(step, gpu_x + stream);
    } else {
      total_stream_path += cpu_x;
    }
    total_cpu_path += cpu_x;
    const bool mixed = lp.attention == Device::kGpu ? any_cpu : any_gpu;
    total += attn + step + (mixed ? sync_s() : 0.0);
  }
  total += plan.output == Device::kGpu ? in_.bytes.output_bytes / gpu_bw() : in_.bytes.output_bytes / cpu_bw(false);
  *time_s = total;
  *cpu_path_s = total_cpu_path;
  *stream_path_s = total_stream_path;
}

Status CostModel::evaluate(Plan& plan) const {
  const ModelHparams& hp = in_.hp;
  if (plan.num_layers != hp.num_layers || plan.num_experts != hp.num_experts || plan.layers.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("plan is for {} layers × {} experts, the model has {} × {}", plan.num_layers,
                                  plan.num_experts, hp.num_layers, hp.num_experts));
  if (!in_.rates.has_gpu && plan.uses_gpu())
    return make_error(ErrorCode::kInvalidArgument, "plan places weights on a GPU, but the device rates have no GPU");
  const std::vector<double>& rates_numa = in_.rates.numa_node_read_bytes_per_s;
  PlanTotals t;
  PlanPrediction pr;
  pr.depth = in_.depth;
  const bool gpu_used = plan.uses_gpu();
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    LayerPlan& lp = plan.layers[l];
    if (lp.experts.size() != hp.num_experts)
      return make_error(ErrorCode::kInvalidArgument, fmt::format("plan layer {} has {} experts, expected {}", l,
                                                                 lp.experts.size(), hp.num_experts));
    const LayerBytes& lb = in_.bytes.layers[l];
    double gpu_mass = 0;
    uint32_t num_gpu = 0;
    std::vector<double> node_mass(rates_numa.size(), 0.0);
    for (uint32_t e = 0; e < hp.num_experts; ++e) {
      const double p = in_.probabilities[static_cast<size_t>(l) * hp.num_experts + e];
      if (lp.experts[e] == Device::kGpu) {
        gpu_mass += p, ++num_gpu;
      } else if (!lp.expert_numa_nodes.empty() && !node_mass.empty()) {
        const int32_t node = lp.expert_numa_nodes[e];
        node_mass[node >= 0 && static_cast<size_t>(node) < node_mass.size() ? node : 0] += p;
      }
    }
    BlockCost c = block_cost(l, lp.attention, gpu_mass, num_gpu);
    if (!lp.expert_numa_nodes.empty() && !node_mass.empty() && num_gpu < hp.num_experts) {
      // NUMA: nodes run their experts in parallel, each from its own memory.
      double t_cpu = 0;
      for (size_t n = 0; n < node_mass.size(); ++n)
        t_cpu = std::max(t_cpu, node_mass[n] * lb.expert_bytes /
                                    (rates_numa[n] * in_.rates.cpu_expert_efficiency));
      c.cpu_s += t_cpu - c.cpu_experts_s;
      c.step_s += std::max(c.gpu_experts_s, t_cpu) - std::max(c.gpu_experts_s, c.cpu_experts_s);
      c.cpu_experts_s = t_cpu;
    }
    const uint64_t attn_bytes = attention_resident_bytes(l);
    const uint64_t expert_gpu = static_cast<uint64_t>(num_gpu) * lb.expert_bytes;
    const uint64_t expert_cpu = static_cast<uint64_t>(hp.num_experts - num_gpu) * lb.expert_bytes;
    lp.gpu_bytes = expert_gpu + (lp.attention == Device::kGpu ? attn_bytes : 0);
    lp.cpu_bytes = expert_cpu + (lp.attention == Device::kCpu ? attn_bytes : 0);
    (lp.attention == Device::kGpu ? t.gpu_kv_bytes : t.cpu_kv_bytes) += kv_bytes(l);
    lp.gpu_time_s = c.gpu_s;
    lp.cpu_time_s = c.cpu_s;
    lp.sync_time_s = c.sync_s;
    lp.step_time_s = c.step_s;
    t.gpu_bytes += lp.gpu_bytes;
    t.cpu_bytes += lp.cpu_bytes;
    t.num_gpu_experts += num_gpu;
    t.num_cpu_experts += hp.num_experts - num_gpu;
    pr.decode_time_s += c.step_s;
    pr.gpu_time_s += c.gpu_s;
    pr.cpu_time_s += c.cpu_s;
  }
  (plan.output == Device::kGpu ? t.gpu_bytes : t.cpu_bytes) += in_.bytes.output_bytes;
  (plan.embedding == Device::kGpu ? t.gpu_bytes : t.cpu_bytes) += in_.bytes.embedding_bytes;
  if (gpu_used) {
    t.gpu_workspace_bytes = gpu_workspace_bytes();
    t.gpu_bytes += t.gpu_workspace_bytes;
  }
  pr.output_time_s = output_time_s(plan.output);
  (plan.output == Device::kGpu ? pr.gpu_time_s : pr.cpu_time_s) += pr.output_time_s;
  pr.decode_time_s += pr.output_time_s;
  pr.decode_tok_s = pr.decode_time_s > 0 ? 1.0 / pr.decode_time_s : 0.0;

  pr.prefill_batch = in_.prefill_batch;
  double time_s = 0, cpu_path = 0, stream_path = 0;
  prefill(plan, std::max(1u, in_.prefill_batch), &time_s, &cpu_path, &stream_path);
  pr.prefill_tok_s = time_s > 0 ? in_.prefill_batch / time_s : 0.0;
  pr.prefill_crossover_batch = 0;
  if (in_.rates.has_gpu && gpu_used && t.num_cpu_experts > 0)
    for (uint32_t b = 1; b <= 4096; b *= 2) {
      prefill(plan, b, &time_s, &cpu_path, &stream_path);
      if (stream_path < cpu_path) {
        pr.prefill_crossover_batch = b;
        break;
      }
    }
  plan.totals = t;
  plan.prediction = pr;
  plan.kv_type = kv_cache_type_name(in_.kv_type);
  plan.context_length = in_.context_length;
  return {};
}

Expected<CostInputs> cost_inputs_from_header(const gguf::File& file, const ExpertStats* stats, const DeviceRates& rates,
                                             uint32_t context_length, uint32_t depth, KvCacheType kv_type) {
  CostInputs in;
  HETMOE_ASSIGN_OR_RETURN(in.hp, read_hparams(file));
  if (context_length == 0 || context_length > in.hp.context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("context length {} is out of range (expected 1..{})", context_length,
                                  in.hp.context_length));
  if (depth >= context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("depth {} must be below the context length {}", depth, context_length));
  HETMOE_ASSIGN_OR_RETURN(in.bytes, model_bytes(file, in.hp, kv_type));
  if (stats) {
    HETMOE_RETURN_IF_ERROR(stats->check_model(in.hp));
    in.probabilities = stats->selection_probabilities();
  } else {
    HETMOE_ASSIGN_OR_RETURN(in.probabilities, router_bias_prior(file, in.hp));
  }
  in.rates = rates;
  in.context_length = context_length;
  in.depth = depth;
  in.kv_type = kv_type;
  return in;
}

}  // namespace hetmoe::placement
