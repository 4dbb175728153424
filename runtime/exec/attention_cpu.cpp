#include "runtime/exec/attention_cpu.h"

#include <algorithm>
#include <cmath>

namespace hetmoe {

namespace {

/// The kernel of `type` among the four.
template <class Fn>
Fn for_type(KvCacheType type, Fn f16, Fn f32, Fn q8_0, Fn q4_0) {
  switch (type) {
    case KvCacheType::kF16:
      return f16;
    case KvCacheType::kF32:
      return f32;
    case KvCacheType::kQ8_0:
      return q8_0;
    case KvCacheType::kQ4_0:
      return q4_0;
  }
  return nullptr;
}

}  // namespace

KvAttentionKernels kv_attention_kernels(const cpu::KernelTable& kernels, KvCacheType k_type, KvCacheType v_type) {
  KvAttentionKernels k;
  k.scores = for_type(k_type, kernels.attn_scores_f16, kernels.attn_scores_f32, kernels.attn_scores_q8_0,
                      kernels.attn_scores_q4_0);
  k.values = for_type(v_type, kernels.attn_values_f16, kernels.attn_values_f32, kernels.attn_values_q8_0,
                      kernels.attn_values_q4_0);
  return k;
}

uint32_t attention_num_chunks(uint32_t num_tasks, uint32_t min_num_keys, int num_threads) {
  if (num_tasks == 0 || num_threads <= 0 || num_tasks >= static_cast<uint32_t>(num_threads)) return 1;
  const uint32_t wanted = (static_cast<uint32_t>(num_threads) + num_tasks - 1) / num_tasks;
  return std::max(1u, std::min(wanted, min_num_keys / kMinKeysPerAttentionChunk));
}

void attention_full(const cpu::KernelTable& kernels, const KvAttentionKernels& kv_kernels, const KvCache& kv,
                    uint32_t layer_idx, uint32_t kv_head_idx, uint32_t first, uint32_t num_keys, const float* q,
                    uint32_t group, float scale, const float* sinks, float* scores, float* out) {
  const auto hd = static_cast<int64_t>(kv.head_dim());
  const auto k_stride = static_cast<int64_t>(kv.k_stride_bytes());
  const auto v_stride = static_cast<int64_t>(kv.v_stride_bytes());
  for_each_slot_run(kv, layer_idx, first, num_keys, [&](uint32_t j, uint32_t run) {
    kv_kernels.scores(q, group, kv.k_row(layer_idx, first + j, kv_head_idx), k_stride, run, hd, scale, scores + j,
                      num_keys);
  });
  for (uint32_t h = 0; h < group; ++h)  // the sink is a raw logit, not scaled
    kernels.softmax_with_sink(&scores[static_cast<size_t>(h) * num_keys], num_keys, sinks[h]);
  std::fill(out, out + group * hd, 0.0f);
  for_each_slot_run(kv, layer_idx, first, num_keys, [&](uint32_t j, uint32_t run) {
    kv_kernels.values(scores + j, num_keys, group, kv.v_row(layer_idx, first + j, kv_head_idx), v_stride, run, hd, out);
  });
}

void attention_chunk(const cpu::KernelTable& kernels, const KvAttentionKernels& kv_kernels, const KvCache& kv,
                     uint32_t layer_idx, uint32_t kv_head_idx, uint32_t first, uint32_t num_keys, const float* q,
                     uint32_t group, float scale, float* scores, float* out, float* max_out, float* sum_out) {
  const auto hd = static_cast<int64_t>(kv.head_dim());
  const auto k_stride = static_cast<int64_t>(kv.k_stride_bytes());
  const auto v_stride = static_cast<int64_t>(kv.v_stride_bytes());
  for_each_slot_run(kv, layer_idx, first, num_keys, [&](uint32_t j, uint32_t run) {
    kv_kernels.scores(q, group, kv.k_row(layer_idx, first + j, kv_head_idx), k_stride, run, hd, scale, scores + j,
                      num_keys);
  });
  for (uint32_t h = 0; h < group; ++h)
    sum_out[h] = kernels.softmax_partial(&scores[static_cast<size_t>(h) * num_keys], num_keys, &max_out[h]);
  std::fill(out, out + group * hd, 0.0f);
  for_each_slot_run(kv, layer_idx, first, num_keys, [&](uint32_t j, uint32_t run) {
    kv_kernels.values(scores + j, num_keys, group, kv.v_row(layer_idx, first + j, kv_head_idx), v_stride, run, hd, out);
  });
}

void merge_attention_chunks(uint32_t num_chunks, uint32_t group, uint32_t head_dim, const float* outs,
                            const float* maxs, const float* sums, const float* sinks, float* out) {
  for (uint32_t h = 0; h < group; ++h) {
    float m = sinks[h];
    for (uint32_t c = 0; c < num_chunks; ++c) m = std::max(m, maxs[c * group + h]);
    float z = std::exp(sinks[h] - m);
    float* o = out + static_cast<size_t>(h) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    for (uint32_t c = 0; c < num_chunks; ++c) {
      const float w = std::exp(maxs[c * group + h] - m);
      z += w * sums[c * group + h];
      const float* oc = outs + (static_cast<size_t>(c) * group + h) * head_dim;
      for (uint32_t i = 0; i < head_dim; ++i) o[i] += w * oc[i];
    }
    const float inv = 1.0f / z;
    for (uint32_t i = 0; i < head_dim; ++i) o[i] *= inv;
  }
}

}  // namespace hetmoe
