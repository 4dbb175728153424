#include "runtime/exec/cpu_experts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "cpu_kernels/reference.h"

namespace hetmoe {
namespace {

bool uses_q8_activations(TensorType type) { return type == TensorType::kMXFP4 || type == TensorType::kQ8_0; }

}  // namespace

Expected<CpuExperts> CpuExperts::create(const Model& model, const cpu::KernelTable& kernels, int num_threads,
                                        uint32_t max_tokens) {
  const ModelHparams& hp = model.hparams;
  if (hp.hidden_dim % cpu::kActBlockElems != 0 || hp.expert_ffn_dim % cpu::kActBlockElems != 0)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the CPU experts need hidden ({}) and expert FFN ({}) sizes that are multiples of 32",
                                  hp.hidden_dim, hp.expert_ffn_dim));
  if (max_tokens == 0 || max_tokens > 4096)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("CPU experts: {} tokens per step is out of range (expected 1..4096)", max_tokens));
  return CpuExperts(model, kernels, std::max(1, num_threads), max_tokens);
}

CpuExperts::CpuExperts(const Model& model, const cpu::KernelTable& kernels, int num_threads, uint32_t max_tokens)
    : model_(&model), kernels_(&kernels), num_threads_(num_threads), max_tokens_(max_tokens) {
  const ModelHparams& hp = model.hparams;
  const size_t D = hp.hidden_dim, F = hp.expert_ffn_dim, K = hp.num_experts_used, E = hp.num_experts;
  const size_t T = max_tokens, R = T * K, blk = cpu::kActBlockElems;
  xq_.resize(T * D / blk);
  expert_of_group_.resize(E);
  group_begin_.resize(E + 1);
  gathered_token_.resize(R);
  gathered_weight_.resize(R);
  gathered_x_.resize(R * D / blk);
  gathered_xf_.resize(R * D);
  gate_.resize(R * F);
  up_.resize(R * F);
  act_q8_.resize(R * F / blk);
  down_.resize(R * D);
  one_ids_.resize(K);
  jobs_.resize(2 * E);
  row_begin_.resize(jobs_.size() + 1);
}

void CpuExperts::compute(uint32_t layer_idx, const float* x, std::span<const int32_t> expert_ids,
                         std::span<const float> weights, float* out) {
  // Ids past expert_ids.size() are −1, so the weights there are never read.
  std::fill(one_ids_.begin(), one_ids_.end(), -1);
  std::copy(expert_ids.begin(), expert_ids.end(), one_ids_.begin());
  compute_batch(layer_idx, x, 1, one_ids_.data(), weights.data(), out);
}

void CpuExperts::compute_batch(uint32_t layer_idx, const float* x, uint32_t num_tokens, const int32_t* expert_ids,
                               const float* weights, float* out) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[layer_idx];
  const uint32_t D = hp.hidden_dim, F = hp.expert_ffn_dim, K = hp.num_experts_used, E = hp.num_experts;
  constexpr uint32_t blk = cpu::kActBlockElems;
  std::fill(out, out + static_cast<size_t>(num_tokens) * D, 0.0f);
  const bool quantized = uses_q8_activations(w.gate_exps.type);
  if (quantized)
    for (uint32_t t = 0; t < num_tokens; ++t)
      kernels_->quantize_act_q8(x + static_cast<size_t>(t) * D, &xq_[static_cast<size_t>(t) * D / blk], D);

  // 1. Group the (token, expert) pairs by expert; gather each group's inputs.
  uint32_t num_groups = 0;
  group_begin_[0] = 0;
  const uint32_t num_pairs = num_tokens * K;
  for (uint32_t e = 0; e < E; ++e) {
    uint32_t row = group_begin_[num_groups];
    for (uint32_t i = 0; i < num_pairs; ++i) {
      if (expert_ids[i] != static_cast<int32_t>(e)) continue;
      const uint32_t t = i / K;
      gathered_token_[row] = t;
      gathered_weight_[row] = weights[i];
      if (quantized)
        std::memcpy(&gathered_x_[static_cast<size_t>(row) * D / blk], &xq_[static_cast<size_t>(t) * D / blk],
                    D / blk * sizeof(cpu::ActQ8Block));
      else
        std::memcpy(&gathered_xf_[static_cast<size_t>(row) * D], x + static_cast<size_t>(t) * D, D * sizeof(float));
      ++row;
    }
    if (row == group_begin_[num_groups]) continue;
    expert_of_group_[num_groups] = static_cast<int32_t>(e);
    group_begin_[++num_groups] = row;
  }
  if (num_groups == 0) return;

  // 2. gate and up projections of every group, one parallel region.
  uint32_t num_jobs = 0;
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    const auto e = static_cast<uint64_t>(expert_of_group_[gi]);
    const uint32_t row = group_begin_[gi];
    for (int which = 0; which < 2; ++which) {
      CpuForward::MatJob& job = jobs_[num_jobs++];
      job = CpuForward::MatJob{};
      job.w = which == 0 ? &w.gate_exps : &w.up_exps;
      job.expert_idx = e;
      job.x_q8 = &gathered_x_[static_cast<size_t>(row) * D / blk];
      job.x_f32 = &gathered_xf_[static_cast<size_t>(row) * D];
      job.num_tokens = group_begin_[gi + 1] - row;
      job.y = (which == 0 ? gate_.data() : up_.data()) + static_cast<size_t>(row) * F;
      job.y_stride = F;
      job.bias = (which == 0 ? w.gate_bias.data() : w.up_bias.data()) + e * F;
    }
  }
  run_mat_jobs(*kernels_, {jobs_.data(), num_jobs}, num_threads_, row_begin_);

  // 3. SwiGLU-OAI, quantize, down projections.
  const uint32_t num_rows = group_begin_[num_groups];
  kernels_->swiglu_oai(gate_.data(), up_.data(), gate_.data(), static_cast<int64_t>(num_rows) * F, ref::kSwigluAlpha,
                       ref::kSwigluLimit);
  if (uses_q8_activations(w.down_exps.type))
    for (uint32_t r = 0; r < num_rows; ++r)
      kernels_->quantize_act_q8(&gate_[static_cast<size_t>(r) * F], &act_q8_[static_cast<size_t>(r) * F / blk], F);
  num_jobs = 0;
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    const auto e = static_cast<uint64_t>(expert_of_group_[gi]);
    const uint32_t row = group_begin_[gi];
    CpuForward::MatJob& job = jobs_[num_jobs++];
    job = CpuForward::MatJob{};
    job.w = &w.down_exps;
    job.expert_idx = e;
    job.x_q8 = &act_q8_[static_cast<size_t>(row) * F / blk];
    job.x_f32 = &gate_[static_cast<size_t>(row) * F];
    job.num_tokens = group_begin_[gi + 1] - row;
    job.y = down_.data() + static_cast<size_t>(row) * D;
    job.y_stride = D;
    job.bias = w.down_bias.data() + e * D;
  }
  run_mat_jobs(*kernels_, {jobs_.data(), num_jobs}, num_threads_, row_begin_);

  // 4. Weighted sums per token (in expert order, as the CPU path).
  for (uint32_t r = 0; r < num_rows; ++r) {
    float* o = out + static_cast<size_t>(gathered_token_[r]) * D;
    const float* y = &down_[static_cast<size_t>(r) * D];
    const float wgt = gathered_weight_[r];
    for (uint32_t i = 0; i < D; ++i) o[i] += wgt * y[i];
  }
}

}  // namespace hetmoe
