#include "runtime/cpu_experts.h"

#include <fmt/format.h>

#include <algorithm>

#include "cpu_kernels/reference.h"

namespace hetmoe {
namespace {

bool uses_q8_activations(TensorType type) { return type == TensorType::kMXFP4 || type == TensorType::kQ8_0; }

}  // namespace

Expected<CpuExperts> CpuExperts::create(const Model& model, const cpu::KernelTable& kernels, int num_threads) {
  const ModelHparams& hp = model.hparams;
  if (hp.hidden_dim % cpu::kActBlockElems != 0 || hp.expert_ffn_dim % cpu::kActBlockElems != 0)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the CPU experts need hidden ({}) and expert FFN ({}) sizes that are multiples of 32",
                                  hp.hidden_dim, hp.expert_ffn_dim));
  return CpuExperts(model, kernels, std::max(1, num_threads));
}

CpuExperts::CpuExperts(const Model& model, const cpu::KernelTable& kernels, int num_threads)
    : model_(&model), kernels_(&kernels), num_threads_(num_threads) {
  const ModelHparams& hp = model.hparams;
  const size_t D = hp.hidden_dim, F = hp.expert_ffn_dim, K = hp.num_experts_used, blk = cpu::kActBlockElems;
  xq_.resize(D / blk);
  gate_.resize(K * F);
  up_.resize(K * F);
  act_q8_.resize(K * F / blk);
  down_.resize(K * D);
  jobs_.resize(2 * K);
  row_begin_.resize(jobs_.size() + 1);
}

void CpuExperts::compute(uint32_t layer_idx, const float* x, std::span<const int32_t> expert_ids,
                         std::span<const float> weights, float* out) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[layer_idx];
  const uint32_t D = hp.hidden_dim, F = hp.expert_ffn_dim;
  const auto n = static_cast<uint32_t>(expert_ids.size());
  std::fill(out, out + D, 0.0f);
  if (n == 0) return;
  if (uses_q8_activations(w.gate_exps.type)) kernels_->quantize_act_q8(x, xq_.data(), D);

  // gate and up of every expert, one parallel region.
  for (uint32_t j = 0; j < n; ++j) {
    const auto e = static_cast<uint64_t>(expert_ids[j]);
    for (int which = 0; which < 2; ++which) {
      CpuForward::MatJob& job = jobs_[2 * j + static_cast<uint32_t>(which)];
      job = CpuForward::MatJob{};
      job.w = which == 0 ? &w.gate_exps : &w.up_exps;
      job.expert_idx = e;
      job.x_q8 = xq_.data();
      job.x_f32 = x;
      job.y = (which == 0 ? gate_.data() : up_.data()) + static_cast<size_t>(j) * F;
      job.y_stride = F;
      job.bias = (which == 0 ? w.gate_bias.data() : w.up_bias.data()) + e * F;
    }
  }
  run_mat_jobs(*kernels_, {jobs_.data(), 2 * n}, num_threads_, row_begin_);

  // SwiGLU-OAI, quantize, down projections.
  ref::swiglu_oai(gate_.data(), up_.data(), gate_.data(), static_cast<int64_t>(n) * F);
  if (uses_q8_activations(w.down_exps.type))
    for (uint32_t j = 0; j < n; ++j)
      kernels_->quantize_act_q8(&gate_[static_cast<size_t>(j) * F], &act_q8_[static_cast<size_t>(j) * F / 32], F);
  for (uint32_t j = 0; j < n; ++j) {
    const auto e = static_cast<uint64_t>(expert_ids[j]);
    CpuForward::MatJob& job = jobs_[j];
    job = CpuForward::MatJob{};
    job.w = &w.down_exps;
    job.expert_idx = e;
    job.x_q8 = &act_q8_[static_cast<size_t>(j) * F / 32];
    job.x_f32 = &gate_[static_cast<size_t>(j) * F];
    job.y = &down_[static_cast<size_t>(j) * D];
    job.y_stride = D;
    job.bias = w.down_bias.data() + e * D;
  }
  run_mat_jobs(*kernels_, {jobs_.data(), n}, num_threads_, row_begin_);

  // Weighted sum, in the order of expert_ids (the CPU path sums in expert order; the difference is float rounding).
  for (uint32_t j = 0; j < n; ++j) {
    const float* y = &down_[static_cast<size_t>(j) * D];
    for (uint32_t i = 0; i < D; ++i) out[i] += weights[j] * y[i];
  }
}

}  // namespace hetmoe
