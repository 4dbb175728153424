#include "runtime/exec/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

KvTileKernels kv_tile_kernels(const cpu::KernelTable& kernels, KvCacheType k_type, KvCacheType v_type,
                              bool allow_bf16) {
  KvTileKernels k;
  k.k_rows = for_type(k_type, kernels.kv_rows_f32_f16, kernels.kv_rows_f32_f32, kernels.kv_rows_f32_q8_0,
                      kernels.kv_rows_f32_q4_0);
  k.v_rows = for_type(v_type, kernels.kv_rows_f32_f16, kernels.kv_rows_f32_f32, kernels.kv_rows_f32_q8_0,
                      kernels.kv_rows_f32_q4_0);
  k.v_f16 = v_type == KvCacheType::kF16;
  k.bf16 = allow_bf16 && kernels.attn_tile_update_bf16 != nullptr && kernels.attn_tile_pack_q_bf16 != nullptr;
  k.kv_f16 = k_type == KvCacheType::kF16 && v_type == KvCacheType::kF16;
  return k;
}

AttentionTileScratch::AttentionTileScratch(uint32_t max_rows, uint32_t head_dim)
    : max_rows_(max_rows),
      rows_(static_cast<uint32_t>(cpu::attn_tile_rows(max_rows))),
      pitch_(static_cast<uint32_t>(cpu::attn_tile_pitch(head_dim))) {
  part_floats_ = static_cast<size_t>(rows_) * (pitch_ + 2);
  const size_t qt = static_cast<size_t>(cpu::attn_tile_qt_floats(max_rows, head_dim));
  const size_t kv = static_cast<size_t>(2 * cpu::kAttnTileMaxKeys + 1) * pitch_;
  buf_.assign(part_floats_ + qt + kv + static_cast<size_t>(cpu::attn_tile_scores_floats(max_rows)), 0.0f);
  ranges_.assign(2 * static_cast<size_t>(rows_), 0);
}

void attention_tile(const cpu::KernelTable& kernels, const KvTileKernels& tile_kernels, const KvCache& kv,
                    uint32_t layer_idx, uint32_t kv_head_idx, const AttentionTile& tile, uint32_t group,
                    uint32_t span_lo, uint32_t span_hi, AttentionTileScratch& scratch) {
  const auto hd = static_cast<int64_t>(kv.head_dim());
  const int64_t pitch = cpu::attn_tile_pitch(hd);
  const uint32_t num_rows = tile.num_tokens * group;
  const int64_t rows = cpu::attn_tile_rows(num_rows);
  float* out = scratch.out();
  float* max = scratch.max();
  float* sum = scratch.sum();
  std::fill(out, out + rows * pitch, 0.0f);
  std::fill(max, max + rows, -std::numeric_limits<float>::infinity());
  std::fill(sum, sum + rows, 0.0f);
  float* qt = scratch.qt();
  std::fill(qt, qt + cpu::attn_tile_qt_floats(num_rows, hd), 0.0f);
  // bf16 products where allowed (KvTileKernels::bf16); the bf16 qt takes the first half of the f32 qt's bytes.
  const bool bf16 = tile_kernels.bf16 && num_rows >= kernels.attn_tile_bf16_min_rows;
  auto* qt16 = reinterpret_cast<uint16_t*>(qt);
  for (uint32_t i = 0; i < tile.num_tokens; ++i) {
    const float* q = tile.q + i * tile.q_token_stride;
    if (bf16)
      kernels.attn_tile_pack_q_bf16(q, group, hd, static_cast<int64_t>(i) * group, qt16);
    else
      kernels.attn_tile_pack_q(q, group, hd, static_cast<int64_t>(i) * group, qt);
  }

  const auto k_stride = static_cast<int64_t>(kv.k_stride_bytes());
  const auto v_stride = static_cast<int64_t>(kv.v_stride_bytes());
  float* k = scratch.k();
  float* v = scratch.v();
  int32_t* key_begin = scratch.key_begin();
  int32_t* key_end = scratch.key_end();
  const uint32_t capacity = kv.capacity(layer_idx);
  const bool v_in_place_ok = !bf16 && tile_kernels.v_f16 && hd == pitch && num_rows <= kernels.attn_v_f16_max_rows;
  const bool bf16_in_place_ok = bf16 && tile_kernels.kv_f16 && hd == pitch &&
                                kernels.attn_tile_update_bf16_kv_f16 != nullptr;
  // Blocks start at multiples of kAttnTileMaxKeys (the first one may begin before span_lo: those keys are masked, and
  // their ring slots hold finite rows of some position), so a row sees the same blocks — the same running maxima, and
  // in bf16 the same rounded probabilities — in a prefill tile and in a decode tile of its own.
  constexpr auto kBlock = static_cast<uint32_t>(cpu::kAttnTileMaxKeys);
  for (uint32_t block = span_lo - span_lo % kBlock; block < span_hi; block += kBlock) {
    const auto n = static_cast<uint32_t>(std::min<int64_t>(kBlock, span_hi - block));
    bool any = false;
    for (uint32_t i = 0; i < tile.num_tokens; ++i) {
      // Token i's keys inside the block and the span, as offsets from the block's start.
      const uint32_t lo = std::clamp(std::max(tile.key_lo[i], span_lo), block, block + n) - block;
      const uint32_t hi = std::clamp(tile.key_hi[i], block, block + n) - block;
      any |= lo < hi;
      for (uint32_t h = 0; h < group; ++h) {
        key_begin[i * group + h] = static_cast<int32_t>(lo);
        key_end[i * group + h] = static_cast<int32_t>(std::max(lo, hi));
      }
    }
    if (!any) continue;
    // f16 V rows are read in place when the block is one run of slots and the kernels say the tile is small enough
    // (KernelTable::attn_v_f16_max_rows): widening them inside the values loop (once per row group) costs less than
    // the f32 copy's stores and loads, and keeps the block's working set in L1.
    const bool one_run = block % capacity + n <= capacity;
    const bool v_in_place = v_in_place_ok && one_run;
    const bool kv_in_place = bf16_in_place_ok && one_run;  // bf16 products from the f16 rows themselves
    if (!kv_in_place) {
      for_each_slot_run(kv, layer_idx, block, n, [&](uint32_t j, uint32_t run) {
        tile_kernels.k_rows(kv.k_row(layer_idx, block + j, kv_head_idx), k_stride, run, hd, k + j * pitch);
        if (!v_in_place)
          tile_kernels.v_rows(kv.v_row(layer_idx, block + j, kv_head_idx), v_stride, run, hd, v + j * pitch);
      });
      if (n % 2 != 0) std::fill(k + n * pitch, k + (n + 1) * pitch, 0.0f);  // read by the SIMD scores, masked
    }
    // The next block's K/V rows (one byte range per slot run), prefetched while this block computes.
    std::vector<cpu::PrefetchRange>& ranges = scratch.prefetch();
    ranges.clear();
    const uint32_t next = block + n;
    if (next < span_hi) {
      const auto next_n = static_cast<uint32_t>(std::min<int64_t>(cpu::kAttnTileMaxKeys, span_hi - next));
      for_each_slot_run(kv, layer_idx, next, next_n, [&](uint32_t j, uint32_t run) {
        ranges.push_back({kv.k_row(layer_idx, next + j, kv_head_idx), k_stride * run});
        ranges.push_back({kv.v_row(layer_idx, next + j, kv_head_idx), v_stride * run});
      });
    }
    if (kv_in_place)
      kernels.attn_tile_update_bf16_kv_f16(qt16, num_rows, kv.k_row(layer_idx, block, kv_head_idx), k_stride,
                                           kv.v_row(layer_idx, block, kv_head_idx), v_stride, n, hd, tile.scale,
                                           key_begin, key_end, scratch.s(), max, sum, out, ranges.data(),
                                           static_cast<int64_t>(ranges.size()));
    else if (bf16)
      kernels.attn_tile_update_bf16(qt16, num_rows, k, v, n, hd, tile.scale, key_begin, key_end, scratch.s(), max, sum,
                                    out, ranges.data(), static_cast<int64_t>(ranges.size()));
    else if (v_in_place)
      kernels.attn_tile_update_v_f16(qt, num_rows, k, kv.v_row(layer_idx, block, kv_head_idx), v_stride, n, hd,
                                     tile.scale, key_begin, key_end, scratch.s(), max, sum, out, ranges.data(),
                                     static_cast<int64_t>(ranges.size()));
    else
      kernels.attn_tile_update(qt, num_rows, k, v, n, hd, tile.scale, key_begin, key_end, scratch.s(), max, sum, out,
                               ranges.data(), static_cast<int64_t>(ranges.size()));
  }
}

void attention_tile_combine(uint32_t num_chunks, const float* parts, size_t part_floats, uint32_t max_rows,
                            uint32_t num_rows, uint32_t group, uint32_t head_dim, const float* sinks, float* out,
                            uint64_t out_token_stride) {
  const auto rows = static_cast<size_t>(cpu::attn_tile_rows(max_rows));
  const auto pitch = static_cast<size_t>(cpu::attn_tile_pitch(head_dim));
  for (uint32_t r = 0; r < num_rows; ++r) {
    const float sink = sinks[r % group];
    float m = sink;
    for (uint32_t c = 0; c < num_chunks; ++c) m = std::max(m, parts[c * part_floats + rows * pitch + r]);
    float z = std::exp(sink - m);
    float* o = out + (r / group) * out_token_stride + (r % group) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    for (uint32_t c = 0; c < num_chunks; ++c) {
      const float* part = parts + c * part_floats;
      const float w = std::exp(part[rows * pitch + r] - m);  // 0 for a chunk without keys (max −∞)
      z += w * part[rows * pitch + rows + r];
      const float* oc = part + r * pitch;
      for (uint32_t i = 0; i < head_dim; ++i) o[i] += w * oc[i];
    }
    const float inv = 1.0f / z;
    for (uint32_t i = 0; i < head_dim; ++i) o[i] *= inv;
  }
}

}  // namespace hetmoe
