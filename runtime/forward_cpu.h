#pragma once
// The CPU fast path: the reference forward pass's math (runtime/forward_reference.h) with SIMD kernels
// (cpu_kernels/kernels.h, ISA chosen at run time), activations quantized to 8 bits per 32 values for the MXFP4 and
// Q8_0 weights (as llama.cpp's CPU backend does, gpt-oss-spec.md §6), oneTBB threads over rows / heads / experts,
// and batched prefill: a batch's tokens are grouped by expert so each expert's weights are read once per batch.
// Every buffer is planned in create(); forward() and forward_batch() do not allocate.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <tbb/task_arena.h>

#include "cpu_kernels/kernels.h"
#include "runtime/expected.h"
#include "runtime/forward_pass.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace hetmoe {

struct CpuForwardOptions {
  uint32_t context_length = 8192;
  KvCacheType kv_type = KvCacheType::kF16;
  int num_threads = 0;           // 0 = all cores
  uint32_t max_batch_tokens = 64;  // prefill tokens processed together (buffers are sized for it)
  uint32_t rollback_slots = 0;     // positions truncate() may go back; costs this many sliding-ring slots per layer
  /// Hook for thread placement: an arena the caller configured (pinned workers, NUMA constraints; the placement
  /// issue attaches a task_scheduler_observer to it) and keeps alive. nullptr: an own arena of num_threads.
  tbb::task_arena* arena = nullptr;
};

class CpuForward final : public ForwardPass {
 public:
  /// Plans all buffers and the KV cache. Errors: KvCache::create's (context out of range, allocation failure);
  /// kInvalidArgument for max_batch_tokens 0 or above 4096.
  static Expected<std::unique_ptr<CpuForward>> create(const Model& model, const CpuForwardOptions& options,
                                                      const cpu::KernelTable& kernels);

  Status forward(int32_t token_id, std::span<float> logits_out) override;
  Status forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) override;
  uint32_t num_positions() const override { return num_positions_; }
  uint32_t context_length() const override { return kv_.context_length(); }
  uint32_t vocab_size() const override { return model_->hparams.vocab_size; }
  void reset() override { num_positions_ = 0; }
  /// Allowed when num_positions() − num_positions ≤ rollback_slots (see CpuForwardOptions).
  Status truncate(uint32_t num_positions) override;

  const cpu::KernelTable& kernels() const { return *kernels_; }
  int num_threads() const { return num_threads_; }

  /// One matrix-vector (or matrix-batch) product to run as part of a parallel region. Public for tests.
  struct MatJob {
    const WeightView* w = nullptr;
    uint64_t expert_idx = 0;
    const float* x_f32 = nullptr;             // [num_tokens][num_cols] (F32/F16/BF16 weights)
    const cpu::ActQ8Block* x_q8 = nullptr;    // [num_tokens][num_cols / 32] (Q8_0/MXFP4 weights)
    int64_t num_tokens = 1;
    float* y = nullptr;                       // [num_tokens][y_stride], row r of token t at y[t * y_stride + r]
    int64_t y_stride = 0;
    const float* bias = nullptr;              // (num_rows) or nullptr
  };

 private:
  CpuForward(const Model& model, KvCache kv, const CpuForwardOptions& options, const cpu::KernelTable& kernels);
  /// Runs a batch of num_tokens ≤ max_batch_tokens whose embeddings are in x_ (validated by the caller).
  void run_batch(uint32_t num_tokens, std::span<float> last_logits);
  void attention_layer(uint32_t layer_idx, uint32_t num_tokens);
  void moe_layer(uint32_t layer_idx, uint32_t num_tokens);
  /// Quantizes rows [num_tokens][num_cols] of src into dst [num_tokens][num_cols / 32].
  void quantize_rows(const float* src, cpu::ActQ8Block* dst, uint32_t num_tokens, uint32_t num_cols);
  /// Runs all jobs' rows in one parallel region; adds biases.
  void run_jobs(std::span<const MatJob> jobs);

  const Model* model_;
  KvCache kv_;
  const cpu::KernelTable* kernels_;
  std::unique_ptr<tbb::task_arena> own_arena_;
  tbb::task_arena* arena_ = nullptr;
  int num_threads_ = 1;
  uint32_t max_batch_ = 1;
  uint32_t rollback_slots_ = 0;
  uint32_t num_positions_ = 0;

  // Buffers for up to max_batch_ tokens (B), planned in the constructor.
  std::vector<float> x_;             // (B, hidden_dim) residual stream
  std::vector<float> xb_;            // (B, hidden_dim) normed block input
  std::vector<cpu::ActQ8Block> xq_;  // (B, hidden_dim / 32) quantized xb_
  std::vector<float> qkv_;           // (B, q_dim + 2 kv_dim): q | k | v per token
  std::vector<float> attn_out_;      // (B, q_dim)
  std::vector<cpu::ActQ8Block> attn_q8_;  // (B, q_dim / 32)
  std::vector<float> proj_;          // (B, hidden_dim) attention output projection
  std::vector<float> scores_;        // (num_threads + 1, group, context) attention logits per worker
  std::vector<float> rope_cos_;      // (B, head_dim / 2)
  std::vector<float> rope_sin_;      // (B, head_dim / 2)
  std::vector<float> router_;        // (B, num_experts)
  std::vector<int32_t> chosen_;      // (B, num_experts_used) selected experts
  std::vector<float> chosen_w_;      // (B, num_experts_used) their softmax weights
  // Tokens grouped by expert: for expert slot s (0..num_distinct), rows of the gathered batch.
  std::vector<int32_t> expert_of_group_;   // (num_experts) expert id of each group
  std::vector<uint32_t> group_begin_;      // (num_experts + 1) first gathered row of each group
  std::vector<uint32_t> gathered_token_;   // (B · num_experts_used) token of each gathered row
  std::vector<float> gathered_weight_;     // (B · num_experts_used) router weight of each gathered row
  std::vector<cpu::ActQ8Block> gathered_x_;  // (B · num_experts_used, hidden_dim / 32)
  std::vector<float> gathered_xf_;           // (B · num_experts_used, hidden_dim) for non-quantized expert types
  std::vector<float> gate_;            // (B · num_experts_used, expert_ffn_dim)
  std::vector<float> up_;              // (B · num_experts_used, expert_ffn_dim)
  std::vector<cpu::ActQ8Block> act_q8_;  // (B · num_experts_used, expert_ffn_dim / 32)
  std::vector<float> down_;            // (B · num_experts_used, hidden_dim)
  std::vector<MatJob> jobs_;           // (3 · num_experts + 3) scratch job list
  std::vector<int64_t> job_row_begin_; // (jobs + 1) prefix sums of job rows
};

/// Runs all rows of `jobs` in one oneTBB parallel region of the calling arena (about 8 chunks per thread of
/// num_threads) and adds the biases. row_begin: scratch of at least jobs.size() + 1 entries. Shared by CpuForward and
/// the CPU experts of the hybrid step (runtime/cpu_experts.h).
void run_mat_jobs(const cpu::KernelTable& kernels, std::span<const CpuForward::MatJob> jobs, int num_threads,
                  std::span<int64_t> row_begin);

}  // namespace hetmoe
