#pragma once
// The KV cache's element types and the bytes they take per position: what placement and the executor both need to
// know of the KV cache (the cache itself is runtime/exec/kv_cache.h). K and V may have different types (llama.cpp's
// --cache-type-k / --cache-type-v).

#include <cstdint>
#include <string_view>

#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// f16 (default), f32, and ggml's block-quantized q8_0 (32 values: f16 d + 32 int8, 34 bytes; value = d · q) and
/// q4_0 (32 values: f16 d + 16 bytes of nibbles, 18 bytes; value = d · (nibble − 8); byte j holds values j (low
/// nibble) and j + 16 (high nibble)). The quantized types need head_dim to be a multiple of 32.
enum class KvCacheType { kF16, kF32, kQ8_0, kQ4_0 };

/// Parses "f16" / "f32" / "q8_0" / "q4_0". Errors: kInvalidArgument naming the value and the choices.
Expected<KvCacheType> parse_kv_cache_type(std::string_view text);

/// "f16", "f32", "q8_0", "q4_0" (the spelling parse_kv_cache_type accepts).
const char* kv_cache_type_name(KvCacheType type);

/// Whether the type is block-quantized (q8_0, q4_0): runs on the CPU attention kernels only.
inline bool is_quantized(KvCacheType type) { return type == KvCacheType::kQ8_0 || type == KvCacheType::kQ4_0; }

/// Bytes of one head's row of head_dim values (head_dim a multiple of 32 for the quantized types):
/// f16 2 · head_dim, f32 4 · head_dim, q8_0 34 · head_dim / 32, q4_0 18 · head_dim / 32.
uint64_t kv_row_bytes(KvCacheType type, uint32_t head_dim);

/// Bytes one position takes in one layer for K of type k_type and V of type v_type: num_kv_heads · (row bytes of
/// K + row bytes of V). gpt-oss-20b (8 KV heads of 64): f16 2048, q8_0 1088, q4_0 576, f32 4096.
uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType k_type, KvCacheType v_type);
/// The same with K and V of one type.
uint64_t kv_bytes_per_position(const ModelHparams& hp, KvCacheType type);

/// Bytes of the KV cache of all layers at context_length positions: sliding layers keep min(sliding_window,
/// context_length) positions, full-attention layers context_length (KvCache adds a prefill batch's extra ring slots
/// on the sliding layers).
uint64_t kv_cache_bytes(const ModelHparams& hp, uint32_t context_length, KvCacheType k_type, KvCacheType v_type);

/// An error naming `what` (a flag or config key) and the type when head_dim does not fit the type (the quantized
/// types need a multiple of 32); empty when it fits.
Status check_kv_cache_type(const ModelHparams& hp, KvCacheType type, std::string_view what);

}  // namespace hetmoe
