#pragma once
// KV cache for gpt-oss: per layer, K (after RoPE) and V of every cached position.
// Sliding-window layers keep only the last `sliding_window` positions in a ring buffer (slot = pos % window);
// full-attention layers keep the whole context (slot = pos). Storage is f16 (default) or f32.

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "runtime/expected.h"
#include "runtime/model.h"

namespace hetmoe {

enum class KvCacheType { kF16, kF32 };

/// Parses "f16" / "f32". Errors: kInvalidArgument naming the value and the choices.
Expected<KvCacheType> parse_kv_cache_type(std::string_view text);

class KvCache {
 public:
  /// Plans the cache for `context_length` positions. Memory is reserved (virtual) up front but pages are
  /// committed only when written. Errors: kInvalidArgument if context_length is 0 or exceeds the model's
  /// trained context (hp.context_length).
  static Expected<KvCache> create(const ModelHparams& hp, uint32_t context_length, KvCacheType type);

  /// Stores K and V of position `pos` for `layer_idx`: k[kv_dim], v[kv_dim] f32 (kv_dim = num_kv_heads·head_dim,
  /// head-major). pos < context_length (the caller validates).
  void store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v);

  /// Reads K (or V) of head `kv_head_idx` at position `pos` into out[head_dim] (f32). The position must still be
  /// held: first_held_position(layer_idx, newest) <= pos <= newest stored.
  void load_k(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const;
  void load_v(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const;

  /// Oldest position still held for a layer once position `newest_pos` is stored (0 for full layers).
  uint32_t first_held_position(uint32_t layer_idx, uint32_t newest_pos) const;

  uint32_t context_length() const { return context_length_; }
  KvCacheType type() const { return type_; }
  /// Slots allocated for a layer: sliding_window (sliding layers, capped at context) or context_length.
  uint32_t capacity(uint32_t layer_idx) const { return capacity_[layer_idx]; }
  /// Total bytes reserved for K and V of all layers.
  uint64_t reserved_bytes() const { return total_bytes_; }

  /// Bytes one position takes in one layer (K and V): 2 · kv_dim · element size.
  static uint64_t bytes_per_position(const ModelHparams& hp, KvCacheType type);

 private:
  uint64_t slot_offset(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx) const;
  void load(const uint8_t* base, uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const;

  ModelHparams hp_;
  KvCacheType type_ = KvCacheType::kF16;
  uint32_t context_length_ = 0;
  uint32_t element_bytes_ = 2;
  std::vector<uint32_t> capacity_;       // (num_layers) slots per layer
  std::vector<uint64_t> layer_offset_;   // (num_layers) byte offset of each layer in k_/v_
  uint64_t total_bytes_ = 0;
  std::unique_ptr<uint8_t[]> k_;  // (layer, slot, kv_head, head_dim) f16 or f32
  std::unique_ptr<uint8_t[]> v_;  // (layer, slot, kv_head, head_dim) f16 or f32
};

}  // namespace hetmoe
