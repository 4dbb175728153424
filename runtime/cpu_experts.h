#pragma once
// The CPU half of a hybrid MoE layer: Σ_j weight_j · expert_j(x) over the experts of one decode token that live on
// the CPU (gpt-oss-spec.md §3 steps 8–9), with the CPU path's SIMD kernels and 8-bit activations for MXFP4/Q8_0
// weights (as runtime/forward_cpu.h; the rows of all selected experts run in one oneTBB parallel region).
// Buffers are planned in create(); compute() does not allocate.

#include <cstdint>
#include <span>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/expected.h"
#include "runtime/forward_cpu.h"
#include "runtime/model.h"

namespace hetmoe {

class CpuExperts {
 public:
  /// Errors: kUnsupported when the hidden or expert FFN size is not a multiple of 32 (the CPU path's limit).
  static Expected<CpuExperts> create(const Model& model, const cpu::KernelTable& kernels, int num_threads);

  /// out[hidden_dim] = Σ_j weights[j] · expert_{expert_ids[j]}(x) of layer `layer_idx`, expert(x) = down ·
  /// swiglu_oai(gate·x + bg, up·x + bu) + bd; x[hidden_dim] f32 is the post-attention-normed hidden state.
  /// expert_ids.size() == weights.size() ≤ num_experts_used; ids valid (the caller checks). With no experts, out is
  /// zeroed. Runs in the calling thread's oneTBB arena.
  void compute(uint32_t layer_idx, const float* x, std::span<const int32_t> expert_ids, std::span<const float> weights,
               float* out);

 private:
  CpuExperts(const Model& model, const cpu::KernelTable& kernels, int num_threads);

  const Model* model_;
  const cpu::KernelTable* kernels_;
  int num_threads_ = 1;
  std::vector<cpu::ActQ8Block> xq_;      // (hidden_dim / 32) quantized x
  std::vector<float> gate_;              // (num_experts_used, expert_ffn_dim) gate, then the SwiGLU output
  std::vector<float> up_;                // (num_experts_used, expert_ffn_dim)
  std::vector<cpu::ActQ8Block> act_q8_;  // (num_experts_used, expert_ffn_dim / 32)
  std::vector<float> down_;              // (num_experts_used, hidden_dim)
  std::vector<CpuForward::MatJob> jobs_; // (2 · num_experts_used)
  std::vector<int64_t> row_begin_;       // (jobs + 1)
};

}  // namespace hetmoe
