#pragma once
// Pieces of the CPU decode/prefill attention that depend on the KV cache's types and on splitting long key ranges
// over threads (flash-decoding): the kernels for a cache's K and V types, how many chunks a (token, KV head) task's
// keys are split into, one chunk's partial softmax, and the exact merge of the chunks with the attention sink.
//
// Split attention (gpt-oss-spec.md §3 step 4 regrouped): over chunks c of the keys, with m_c = max_j∈c s_j,
// sum_c = Σ_j∈c exp(s_j − m_c) and o_c = Σ_j∈c exp(s_j − m_c) · V_j, the sink logit σ and M = max(σ, max_c m_c):
//   out = Σ_c exp(m_c − M) · o_c / (Σ_c exp(m_c − M) · sum_c + exp(σ − M)),
// which is the unsplit softmax-with-sink attention up to float rounding.
//
// Two paths compute it. attention_full / attention_chunk go key by key (all scores, then the softmax, then the
// values): the plain path the tiled one is tested against. attention_tile (what CpuForward runs) takes a tile of
// query rows — the group of query heads of one KV head, for one token (decode) or several consecutive tokens of one
// sequence (prefill) — through blocks of kAttnTileMaxKeys keys whose K rows are converted once to f32 (V rows too,
// unless they are f16 in one run of slots and the tile is small: then read in place, attn_tile_update_v_f16), with
// an online softmax (cpu::KernelTable::attn_tile_update), so each K/V row is read once per tile instead of once per
// token, and the scores stay in cache. Tiles multiply in bf16 where the kernels can and the caller allows it
// (KvTileKernels::bf16), from f16 K/V rows in place.

#include <cstdint>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/exec/kv_cache.h"

namespace hetmoe {

/// The attn_scores / attn_values kernels of `kernels` for K of k_type and V of v_type.
struct KvAttentionKernels {
  void (*scores)(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                 int64_t head_dim, float scale, float* scores, int64_t scores_stride) = nullptr;
  void (*values)(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                 int64_t num_keys, int64_t head_dim, float* out) = nullptr;
};
KvAttentionKernels kv_attention_kernels(const cpu::KernelTable& kernels, KvCacheType k_type, KvCacheType v_type);

/// Fewest keys a chunk of a split task gets: below this the merge and the extra scratch cost more than the spread
/// over threads gains (a chunk of 512 keys of head_dim 64 in f16 reads 128 KiB of K and V).
inline constexpr uint32_t kMinKeysPerAttentionChunk = 512;

/// Chunks each of num_tasks (token, KV head) tasks is split into so that num_tasks · chunks covers num_threads,
/// each chunk keeping at least kMinKeysPerAttentionChunk of min_num_keys keys (the smallest task's key count):
/// 1 (no split) when num_tasks ≥ num_threads or the keys are too few.
uint32_t attention_num_chunks(uint32_t num_tasks, uint32_t min_num_keys, int num_threads);

/// Calls body(j, run) for the runs of consecutive ring slots that key positions [first, first + num_keys) of layer
/// layer_idx occupy (at most two: the ring may wrap once); j is the offset of the run's first key from `first`.
template <class Body>
void for_each_slot_run(const KvCache& kv, uint32_t layer_idx, uint32_t first, uint32_t num_keys, Body&& body) {
  const uint32_t capacity = kv.capacity(layer_idx);
  for (uint32_t j = 0; j < num_keys;) {
    const uint32_t run = num_keys - j < capacity - (first + j) % capacity ? num_keys - j : capacity - (first + j) % capacity;
    body(j, run);
    j += run;
  }
}

/// Attention with sinks of the query group q[group][head_dim] (f32) of KV head kv_head_idx over key positions
/// [first, first + num_keys) (num_keys ≥ 1, all in the ring) of layer layer_idx, unsplit:
/// out[group][head_dim] = softmax_with_sink(scale · q·K) · V (overwritten). sinks[group]: the group's raw sink
/// logits. scores: scratch of group · num_keys floats.
void attention_full(const cpu::KernelTable& kernels, const KvAttentionKernels& kv_kernels, const KvCache& kv,
                    uint32_t layer_idx, uint32_t kv_head_idx, uint32_t first, uint32_t num_keys, const float* q,
                    uint32_t group, float scale, const float* sinks, float* scores, float* out);

/// One chunk of a split attention: the query group q[group][head_dim] (f32) of KV head kv_head_idx over key
/// positions [first, first + num_keys) (num_keys ≥ 1, all in the ring) of layer layer_idx.
/// Outputs: out[group][head_dim] = o_c (unnormalized, overwritten), max_out[group] = m_c, sum_out[group] = sum_c.
/// scores: scratch of group · num_keys floats.
void attention_chunk(const cpu::KernelTable& kernels, const KvAttentionKernels& kv_kernels, const KvCache& kv,
                     uint32_t layer_idx, uint32_t kv_head_idx, uint32_t first, uint32_t num_keys, const float* q,
                     uint32_t group, float scale, float* scores, float* out, float* max_out, float* sum_out);

/// Merges num_chunks chunks of one (token, KV head) task with the group's sinks[group] (raw logits):
/// outs[num_chunks][group][head_dim], maxs and sums [num_chunks][group] (attention_chunk's outputs) → out[group][head_dim].
void merge_attention_chunks(uint32_t num_chunks, uint32_t group, uint32_t head_dim, const float* outs,
                            const float* maxs, const float* sums, const float* sinks, float* out);

/// The f32 row converters (KernelTable::kv_rows_f32_*) for K of k_type and V of v_type.
struct KvTileKernels {
  void (*k_rows)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) = nullptr;
  void (*v_rows)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim, float* dst) = nullptr;
  /// V stored as f16: attention_tile reads the V rows in place (KernelTable::attn_tile_update_v_f16) in tiles of up to
  /// KernelTable::attn_v_f16_max_rows rows.
  bool v_f16 = false;
  /// Tiles of at least KernelTable::attn_tile_bf16_min_rows rows multiply in bf16 (attn_tile_update_bf16; with K
  /// and V in f16, in one run of slots and head_dim a multiple of 32, from the rows in place:
  /// attn_tile_update_bf16_kv_f16).
  bool bf16 = false;
  bool kv_f16 = false;  // K and V stored as f16
};
/// allow_bf16: the bf16 tile products where `kernels` has them (KernelTable::attn_tile_update_bf16).
KvTileKernels kv_tile_kernels(const cpu::KernelTable& kernels, KvCacheType k_type, KvCacheType v_type,
                              bool allow_bf16 = false);

/// Tokens per prefill attention tile: 8 tokens × 8 query heads (gpt-oss) = 64 rows, whose working set (queries,
/// one block of f32 K and V rows, scores, outputs: ~80 KiB at head_dim 64) stays in L2; every K/V row is converted
/// once per 8 tokens, and a 512-token prefill still gives 64 tiles per KV head to spread over the threads.
inline constexpr uint32_t kAttentionTileTokens = 8;

/// A tile of queries: num_tokens tokens of one sequence; token i's query group is q + i · q_token_stride
/// ([group][head_dim] f32, the query heads of the tile's KV head) and sees key positions [key_lo[i], key_hi[i]).
struct AttentionTile {
  const float* q = nullptr;
  uint64_t q_token_stride = 0;
  uint32_t num_tokens = 0;
  const uint32_t* key_lo = nullptr;
  const uint32_t* key_hi = nullptr;
  float scale = 0.0f;  // scores are scale · q·K (1 / √head_dim for gpt-oss)
};

/// Scratch of one thread's tiles of up to max_rows query rows of head_dim, and the tile's result ("part"):
/// out[rows][pitch] (unnormalized Σ_j exp(s_j − m) · V_j), max[rows] (m), sum[rows] (Σ_j exp(s_j − m)), rows =
/// cpu::attn_tile_rows(max_rows), pitch = cpu::attn_tile_pitch(head_dim), contiguous in that order (part_floats).
class AttentionTileScratch {
 public:
  AttentionTileScratch(uint32_t max_rows, uint32_t head_dim);
  uint32_t max_rows() const { return max_rows_; }
  /// Floats of a part: what a split task keeps per chunk (merge with attention_tile_combine).
  size_t part_floats() const { return part_floats_; }
  const float* part() const { return buf_.data(); }

  // Pieces for attention_tile.
  float* out() { return buf_.data(); }                                  // (rows, pitch)
  float* max() { return out() + static_cast<size_t>(rows_) * pitch_; }  // (rows)
  float* sum() { return max() + rows_; }                                // (rows)
  float* qt() { return buf_.data() + part_floats_; }                    // cpu::attn_tile_qt_floats
  float* k() { return qt() + static_cast<size_t>(rows_) * pitch_; }     // (kAttnTileMaxKeys + 1, pitch)
  float* v() { return k() + static_cast<size_t>(cpu::kAttnTileMaxKeys + 1) * pitch_; }  // (kAttnTileMaxKeys, pitch)
  float* s() { return v() + static_cast<size_t>(cpu::kAttnTileMaxKeys) * pitch_; }      // attn_tile_scores_floats
  int32_t* key_begin() { return ranges_.data(); }                        // (rows)
  int32_t* key_end() { return ranges_.data() + rows_; }                  // (rows)
  std::vector<cpu::PrefetchRange>& prefetch() { return prefetch_; }  // the next block's K/V rows

 private:
  uint32_t max_rows_ = 0, rows_ = 0, pitch_ = 0;
  size_t part_floats_ = 0;
  std::vector<float> buf_;       // part, then qt, K rows, V rows, scores
  std::vector<int32_t> ranges_;  // (2, rows)
  std::vector<cpu::PrefetchRange> prefetch_;
};

/// Online-softmax attention of the tile's num_tokens · group rows (row i · group + h: token i, query head h) against
/// KV head kv_head_idx of layer layer_idx over key positions [span_lo, span_hi) ∩ each token's range (all in the ring),
/// in blocks of cpu::kAttnTileMaxKeys keys. Result: scratch.part() (see AttentionTileScratch); a row with no key in
/// the span gets max −∞, sum 0, out 0. num_tokens · group ≤ scratch.max_rows().
void attention_tile(const cpu::KernelTable& kernels, const KvTileKernels& tile_kernels, const KvCache& kv,
                    uint32_t layer_idx, uint32_t kv_head_idx, const AttentionTile& tile, uint32_t group,
                    uint32_t span_lo, uint32_t span_hi, AttentionTileScratch& scratch);

/// Merges num_chunks parts of one tile (parts + c · part_floats, laid out as AttentionTileScratch's part for
/// max_rows rows of head_dim) with the group's sinks[group] (raw logits), as merge_attention_chunks does, and writes
/// row i · group + h, normalized, to out + i · out_token_stride + h · head_dim, for num_rows rows.
void attention_tile_combine(uint32_t num_chunks, const float* parts, size_t part_floats, uint32_t max_rows,
                            uint32_t num_rows, uint32_t group, uint32_t head_dim, const float* sinks, float* out,
                            uint64_t out_token_stride);

}  // namespace hetmoe
