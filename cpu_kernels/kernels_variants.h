#pragma once
// Internal to cpu_kernels/: the per-variant tables that dispatch.cpp chooses from, and constant data shared by the
// variants. Plain data and declarations only — nothing here may run SIMD code (it is included by TUs built without
// ISA flags and by ones built with them).

#include <bit>
#include <cstdint>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"

namespace hetmoe::cpu::detail {

const KernelTable& kernel_table_scalar();
#if defined(HETMOE_CPU_KERNELS_X86)
const KernelTable& kernel_table_avx2();
const KernelTable& kernel_table_avx2_vnni();
const KernelTable& kernel_table_avx512();
/// KernelTable::gemm_mxfp4_r16 built with AVX512_VBMI as well (kernels_avx512vbmi.cpp): dispatch.cpp puts it in the
/// AVX-512 table where the CPU has VBMI; kernel_table_avx512() keeps the kernel without it.
void gemm_mxfp4_r16_avx512vbmi(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                               const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
#endif

/// Set the q8_0/q4_0 attention entries, softmax_partial and the tiled attention entries (kv_rows_f32_*, attn_tile_*) of
/// a table (attention_<isa>.cpp); dispatch.cpp adds them to the variant's table once, before first use.
void add_attention_kernels_scalar(KernelTable& t);
#if defined(HETMOE_CPU_KERNELS_X86)
void add_attention_kernels_avx2(KernelTable& t);
void add_attention_kernels_avx512(KernelTable& t);
/// The bf16 tile entries (attn_tile_*_bf16, attention_avx512bf16.cpp): only on CPUs with AVX512_BF16.
void add_attention_kernels_avx512_bf16(KernelTable& t);
inline void add_attention_kernels_avx512_with_bf16(KernelTable& t) {
  add_attention_kernels_avx512(t);
  add_attention_kernels_avx512_bf16(t);
}
#endif

/// A 64-byte-aligned scratch buffer of at least `bytes` bytes owned by the calling thread (grown as needed, kept
/// until the thread exits), or nullptr when it cannot be allocated. Valid until the thread's next call; kernels use
/// it for per-call packing (gemm_quant_lanes) instead of a heap allocation per call, whose fresh pages the OS
/// would zero on every call. Defined in dispatch.cpp (no ISA flags).
void* thread_scratch(uint64_t bytes);

/// MXFP4 block scale 2^(e-128) for every exponent byte e (gpt-oss-spec.md §4; equals ref::mxfp4_scale(e)), built at
/// compile time from the IEEE bit patterns: e ≥ 2 is the normal float with biased exponent e-1; e = 1 and e = 0 are
/// the subnormals 2^-127 and 2^-128.
struct Mxfp4ScaleTable {
  float v[256];
};
consteval Mxfp4ScaleTable make_mxfp4_scale_table() {
  Mxfp4ScaleTable t{};
  t.v[0] = std::bit_cast<float>(uint32_t{0x00200000});
  t.v[1] = std::bit_cast<float>(uint32_t{0x00400000});
  for (uint32_t e = 2; e < 256; ++e) t.v[e] = std::bit_cast<float>((e - 1) << 23);
  return t;
}
inline constexpr Mxfp4ScaleTable kMxfp4Scale = make_mxfp4_scale_table();

/// The MXFP4 value table plus 12 (0..24), so that decoded weights are unsigned bytes for u8×s8 dot instructions
/// (maddubs, vpdpbusd); the kernels subtract 12 · Σ x_q per block to undo the offset.
inline constexpr int kMxfp4Offset = 12;
struct Mxfp4OffsetTable {
  uint8_t v[16];
};
consteval Mxfp4OffsetTable make_mxfp4_offset_table() {
  Mxfp4OffsetTable t{};
  for (int i = 0; i < 16; ++i) t.v[i] = static_cast<uint8_t>(ref::kMxfp4Values[i] + kMxfp4Offset);
  return t;
}
inline constexpr Mxfp4OffsetTable kMxfp4OffsetValues = make_mxfp4_offset_table();

/// The bf16 tiles' e^x for the probabilities (attn_tile_update_bf16; attention_avx512bf16.cpp and the scalar
/// reference compute it with the same operations): t = max(x · log2 e, −200), n = round-to-nearest-even(t), f = t − n,
/// e^x ≈ 2^n · P(f) with P(f) = ((c3 · f + c2) · f + c1) · f + c0, fused multiply-adds: a degree-3 minimax fit of 2^f
/// on [−½, ½], relative error 7.5e-5 in f32 — 26× below the 2^-9 to which the probabilities are rounded next. −∞ (a
/// masked key) gives 2^−200 · P = 0.
struct Bf16TileExp {
  static constexpr float kLog2e = 1.44269504f, kMinT = -200.0f;
  static constexpr float kC0 = 0.999928057f, kC1 = 0.693260968f, kC2 = 0.242611125f, kC3 = 0.0551716685f;
};

}  // namespace hetmoe::cpu::detail
