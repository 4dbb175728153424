#pragma once
// The CPU half of a hybrid MoE layer: Σ_j weight_j · expert_j(x) over the experts of each token that live on the
// CPU (gpt-oss-spec.md §3 steps 8–9), with the CPU path's SIMD kernels and 8-bit activations for MXFP4/Q8_0
// weights (as runtime/exec/forward_cpu.h). A step's (token, expert) pairs are grouped by expert, so each expert's weights
// are read once per step (GEMV for one token, GEMM for several); all rows of a projection run in one oneTBB
// parallel region. Buffers are planned in create(); compute() does not allocate.

#include <cstdint>
#include <span>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/base/expected.h"
#include "runtime/exec/forward_cpu.h"
#include "runtime/model/model.h"

namespace hetmoe {

class CpuExperts {
 public:
  /// max_tokens: the most tokens of one compute_batch() call (≥ 1). Errors: kUnsupported when the hidden or expert
  /// FFN size is not a multiple of 32 (the CPU path's limit); kInvalidArgument for max_tokens 0 or above 4096.
  static Expected<CpuExperts> create(const Model& model, const cpu::KernelTable& kernels, int num_threads,
                                     uint32_t max_tokens = 1);

  /// out[hidden_dim] = Σ_j weights[j] · expert_{expert_ids[j]}(x) of layer `layer_idx`, expert(x) = down ·
  /// swiglu_oai(gate·x + bg, up·x + bu) + bd; x[hidden_dim] f32 is the post-attention-normed hidden state.
  /// expert_ids.size() == weights.size() ≤ num_experts_used; ids valid (the caller checks). With no experts, out is
  /// zeroed. Runs in the calling thread's oneTBB arena.
  void compute(uint32_t layer_idx, const float* x, std::span<const int32_t> expert_ids, std::span<const float> weights,
               float* out);

  /// The same for num_tokens ≤ max_tokens tokens: x (num_tokens, hidden_dim), expert_ids and weights (num_tokens,
  /// num_experts_used) where an id of −1 marks a pair that is not the CPU's (skipped); out (num_tokens, hidden_dim),
  /// zero for a token without CPU pairs.
  void compute_batch(uint32_t layer_idx, const float* x, uint32_t num_tokens, const int32_t* expert_ids,
                     const float* weights, float* out);

 private:
  CpuExperts(const Model& model, const cpu::KernelTable& kernels, int num_threads, uint32_t max_tokens);

  const Model* model_;
  const cpu::KernelTable* kernels_;
  int num_threads_ = 1;
  uint32_t max_tokens_ = 1;  // T
  // R = T · num_experts_used gathered (token, expert) rows at most.
  std::vector<cpu::ActQ8Block> xq_;         // (T, hidden_dim / 32) quantized x
  std::vector<int32_t> expert_of_group_;    // (num_experts) expert id of each group
  std::vector<uint32_t> group_begin_;       // (num_experts + 1) first gathered row of each group
  std::vector<uint32_t> gathered_token_;    // (R) token of each gathered row
  std::vector<float> gathered_weight_;      // (R) router weight of each gathered row
  std::vector<cpu::ActQ8Block> gathered_x_; // (R, hidden_dim / 32)
  std::vector<float> gathered_xf_;          // (R, hidden_dim) for non-quantized expert types
  std::vector<float> gate_;                 // (R, expert_ffn_dim) gate, then the SwiGLU output
  std::vector<float> up_;                   // (R, expert_ffn_dim)
  std::vector<cpu::ActQ8Block> act_q8_;     // (R, expert_ffn_dim / 32)
  std::vector<float> down_;                 // (R, hidden_dim)
  std::vector<int32_t> one_ids_;            // (num_experts_used) compute()'s ids
  std::vector<CpuForward::MatJob> jobs_;    // (2 · num_experts)
  std::vector<int64_t> row_begin_;          // (jobs + 1)
};

}  // namespace hetmoe
