#pragma once
// KV cache for gpt-oss: per layer, K (after RoPE) and V of every cached position.
// Sliding-window layers keep only the last positions in a ring buffer (slot = pos % capacity) of
// sliding_window + extra_sliding_slots slots: the extra slots let a prefill batch of up to extra_sliding_slots + 1
// tokens be stored before its attention runs without overwriting keys the batch's earlier tokens still see.
// Full-attention layers keep the whole context (slot = pos). K and V each have their own type (kv_type.h): f16
// (default), f32, or ggml's q8_0 / q4_0 blocks (quantized on store, 32 values per block along head_dim).

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/base/expected.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"

namespace hetmoe {

class KvCache {
 public:
  /// Plans the cache for `context_length` positions. Memory is reserved (virtual) up front but pages are
  /// committed only when written. Errors: kInvalidArgument if context_length is 0 or exceeds the model's
  /// trained context (hp.context_length), or a quantized type does not fit head_dim (check_kv_cache_type).
  static Expected<KvCache> create(const ModelHparams& hp, uint32_t context_length, KvCacheType k_type,
                                  KvCacheType v_type, uint32_t extra_sliding_slots = 0);
  /// K and V of one type.
  static Expected<KvCache> create(const ModelHparams& hp, uint32_t context_length, KvCacheType type,
                                  uint32_t extra_sliding_slots = 0) {
    return create(hp, context_length, type, type, extra_sliding_slots);
  }

  /// Stores K and V of position `pos` for `layer_idx`: k[kv_dim], v[kv_dim] f32 (kv_dim = num_kv_heads·head_dim,
  /// head-major). pos < context_length (the caller validates).
  void store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v);
  /// The same with f16 rows converted by `kernels` (KernelTable::kv_row_f16_from_f32: the same bits, SIMD).
  void store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v, const cpu::KernelTable& kernels);

  /// Copies K and V of every KV head of `layer_idx` from position src_pos to dst_pos (raw rows, any type). Both must
  /// be in the ring (dst_pos − capacity ≤ src_pos ≤ newest stored; equal: the same slot); the caller validates.
  void copy_position(uint32_t layer_idx, uint32_t src_pos, uint32_t dst_pos);

  /// Reads K (or V) of head `kv_head_idx` at position `pos` into out[head_dim] (f32). The position must still be
  /// in the ring: newest stored − capacity < pos <= newest stored.
  void load_k(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const;
  void load_v(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const;

  /// The first key position a query at `query_pos` attends to: query_pos + 1 − sliding_window on sliding layers
  /// (each query sees at most sliding_window keys, itself included), 0 on full-attention layers.
  uint32_t first_visible_position(uint32_t layer_idx, uint32_t query_pos) const;

  /// Raw rows for kernels: K or V of (layer, pos, kv head), head_dim values of k_type() / v_type() (f16, f32, or
  /// head_dim / 32 q8_0 / q4_0 blocks).
  const uint8_t* k_row(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx) const {
    return k_.get() + slot_offset(k_layer_offset_, k_row_bytes_, layer_idx, pos, kv_head_idx);
  }
  const uint8_t* v_row(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx) const {
    return v_.get() + slot_offset(v_layer_offset_, v_row_bytes_, layer_idx, pos, kv_head_idx);
  }

  /// Bytes from one slot's K (V) row of a KV head to the next slot's (kv_row_bytes of the type: a head's rows are
  /// contiguous, so attention over consecutive positions streams through memory).
  uint64_t k_stride_bytes() const { return k_row_bytes_; }
  uint64_t v_stride_bytes() const { return v_row_bytes_; }
  uint32_t context_length() const { return context_length_; }
  uint32_t head_dim() const { return hp_.head_dim; }
  KvCacheType k_type() const { return k_type_; }
  KvCacheType v_type() const { return v_type_; }
  /// Slots allocated for a layer: sliding_window + extra_sliding_slots (sliding layers, capped at the context) or
  /// context_length.
  uint32_t capacity(uint32_t layer_idx) const { return capacity_[layer_idx]; }
  /// Total bytes reserved for K and V of all layers.
  uint64_t reserved_bytes() const { return total_bytes_; }

 private:
  void store_rows(uint32_t layer_idx, uint32_t pos, const float* k, const float* v,
                  void (*f16_row)(const float*, uint16_t*, int64_t));
  uint64_t slot_offset(const std::vector<uint64_t>& layer_offset, uint64_t row_bytes, uint32_t layer_idx, uint32_t pos,
                       uint32_t kv_head_idx) const {
    const uint32_t slot = pos % capacity_[layer_idx];
    return layer_offset[layer_idx] + (static_cast<uint64_t>(kv_head_idx) * capacity_[layer_idx] + slot) * row_bytes;
  }

  ModelHparams hp_;
  KvCacheType k_type_ = KvCacheType::kF16;
  KvCacheType v_type_ = KvCacheType::kF16;
  uint32_t context_length_ = 0;
  uint64_t k_row_bytes_ = 0;               // kv_row_bytes(k_type_, head_dim)
  uint64_t v_row_bytes_ = 0;
  std::vector<uint32_t> capacity_;         // (num_layers) slots per layer
  std::vector<uint32_t> window_;           // (num_layers) keys a query sees: sliding_window or context_length
  std::vector<uint64_t> k_layer_offset_;   // (num_layers) byte offset of each layer in k_
  std::vector<uint64_t> v_layer_offset_;   // (num_layers) byte offset of each layer in v_
  uint64_t total_bytes_ = 0;
  std::unique_ptr<uint8_t[]> k_;  // (layer, kv_head, slot, K row of k_row_bytes_)
  std::unique_ptr<uint8_t[]> v_;  // (layer, kv_head, slot, V row of v_row_bytes_)
};

}  // namespace hetmoe
