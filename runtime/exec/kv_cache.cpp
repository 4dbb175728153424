#include "runtime/exec/kv_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"

namespace hetmoe {

namespace {

using F16Row = void (*)(const float* src, uint16_t* dst, int64_t n);

/// The scalar variant's f16 row conversion (ref::f32_to_f16 value by value).
F16Row f16_row_scalar() { return cpu::kernel_table(cpu::Isa::kScalar).kv_row_f16_from_f32; }

/// One head's row of head_dim f32 values → dst in `type` (f16 through f16_row).
void store_row(KvCacheType type, const float* src, uint32_t head_dim, uint8_t* dst, F16Row f16_row) {
  switch (type) {
    case KvCacheType::kF32:
      std::memcpy(dst, src, head_dim * sizeof(float));
      return;
    case KvCacheType::kF16:
      f16_row(src, reinterpret_cast<uint16_t*>(dst), head_dim);
      return;
    case KvCacheType::kQ8_0:
      cpu::quantize_kv_q8_0(src, dst, head_dim);
      return;
    case KvCacheType::kQ4_0:
      cpu::quantize_kv_q4_0(src, dst, head_dim);
      return;
  }
}

void load_row(KvCacheType type, const uint8_t* src, uint32_t head_dim, float* dst) {
  switch (type) {
    case KvCacheType::kF32:
      ref::dequantize_row(TensorType::kF32, src, dst, head_dim);
      return;
    case KvCacheType::kF16:
      ref::dequantize_row(TensorType::kF16, src, dst, head_dim);
      return;
    case KvCacheType::kQ8_0:
      cpu::dequantize_kv_q8_0(src, dst, head_dim);
      return;
    case KvCacheType::kQ4_0:
      cpu::dequantize_kv_q4_0(src, dst, head_dim);
      return;
  }
}

/// Advises the 2 MiB-aligned interior of [p, p + bytes) for transparent huge pages: attention streams a KV head's
/// rows (~100 MB per decode step at depth 4096 for gpt-oss-20b), and with 4 KiB pages every page is a TLB miss and
/// a stop for the hardware prefetcher. Advice only (no THP: nothing changes). Commits memory 2 MiB at a time; the
/// RAM budget counts the whole cache at its context anyway (kv_cache_bytes).
void advise_huge_pages(uint8_t* p, uint64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (begin + kHugePage - 1) & ~(kHugePage - 1), hi = (begin + bytes) & ~(kHugePage - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace

Expected<KvCache> KvCache::create(const ModelHparams& hp, uint32_t context_length, KvCacheType k_type,
                                  KvCacheType v_type, uint32_t extra_sliding_slots) {
  if (context_length == 0 || context_length > hp.context_length)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("context length {} is out of range (expected 1..{}, the model's context_length)",
                                  context_length, hp.context_length));
  HETMOE_RETURN_IF_ERROR(check_kv_cache_type(hp, k_type, "KV cache type (K)"));
  HETMOE_RETURN_IF_ERROR(check_kv_cache_type(hp, v_type, "KV cache type (V)"));
  KvCache c;
  c.hp_ = hp;
  c.k_type_ = k_type;
  c.v_type_ = v_type;
  c.context_length_ = context_length;
  c.k_row_bytes_ = kv_row_bytes(k_type, hp.head_dim);
  c.v_row_bytes_ = kv_row_bytes(v_type, hp.head_dim);
  c.capacity_.resize(hp.num_layers);
  c.window_.resize(hp.num_layers);
  c.k_layer_offset_.resize(hp.num_layers);
  c.v_layer_offset_.resize(hp.num_layers);
  uint64_t k_bytes = 0, v_bytes = 0;
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const uint64_t ring = static_cast<uint64_t>(hp.sliding_window) + extra_sliding_slots;
    c.capacity_[l] = hp.is_sliding(l) ? static_cast<uint32_t>(std::min<uint64_t>(ring, context_length)) : context_length;
    c.window_[l] = hp.is_sliding(l) ? hp.sliding_window : context_length;
    c.k_layer_offset_[l] = k_bytes;
    c.v_layer_offset_[l] = v_bytes;
    k_bytes += static_cast<uint64_t>(hp.num_kv_heads) * c.capacity_[l] * c.k_row_bytes_;
    v_bytes += static_cast<uint64_t>(hp.num_kv_heads) * c.capacity_[l] * c.v_row_bytes_;
  }
  c.total_bytes_ = k_bytes + v_bytes;
  // new[] without value-initialization: large blocks come from mmap and pages are committed on first write.
  c.k_.reset(new (std::nothrow) uint8_t[k_bytes]);
  c.v_.reset(new (std::nothrow) uint8_t[v_bytes]);
  if (!c.k_ || !c.v_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot allocate the KV cache: {} bytes for context {}", c.total_bytes_,
                                  context_length));
  advise_huge_pages(c.k_.get(), k_bytes);
  advise_huge_pages(c.v_.get(), v_bytes);
  return c;
}

uint32_t KvCache::first_visible_position(uint32_t layer_idx, uint32_t query_pos) const {
  const uint32_t window = window_[layer_idx];
  return query_pos + 1 > window ? query_pos + 1 - window : 0;
}

void KvCache::copy_position(uint32_t layer_idx, uint32_t src_pos, uint32_t dst_pos) {
  for (uint32_t h = 0; h < hp_.num_kv_heads; ++h) {
    std::memmove(k_.get() + slot_offset(k_layer_offset_, k_row_bytes_, layer_idx, dst_pos, h),
                 k_.get() + slot_offset(k_layer_offset_, k_row_bytes_, layer_idx, src_pos, h), k_row_bytes_);
    std::memmove(v_.get() + slot_offset(v_layer_offset_, v_row_bytes_, layer_idx, dst_pos, h),
                 v_.get() + slot_offset(v_layer_offset_, v_row_bytes_, layer_idx, src_pos, h), v_row_bytes_);
  }
}

void KvCache::store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v) {
  store_rows(layer_idx, pos, k, v, f16_row_scalar());
}

void KvCache::store(uint32_t layer_idx, uint32_t pos, const float* k, const float* v, const cpu::KernelTable& kernels) {
  const F16Row f16_row = kernels.kv_row_f16_from_f32 != nullptr ? kernels.kv_row_f16_from_f32 : f16_row_scalar();
  store_rows(layer_idx, pos, k, v, f16_row);
}

void KvCache::store_rows(uint32_t layer_idx, uint32_t pos, const float* k, const float* v,
                         void (*f16_row)(const float*, uint16_t*, int64_t)) {
  for (uint32_t h = 0; h < hp_.num_kv_heads; ++h) {
    const uint64_t off = static_cast<uint64_t>(h) * hp_.head_dim;
    store_row(k_type_, k + off, hp_.head_dim, k_.get() + slot_offset(k_layer_offset_, k_row_bytes_, layer_idx, pos, h),
              f16_row);
    store_row(v_type_, v + off, hp_.head_dim, v_.get() + slot_offset(v_layer_offset_, v_row_bytes_, layer_idx, pos, h),
              f16_row);
  }
}

void KvCache::load_k(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const {
  load_row(k_type_, k_row(layer_idx, pos, kv_head_idx), hp_.head_dim, out);
}

void KvCache::load_v(uint32_t layer_idx, uint32_t pos, uint32_t kv_head_idx, float* out) const {
  load_row(v_type_, v_row(layer_idx, pos, kv_head_idx), hp_.head_dim, out);
}

}  // namespace hetmoe
