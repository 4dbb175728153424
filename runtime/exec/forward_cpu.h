#pragma once
// The CPU fast path: the reference forward pass's math (runtime/exec/forward_reference.h) with SIMD kernels
// (cpu_kernels/kernels.h, ISA chosen at run time), activations quantized to 8 bits per 32 values for the MXFP4 and
// Q8_0 weights (as llama.cpp's CPU backend does, gpt-oss-spec.md §6), oneTBB threads over rows / heads / experts,
// and batched prefill: a batch's tokens are grouped by expert so each expert's weights are read once per batch.
// Every buffer is planned in create(); forward() and forward_batch() do not allocate.
// The pass runs its own sequence (KV cache and positions) through the ForwardPass interface, and other sequences of
// create_sequence() through forward_sequence() and forward_group(): the batch's tokens may belong to several
// sequences, each token attending to its own sequence's KV cache at its own position (CpuMultiForward,
// runtime/exec/multi_forward_cpu.h, serves several slots that way).

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include "cpu_kernels/kernels.h"
#include "profiler/trace.h"
#include "runtime/base/expected.h"
#include "runtime/backend/forward_pass.h"
#include "runtime/exec/attention_cpu.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe {

struct CpuForwardOptions {
  uint32_t context_length = 8192;
  KvCacheType kv_type = KvCacheType::kF16;  // KV cache: K's type, and V's unless kv_type_v is set (kv_type.h)
  std::optional<KvCacheType> kv_type_v;
  int num_threads = 0;           // 0 = all cores
  uint32_t max_batch_tokens = 64;  // prefill tokens processed together (buffers are sized for it)
  uint32_t rollback_slots = 0;     // positions truncate() may go back; costs this many sliding-ring slots per layer
  /// Attention tiles (prefill and decode, ≥ KernelTable::attn_tile_bf16_min_rows rows) multiply in bf16 where the
  /// kernels have bf16 products (attention_cpu.h: KvTileKernels::bf16; gpt-oss's own attention precision). Off by
  /// default: the logits then differ from the f32 attention's by more than rounding.
  bool attention_bf16 = false;
  /// Hook for thread placement: an arena the caller configured (pinned workers, NUMA constraints; the placement
  /// issue attaches a task_scheduler_observer to it) and keeps alive. nullptr: an own arena of num_threads.
  tbb::task_arena* arena = nullptr;
  /// Kept alive as long as the forward pass (e.g. the WorkerPool that owns `arena`, runtime/exec/worker_pool.h).
  std::shared_ptr<void> arena_owner;
  /// Several NUMA nodes: the arena of each node (node_arenas[0] is `arena`) and the node of every expert,
  /// expert_node[layer * num_experts + expert] indexing node_arenas (placement::shard_experts). Expert jobs then run
  /// in their node's arena, all nodes at once; everything else in `arena`. Arenas after the first must keep no slot
  /// for external threads (WorkerPool's do not): their work is handed over with a task_group. Empty: one arena.
  std::vector<tbb::task_arena*> node_arenas;
  std::vector<uint8_t> expert_node;
  /// Expert selection counts (num_layers, num_experts), incremented for every expert the router chooses for every
  /// token (placement/expert_stats.h); the caller owns the buffer and keeps it alive. nullptr: not counted.
  /// Incremented with relaxed atomic adds (std::atomic_ref), so another thread may read them meanwhile with
  /// std::atomic_ref loads (the server's /metrics).
  uint64_t* expert_counts = nullptr;
};

class CpuForward final : public ForwardPass {
 public:
  /// A sequence's state: its KV cache and the positions it holds.
  struct Sequence {
    KvCache kv;
    uint32_t num_positions = 0;
    uint32_t furthest_written = 0;  // most positions processed since reset (updated at truncate)
  };
  /// One token of a decode group: the next token of `sequence`, its logits to `logits` (vocab_size f32; empty: not
  /// computed).
  struct GroupToken {
    Sequence* sequence = nullptr;
    int32_t token_id = 0;
    std::span<float> logits;
  };

  /// Plans all buffers and the KV cache. Errors: KvCache::create's (context out of range, allocation failure);
  /// kInvalidArgument for max_batch_tokens 0 or above 4096.
  static Expected<std::unique_ptr<CpuForward>> create(const Model& model, const CpuForwardOptions& options,
                                                      const cpu::KernelTable& kernels);

  Status forward(int32_t token_id, std::span<float> logits_out) override;
  Status forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) override;
  uint32_t num_positions() const override { return own_.num_positions; }
  uint32_t context_length() const override { return own_.kv.context_length(); }
  uint32_t vocab_size() const override { return model_->hparams.vocab_size; }
  void reset() override { reset_sequence(own_); }
  /// Allowed when (the furthest position count ever reached since reset) − num_positions ≤ rollback_slots (see
  /// CpuForwardOptions): a truncate after a truncate and a shorter write is measured from the furthest write.
  Status truncate(uint32_t num_positions) override { return truncate_sequence(own_, num_positions); }
  /// Position p's K/V repeat those of p − period, period = min(num_positions(), the smallest sliding window).
  Status append_repeated_positions(uint32_t num_positions) override;

  // ---- Several sequences through this pass's weights, buffers and threads (one caller thread at a time). ----
  /// The pass's own sequence (the one the ForwardPass interface runs).
  Sequence& sequence() { return own_; }
  /// A new empty sequence with a KV cache like the pass's own (same context, type and spare ring slots).
  /// Errors: KvCache::create's (allocation failure).
  Expected<Sequence> create_sequence() const;
  /// forward_batch's checks for running token_ids on `sequence`: its errors, and nothing is changed.
  Status check_step(const Sequence& sequence, std::span<const int32_t> token_ids, std::span<float> last_logits) const;
  /// forward_batch on `sequence` (the pass's own or one of create_sequence()'s): the same batches, the same bits.
  Status forward_sequence(Sequence& sequence, std::span<const int32_t> token_ids, std::span<float> last_logits);
  /// Most tokens forward_group() takes: below cpu::kGemmMatchesGemvBelowTokens (every matrix product over the group
  /// then gives each token the bits of its one-token GEMV) and at most max_batch_tokens.
  uint32_t max_group_tokens() const;
  /// One decode token for each of up to max_group_tokens() distinct sequences, as one batch: the dense matrices
  /// (q/k/v/o, router, unembedding) as one GEMM over the group, each expert's weights read once for the group's
  /// tokens routed to it, each token's attention against its own sequence's KV cache at its own position. Every
  /// token's logits and KV entries are bit for bit those of forward_sequence(its sequence, {its token}) run alone
  /// (same kernels' sums, experts added in the same order). Errors: kInvalidArgument for an empty or too large group,
  /// a missing or repeated sequence, or a token check_step refuses; nothing runs then.
  Status forward_group(std::span<const GroupToken> tokens);
  static void reset_sequence(Sequence& sequence) { sequence.num_positions = sequence.furthest_written = 0; }
  /// truncate() on `sequence`.
  Status truncate_sequence(Sequence& sequence, uint32_t num_positions) const;

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
  /// Runs a batch of num_tokens ≤ max_batch_tokens whose embeddings are in x_ and whose sequence, position and
  /// logits buffer are in token_sequence_, token_pos_, token_logits_ (validated by the caller); advances each
  /// token's sequence by one position. step_name: the trace span's ("decode" or "prefill").
  void run_batch(uint32_t num_tokens, const char* step_name);
  /// Writes the logits of the batch's tokens that want them (token_logits_): one GEMM over up to max_group_tokens()
  /// of them (a GEMV for one).
  void output_layer(uint32_t num_tokens);
  void attention_layer(uint32_t layer_idx, uint32_t num_tokens);
  void moe_layer(uint32_t layer_idx, uint32_t num_tokens);
  /// Quantizes rows [num_tokens][num_cols] of src into dst [num_tokens][num_cols / 32].
  void quantize_rows(const float* src, cpu::ActQ8Block* dst, uint32_t num_tokens, uint32_t num_cols);
  /// xb_ ← RMSNorm(x_) · weight and xq_ ← its int8 blocks, num_tokens rows of hidden_dim. Both this and quantize_rows
  /// split a batch's rows over the workers (rows independent: the same bits as on one thread).
  void norm_and_quantize(const std::vector<float>& weight, uint32_t num_tokens);
  /// Runs all jobs' rows in one parallel region (run_mat_jobs); adds biases. When tracing, each lane's rows are
  /// recorded as `trace` says (profiler::TraceWorkLane).
  void run_jobs(std::span<const MatJob> jobs, const profiler::TraceWorkInfo& trace);
  /// run_jobs for expert jobs of layer layer_idx: with several node arenas, each node's jobs in its own arena.
  void run_expert_jobs(uint32_t layer_idx, std::span<const MatJob> jobs, const profiler::TraceWorkInfo& trace);

  const Model* model_;
  Sequence own_;
  uint32_t kv_extra_slots_ = 0;  // spare sliding-ring slots of every sequence's KV cache
  const cpu::KernelTable* kernels_;
  std::unique_ptr<tbb::task_arena> own_arena_;
  tbb::task_arena* arena_ = nullptr;
  std::shared_ptr<void> arena_owner_;
  std::vector<tbb::task_arena*> node_arenas_;  // (nodes) empty or more than one
  std::vector<uint8_t> expert_node_;           // (num_layers, num_experts) index into node_arenas_
  std::vector<std::unique_ptr<tbb::task_group>> node_groups_;  // (nodes) expert work handed to nodes 1..
  std::vector<MatJob> node_jobs_;              // (3 · num_experts + 3) a layer's expert jobs grouped by node
  std::vector<size_t> node_job_begin_;         // (nodes + 1) first job of each node in node_jobs_
  std::vector<size_t> node_job_next_;          // (nodes) fill cursor of each node while grouping
  std::vector<int64_t> node_row_begin_;        // (nodes, jobs + 1) row prefix sums of each node's jobs
  int num_threads_ = 1;
  uint32_t max_batch_ = 1;
  uint32_t rollback_slots_ = 0;
  bool attention_bf16_ = false;  // CpuForwardOptions::attention_bf16
  uint64_t* expert_counts_ = nullptr;  // (num_layers, num_experts) or nullptr, incremented atomically (relaxed)

  // Buffers for up to max_batch_ tokens (B), planned in the constructor.
  std::vector<Sequence*> token_sequence_;  // (B) the sequence of each token of the batch in flight
  std::vector<uint32_t> token_pos_;        // (B) its position there
  std::vector<float*> token_logits_;       // (B) where its logits go (vocab_size floats), or nullptr
  std::vector<float> group_logits_;        // (max_group_tokens, vocab_size) the output GEMM's rows for a group
  std::vector<float> x_;             // (B, hidden_dim) residual stream
  std::vector<float> xb_;            // (B, hidden_dim) normed block input
  std::vector<cpu::ActQ8Block> xq_;  // (B, hidden_dim / 32) quantized xb_
  std::vector<float> qkv_;           // (B, q_dim + 2 kv_dim): q | k | v per token
  std::vector<float> attn_out_;      // (B, q_dim)
  std::vector<cpu::ActQ8Block> attn_q8_;  // (B, q_dim / 32)
  std::vector<float> proj_;          // (B, hidden_dim) attention output projection
  std::vector<AttentionTileScratch> tile_scratch_;  // (num_threads + 1) attention tiles, per worker
  std::vector<uint32_t> tile_begin_;  // (B + 1) first token of each attention tile of the batch, then the end
  std::vector<float> attn_chunks_;   // split attention (attention_cpu.h): per (tile, KV head, chunk) a tile's part
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
  std::vector<uint32_t> token_rows_;       // (B, num_experts_used) each token's gathered rows, ascending
  std::vector<uint32_t> token_num_rows_;   // (B) scratch: rows recorded per token
  std::vector<cpu::ActQ8Block> gathered_x_;  // (B · num_experts_used, hidden_dim / 32)
  std::vector<float> gathered_xf_;           // (B · num_experts_used, hidden_dim) for non-quantized expert types
  std::vector<float> gate_;            // (B · num_experts_used, expert_ffn_dim)
  std::vector<float> up_;              // (B · num_experts_used, expert_ffn_dim)
  std::vector<cpu::ActQ8Block> act_q8_;  // (B · num_experts_used, expert_ffn_dim / 32)
  std::vector<float> down_;            // (B · num_experts_used, hidden_dim)
  std::vector<MatJob> jobs_;           // (3 · num_experts + 3) scratch job list
  std::vector<int64_t> job_row_begin_; // (jobs + 1) prefix sums of job rows, each padded to a multiple of 16
};

/// How run_mat_jobs cuts `total` rows (a multiple of 16, the jobs' rows each padded to 16) into chunks of whole
/// 16-row groups; lanes claim their own chunks in order, then the others' unclaimed ones.
/// - Fewer than 16 tokens per job (decode, small batches: `guided`): lane w owns rows [⌊T/16·w/L⌋·16,
///   ⌊T/16·(w+1)/L⌋·16), cut into per_lane chunks of half the lane's remaining rows each, down to kMatChunkMinRows
///   (guided self-scheduling): a phase ends with chunks of ~1 µs, with about as many chunks as uniform eighths had
///   (decode traces, Zen 4: the two lanes finished a phase 7–13 µs apart with eighths, 110 µs for the unembedding;
///   1–3 µs guided).
/// - Batches (any job with ≥ 16 tokens): uniform chunks of ~total / (32 · L) rows (a chunk of prefill's experts took
///   ~7 ms with 8 per lane, and a phase ended with one lane idle for most of one).
inline constexpr int64_t kMatChunkMinRows = 32;
struct MatChunks {
  int64_t total = 0;
  int64_t num_lanes = 1;
  bool guided = false;
  int64_t per_lane = 1;  // guided: chunks per lane
  int64_t grain = 16;    // uniform: rows per chunk
  int64_t num_chunks() const;
  /// The first row of chunk chunk_idx; begin(num_chunks()) = total. Non-decreasing, multiples of 16 (chunks may be
  /// empty where a lane has few rows).
  int64_t begin(int64_t chunk_idx) const;
};
MatChunks mat_chunks(int64_t total, int num_lanes, bool batched);

/// Runs all rows of `jobs` in one oneTBB parallel region of the calling arena (num_threads lanes, chunks as
/// mat_chunks cuts them, every job starting a 16-row group) and adds the biases. row_begin: scratch of at least
/// jobs.size() + 1 entries. When tracing, each lane's rows are recorded as `trace` says (one span per lane and job,
/// profiler::TraceWorkLane). Shared by CpuForward and the CPU experts of the hybrid step.
void run_mat_jobs(const cpu::KernelTable& kernels, std::span<const CpuForward::MatJob> jobs, int num_threads,
                  std::span<int64_t> row_begin, const profiler::TraceWorkInfo& trace = {});

}  // namespace hetmoe
