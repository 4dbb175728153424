#pragma once
// Pieces of the CPU decode/prefill attention that depend on the KV cache's types and on splitting long key ranges
// over threads (flash-decoding): the kernels for a cache's K and V types, how many chunks a (token, KV head) task's
// keys are split into, one chunk's partial softmax, and the exact merge of the chunks with the attention sink.
//
// Split attention (gpt-oss-spec.md §3 step 4 regrouped): over chunks c of the keys, with m_c = max_j∈c s_j,
// sum_c = Σ_j∈c exp(s_j − m_c) and o_c = Σ_j∈c exp(s_j − m_c) · V_j, the sink logit σ and M = max(σ, max_c m_c):
//   out = Σ_c exp(m_c − M) · o_c / (Σ_c exp(m_c − M) · sum_c + exp(σ − M)),
// which is the unsplit softmax-with-sink attention up to float rounding.

#include <cstdint>

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

}  // namespace hetmoe
