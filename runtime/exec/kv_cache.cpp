#include "runtime/exec/kv_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "cpu_kernels/reference.h"

namespace hetmoe {

Expected<KvCache> KvCache::create(const ModelHparams& hp, uint32_t context_length, KvCacheType type,
                                  uint32_t extra_sliding_slots) {
  if (context_length == 0 || context_length > hp.context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("context length {} is out of range (expected 1..{}, the model's context_length)",
                                  context_length, hp.context_length));
  KvCache c;
  c.hp_ = hp;
  c.type_ = type;
  c.context_length_ = context_length;
  c.element_bytes_ = type == KvCacheType::kF16 ? 2 : 4;
  const uint64_t layer_stride = static_cast<uint64_t>(hp.kv_dim()) * c.element_bytes_;  // bytes per slot
  c.capacity_.resize(hp.num_layers);
  c.window_.resize(hp.num_layers);
  c.layer_offset_.resize(hp.num_layers);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const uint64_t ring = static_cast<uint64_t>(hp.sliding_window) + extra_sliding_slots;
    c.capacity_[l] = hp.is_sliding(l) ? static_cast<uint32_t>(std::min<uint64_t>(ring, context_length)) : context_length;
    c.window_[l] = hp.is_sliding(l) ? hp.sliding_window : context_length;
    c.layer_offset_[l] = c.total_bytes_ / 2;
    c.total_bytes_ += 2 * layer_stride * c.capacity_[l];
  }
  // new[] without value-initialization: large blocks come from mmap and pages are committed on first write.
  c.k_.reset(new (std::nothrow) uint8_t[c.total_bytes_ / 2]);
  c.v_.reset(new (std::nothrow) uint8_t[c.total_bytes_ / 2]);
  if (!c.k_ || !c.v_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot allocate the KV cache: {} bytes for context {}", c.total_bytes_,
                                  context_length));
  return c;
}

uint32_t KvCache::first_visible_position(uint32_t layer_idx, uint32_t query_pos) const {
  const uint32_t window = window_[layer_idx];
  return query_pos + 1 > window ? query_pos + 1 - window : 0;
}

uint64_t KvCache::slot_offset(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx) const {
  const uint32_t slot = pos % capacity_[layer_idx];
  return layer_offset_[layer_idx] +
         (static_cast<uint64_t>(kv_head_idx) * capacity_[layer_idx] + slot) * hp_.head_dim * element_bytes_;
}

void KvCache::store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v) {
  for (uint32_t h = 0; h < hp_.num_kv_heads; ++h) {
    uint8_t* kd = k_.get() + slot_offset(layer_idx, pos, h);
    uint8_t* vd = v_.get() + slot_offset(layer_idx, pos, h);
    const float* ks = k + static_cast<uint64_t>(h) * hp_.head_dim;
    const float* vs = v + static_cast<uint64_t>(h) * hp_.head_dim;
    if (type_ == KvCacheType::kF32) {
      std::memcpy(kd, ks, hp_.head_dim * sizeof(float));
      std::memcpy(vd, vs, hp_.head_dim * sizeof(float));
    } else {
      for (uint32_t i = 0; i < hp_.head_dim; ++i) {
        const uint16_t kh = ref::f32_to_f16(ks[i]);
        const uint16_t vh = ref::f32_to_f16(vs[i]);
        std::memcpy(kd + 2 * i, &kh, 2);
        std::memcpy(vd + 2 * i, &vh, 2);
      }
    }
  }
}

void KvCache::load(const uint8_t* base, uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const {
  const uint8_t* src = base + slot_offset(layer_idx, pos, kv_head_idx);
  ref::dequantize_row(type_ == KvCacheType::kF16 ? TensorType::kF16 : TensorType::kF32, src, out, hp_.head_dim);
}

void KvCache::load_k(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const {
  load(k_.get(), layer_idx, pos, kv_head_idx, out);
}

void KvCache::load_v(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const {
  load(v_.get(), layer_idx, pos, kv_head_idx, out);
}

}  // namespace hetmoe
