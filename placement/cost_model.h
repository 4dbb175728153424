#pragma once
// Cost model: predicted decode time per token (and prefill throughput) of a placement Plan, from the model's byte
// accounting (placement/traffic.h, header only), expert selection probabilities (placement/expert_stats.h) and
// device rates. Decode is memory-bandwidth bound (design.md "Where the time goes"), so every time below is
// bytes / effective bandwidth plus fixed latencies.
//
// Decode, per block l (s = bytes of one expert, p_e = probability expert e is among the top-k of one token,
// Σ_e p_e = k, so Σ_{e∈D} p_e·s is the expected expert bytes device D reads per token):
//   t_attn   = GPU: (attention + router bytes + KV bytes read at depth) / bw_eff(GPU) + gpu_kernels_per_block ·
//              kernel_launch_s; CPU: (attention + router bytes) / bw_eff(CPU) + max(KV bytes read / bw_eff(CPU),
//              4 · heads · head_dim · keys read / cpu_attention_flops) (the scores and values at depth; a GPU's
//              attention FLOPs are not modelled)
//   t_gpu_x  = Σ_{e on GPU} p_e·s / bw_eff(GPU)      (+ 3 launches when the block has GPU experts)
//   t_cpu_x  = Σ_{e on CPU} p_e·s / bw_eff(CPU)      (NUMA: max over nodes of that node's bytes / node bandwidth)
//   t_sync   = 2·(pcie_latency_s + hidden·4 B / pcie bw) + sync_latency_s   when attention and some expert are on
//              different devices (the hidden state goes to the other device and the partial sum comes back), else 0
//   step_l   = t_attn + max(t_gpu_x, t_cpu_x) + t_sync + cpu_block_overhead_s (when the block has CPU work)
// where bw_eff(CPU) = cpu_read_bytes_per_s · cpu_expert_efficiency for experts (· cpu_dense_efficiency for
// attention) and bw_eff(GPU) = gpu_read_bytes_per_s · gpu_efficiency.
// Per token: decode = Σ_l step_l + output bytes / bw_eff(device of the output) + one embedding row / bw_eff(CPU).
//
// Prefill with batch B (tokens processed together): expert e is used by the batch with probability
// u_e = 1 − (1 − p_e)^B and receives B·p_e tokens on average. Per block:
//   attention  = max(bytes / bw, 2·B·attention_weights / flops) on its device
//   GPU experts = max(Σ u_e·s / bw_gpu, 2·B·Σ p_e·w / gpu_flops)          (w = weights of one expert)
//   CPU experts computed on the CPU: A = max(Σ u_e·s / bw_cpu, 2·B·Σ p_e·w / cpu_gemm_flops)
//   CPU experts streamed to the GPU (only with a GPU): S = max(Σ u_e·(s / pcie bw + pcie_latency_s), 2·B·Σ p_e·w /
//              gpu_flops), serial after the GPU experts on the same GPU
//   step = attention + min(max(GPU experts, A), GPU experts + S) + sync
// prefill tok/s = B / (Σ_l step_l + output bytes / bw of its device). The crossover batch is the smallest power of
// two B ≤ 4096 for which streaming (S) beats CPU compute (A) summed over the blocks. Prefill's attention-score
// FLOPs (quadratic in the depth) are not modelled.
//
// Memory (what a plan keeps on each device): a block's attention + router bytes and its KV cache at
// context_length (sliding layers: min(context, sliding_window + 63) slots, as the CPU path allocates with its
// default batch of 64) live on the attention's device; experts on theirs; token_embd always in RAM; output_norm and
// the unembedding on the output's device; a GPU that is used also holds gpu_workspace_bytes() (below).

#include <cstdint>
#include <vector>

#include "placement/expert_stats.h"
#include "placement/plan.h"
#include "placement/traffic.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"

namespace hetmoe::placement {

/// Device speeds. Defaults: a laptop with an RTX 4060-class GPU (256 GB/s), PCIe 4.0 x8 (~12 GB/s) and dual-channel
/// DDR5 (60 GB/s). Efficiencies are the fraction of the read bandwidth the GEMV kernels reach (bench/ measures them
/// against the read roofline). Every field is a plain number so `hetmoe probe`'s measurements can fill it.
struct DeviceRates {
  // CPU
  double cpu_read_bytes_per_s = 60e9;     // read bandwidth with the threads used (STREAM-like, profiler/bandwidth.h)
  /// (num_nodes) read bandwidth of each NUMA node's cores from their own memory; empty: one node. When given,
  /// cpu_read_bytes_per_s should be their sum: the optimizer plans with the sum, then spreads each block's CPU
  /// experts over the nodes, and the prediction takes the slowest node.
  std::vector<double> numa_node_read_bytes_per_s;
  double cpu_expert_efficiency = 0.80;    // MXFP4 expert GEMV bytes/s ÷ read bandwidth
  double cpu_dense_efficiency = 0.80;     // Q8_0 attention / output GEMV bytes/s ÷ read bandwidth
  double cpu_block_overhead_s = 30e-6;    // thread-pool fork/join and small ops of one block (≈ 6 parallel regions)
  double cpu_gemm_flops = 300e9;          // prefill: int8-activation GEMM FLOP/s of all threads
  /// Decode attention (scores and values over f16 K/V at depth) FLOP/s of all threads; `plan --measure-cpu-bw`
  /// measures it (measure_cpu_attention_flops). Default: a guess for a laptop (a 2-vCPU Zen 4 VM measured 115–143e9
  /// with 2 threads).
  double cpu_attention_flops = 200e9;
  // GPU (ignored when has_gpu is false)
  bool has_gpu = true;
  double gpu_read_bytes_per_s = 256e9;
  double gpu_efficiency = 0.75;           // GEMV bytes/s ÷ GPU memory bandwidth
  double gpu_flops = 30e12;               // prefill GEMM FLOP/s (MXFP4 / Q8_0 dequantized to f16)
  double kernel_launch_s = 4e-6;          // per kernel (CUDA graph launches are cheaper)
  uint32_t gpu_kernels_per_block = 12;    // norm, QKV, RoPE, attention, output, norm, router, top-k, ...
  // Link
  double pcie_bytes_per_s = 12e9;         // pinned host ↔ device copies
  double pcie_latency_s = 8e-6;           // per copy
  double sync_latency_s = 15e-6;          // event wait + waking the CPU pool, per CPU↔GPU hand-off

  /// The laptop defaults above.
  static DeviceRates laptop() { return {}; }
  /// No GPU; CPU read bandwidth as measured (bytes/s) with the thread count that will run.
  static DeviceRates cpu_only(double cpu_read_bytes_per_s);
  /// Measured values (bytes/s; 0 keeps the default); gpu_read_bytes_per_s 0 and pcie 0 with has_gpu false: no GPU.
  static DeviceRates from_measured(double cpu_read_bytes_per_s, bool has_gpu, double gpu_read_bytes_per_s,
                                   double pcie_bytes_per_s, double pcie_latency_s);
};

/// The costs of one block for a placement of it.
struct BlockCost {
  double attention_s = 0;   // t_attn
  double gpu_experts_s = 0; // t_gpu_x
  double cpu_experts_s = 0; // t_cpu_x
  double sync_s = 0;        // t_sync
  double step_s = 0;        // step_l
  double gpu_s = 0;         // GPU busy time (t_attn if on GPU, + t_gpu_x)
  double cpu_s = 0;         // CPU busy time (t_attn if on CPU, + t_cpu_x, + overhead)
};

/// Everything the cost model needs. Plain data.
struct CostInputs {
  ModelHparams hp;
  ModelBytes bytes;                 // placement/traffic.h
  std::vector<double> probabilities;  // (num_layers, num_experts) selection probabilities, rows sum to top-k
  DeviceRates rates;
  uint32_t context_length = 8192;   // tokens the KV cache is sized for
  uint32_t depth = 0;               // context depth the decode prediction is for
  KvCacheType kv_type = KvCacheType::kF16;
  uint32_t prefill_batch = 512;     // tokens per prefill batch the prefill prediction is for
};

class CostModel {
 public:
  /// Errors: kInvalidArgument if probabilities is not (num_layers, num_experts), a rate is not positive, or the
  /// byte accounting has a different layer count.
  static Expected<CostModel> create(CostInputs inputs);

  const CostInputs& inputs() const { return in_; }
  /// Cost of block l with its attention on `attention` and experts whose summed probability on the GPU is
  /// gpu_mass (num_gpu of them); the rest (total mass − gpu_mass) on the CPU in one NUMA node group.
  BlockCost block_cost(uint32_t layer_idx, Device attention, double gpu_mass, uint32_t num_gpu) const;
  /// Decode time of the output layer (and the embedding row) per token.
  double output_time_s(Device output) const;
  /// KV cache bytes of block l at context_length.
  uint64_t kv_bytes(uint32_t layer_idx) const;
  /// Bytes a block's attention part keeps on its device: attention + router weights + KV cache.
  uint64_t attention_resident_bytes(uint32_t layer_idx) const;
  /// GPU memory a used GPU needs besides weights and KV: logits (vocab·4 B), activations for a prefill batch,
  /// two expert staging buffers for prefill streaming, and 64 MiB for the CUDA libraries' scratch.
  uint64_t gpu_workspace_bytes() const;
  /// Bytes resident on the GPU for the all-GPU placement (every weight but the embedding, KV cache, workspace).
  uint64_t all_gpu_bytes() const;

  /// Fills a plan's per-block bytes and times, totals and prediction (decode and prefill) from its placement.
  /// Errors: kInvalidArgument if the plan's shape is not the model's, or it uses the GPU when rates.has_gpu is
  /// false.
  Status evaluate(Plan& plan) const;

 private:
  explicit CostModel(CostInputs inputs) : in_(std::move(inputs)) {}
  double cpu_bw(bool experts) const;
  double gpu_bw() const;
  double sync_s() const;
  /// Prefill time per batch and the streaming-versus-CPU comparison for one plan and batch.
  void prefill(const Plan& plan, uint32_t batch, double* time_s, double* cpu_path_s, double* stream_path_s) const;
  CostInputs in_;
};

/// Cost inputs from a GGUF file's header: hparams, byte accounting (tensor infos only) and selection
/// probabilities from `stats` (nullptr: the router-bias prior, which reads the num_layers × num_experts router
/// bias values — the only tensor data planning touches). Errors: read_hparams's, model_bytes's, stats'
/// check_model's; kInvalidArgument for a context length of 0 or above the model's, or a depth ≥ the context.
Expected<CostInputs> cost_inputs_from_header(const gguf::File& file, const ExpertStats* stats, const DeviceRates& rates,
                                             uint32_t context_length, uint32_t depth, KvCacheType kv_type);

}  // namespace hetmoe::placement
