#pragma once
// CPU GEMV/GEMM and attention kernels with runtime ISA dispatch.
//
// One generic SIMD source (kernels_simd.h) is compiled once per ISA in its own translation unit with its own -m
// flags (kernels_avx2.cpp, kernels_avx512.cpp); kernels_scalar.cpp implements the same quantized math in plain
// C++ and is what the SIMD variants are tested against (it is itself tested against ref::dot_row). dispatch.cpp
// (no ISA flags) reads cpuid/xgetbv and picks a variant; HETMOE_ISA can force one.
//
// Quantized weights (MXFP4, Q8_0; gpt-oss-spec.md §4, ggml-common.h) are multiplied with activations quantized
// per 32 values to int8 (ActQ8Block), as llama.cpp's CPU backend does (spec §6): each weight block contributes
// d_w · d_x · Σ_j w_q[j] · x_q[j], the sum taken exactly in integers.

#include <cstdint>
#include <limits>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::cpu {

/// Values per activation block (= the MXFP4 and Q8_0 weight block size).
inline constexpr uint32_t kActBlockElems = 32;
/// Largest head_dim the attention kernels accept.
inline constexpr int64_t kMaxAttnHeadDim = 256;

/// Activations quantized per 32 values for integer dot products (llama.cpp's Q8_0 CPU path does the same, but with
/// an f16 d): value ≈ d · q[j], d = amax / 127 (f32, amax = max_j |x[j]|), q[j] = round-to-nearest-even(x[j] · (1/d))
/// (q = 0 where d = 0). Every q lies in [-127, 127]; the kernels rely on that (-128 is never produced).
struct ActQ8Block {
  float d;
  int8_t q[kActBlockElems];
};
static_assert(sizeof(ActQ8Block) == 36);

/// GEMMs over fewer tokens than this give, for every token, exactly the GEMV's result (the same per-lane sums):
/// batches of up to 8 tokens (batched decode, speculative verification) see the bits a single-token step sees.
/// Every variant runs such batches through its row tiles (quant_tile_steps in kernels_simd.h: up to 4 tokens one tile
/// of Q::kGemmRows rows, 5 to 8 tokens one tile of Q::kGemmWideRows rows × all the tokens, so each weight block is
/// decoded once for the batch), whose every (row, token) sum runs the GEMV's operations in the GEMV's order.
/// A guarantee, not the switch point: each variant's Q::kLaneMinTokens (≥ this, static_assert) is where its token-lane
/// GEMM takes over (9 tokens in every variant today). Not higher: in prefill most experts get few tokens (pp64: 8 per
/// expert on average), and the lanes win from about a dozen tokens on (AVX-512 MXFP4: ~39 instructions per row and
/// block for a tile of up to 16 tokens, weight decoding included, against 2.9 per token in the row tiles).
/// From Q::kLaneMinTokens tokens on, the SIMD variants sum in another order (token-lane GEMM, kernels_avx512.cpp): NMSE
/// ~1e-13 from the GEMV per matrix, but a changed bit can flip an activation's int8 rounding in the next layer, so a
/// long prefill's logits differ from token-by-token decoding by quantization noise (NMSE ~1e-4 on the tiny model).
inline constexpr int64_t kGemmMatchesGemvBelowTokens = 9;

/// Kernel variants, from the least to the most preferred. kScalar runs everywhere; kAvx2 needs AVX2+FMA+F16C;
/// kAvx2Vnni also AVX-VNNI (its int8 dots on vpdpbusd, the same results as kAvx2); kAvx512 needs AVX-512
/// F/BW/VL/DQ and VNNI.
enum class Isa { kScalar, kAvx2, kAvx2Vnni, kAvx512 };

/// "scalar", "avx2", "avx2_vnni", "avx512" (the spelling HETMOE_ISA accepts).
const char* isa_name(Isa isa);

/// A byte range to prefetch: [begin, begin + num_bytes).
struct PrefetchRange {
  const uint8_t* begin = nullptr;
  int64_t num_bytes = 0;
};

/// The kernels of one ISA variant. Shapes are given with dimension order; "row r" of a weight matrix W starts at
/// w + r · row_bytes and holds num_cols values of the weight type (MXFP4/Q8_0: num_cols / 32 blocks of 17/34 bytes;
/// F16/BF16: 2 bytes per value; F32: 4). All float buffers are f32. Preconditions (not checked): num_cols is a
/// multiple of 32 for the quantized kernels (any value ≥ 0 for the float ones), 0 ≤ row_begin ≤ row_end, outputs do
/// not alias inputs. Every function is thread-safe (no state); callers split work by row range. Results of the SIMD
/// variants equal the scalar variant's up to the order of float additions (NMSE ~1e-13, tests/test_cpu_kernels.cpp).
struct KernelTable {
  Isa isa;

  /// x[n] (f32, n a multiple of 32) → out[n / 32]. A [num_tokens][num_cols] activation matrix (num_cols a multiple of
  /// 32) quantizes in one call to [num_tokens][num_cols / 32] blocks.
  void (*quantize_act_q8)(const float* x, ActQ8Block* out, int64_t n);

  /// Decode GEMV over a row range: y[r - row_begin] = Σ_k W[r, k] · x[k] for r in [row_begin, row_end).
  /// x: [num_cols / 32] blocks from quantize_act_q8; y: [row_end - row_begin].
  void (*gemv_mxfp4)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                     int64_t num_cols, float* y);
  void (*gemv_q8_0)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                    int64_t num_cols, float* y);
  /// The same for float weights and f32 x[num_cols].
  void (*gemv_f32)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                   int64_t num_cols, float* y);
  void (*gemv_f16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                   int64_t num_cols, float* y);
  void (*gemv_bf16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                    int64_t num_cols, float* y);

  /// Prefill GEMM over a row range for num_tokens tokens:
  /// y[t · y_stride + (r - row_begin)] = Σ_k W[r, k] · x_t[k] for t in [0, num_tokens), r in [row_begin, row_end).
  /// x: [num_tokens][num_cols / 32] blocks (token-major); y_stride ≥ row_end - row_begin. Inside: tiles of rows ×
  /// tokens (each weight block decoded once per tile and used for all its tokens), over chunks of tokens whose
  /// activations fit in L2 (512 KiB: 160 tokens of 2880 quantized values, 44 of f32); W streams from memory once
  /// per chunk. The quantized GEMMs of the AVX2/AVX-512 variants, from a per-variant count of tokens on (never below
  /// kGemmMatchesGemvBelowTokens), put the tokens across the vector lanes instead (activations packed per call,
  /// weights decoded once per 4–8 rows and chunk; kernels_avx512.cpp). Scratch: a per-thread buffer of about the
  /// chunk's activations, kept between calls.
  void (*gemm_mxfp4)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                     int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
  void (*gemm_q8_0)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                    int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
  /// The same for float weights; x: [num_tokens][num_cols] f32.
  void (*gemm_f32)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                   int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
  void (*gemm_f16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                   int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);
  void (*gemm_bf16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                    int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);

  /// GEMV and GEMM of kMXFP4_R16 weights (rows interleaved by 16, cpu_kernels/repack.h), gemm_mxfp4's contract for
  /// any num_tokens ≥ 1 except: w is the matrix's (or expert's) first group and row_begin, row_end are multiples of
  /// 16. Every token gets exactly the bits it gets alone (one code path for 1 token and for many). nullptr in
  /// variants without one: weights are repacked only for a variant that has it (gemm_mxfp4_r16_scalar is the
  /// reference, outside the tables).
  void (*gemm_mxfp4_r16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                         const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y,
                         int64_t y_stride) = nullptr;
  /// The same for kQ8_0_R16 weights (Q8_0 rows interleaved by 16; reference: gemm_q8_0_r16_scalar).
  void (*gemm_q8_0_r16)(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                        const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y,
                        int64_t y_stride) = nullptr;

  /// Attention helpers over one f16 KV-cache row of n values (head_dim): Σ_i q[i] · k[i] (q f32, k f16 bits) ...
  float (*dot_f32_f16)(const float* q, const uint16_t* k, int64_t n);
  /// ... and out[i] += a · v[i] (v f16 bits, out f32).
  void (*axpy_f16)(float a, const uint16_t* v, float* out, int64_t n);
  /// Σ_i a[i] · b[i] and out[i] += a · v[i], all f32.
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  void (*axpy_f32)(float a, const float* v, float* out, int64_t n);

  /// Attention over num_keys consecutive KV-cache slots for one KV head and its group of query heads (GQA), K/V rows
  /// of head_dim values (f16 or f32 as named) at `stride_bytes` from one slot to the next:
  ///   scores[h * scores_stride + j] = scale · Σ_i q[h * head_dim + i] · K_j[i]     (attn_scores_*)
  ///   out[h * head_dim + i] += Σ_j p[h * p_stride + j] · V_j[i]                     (attn_values_*)
  /// for h in [0, group), j in [0, num_keys). head_dim ≤ 256. Each K/V row is converted once for the whole group.
  void (*attn_scores_f16)(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                          int64_t head_dim, float scale, float* scores, int64_t scores_stride);
  void (*attn_values_f16)(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                          int64_t num_keys, int64_t head_dim, float* out);
  void (*attn_scores_f32)(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                          int64_t head_dim, float scale, float* scores, int64_t scores_stride);
  void (*attn_values_f32)(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                          int64_t num_keys, int64_t head_dim, float* out);
  /// Softmax with an attention sink (gpt-oss-spec.md §3 step 4), in place over s[n]:
  ///   M = max(max_j s_j, sink); Z = Σ_j exp(s_j − M) + exp(sink − M); s_j ← exp(s_j − M) / Z.
  /// The sink is a raw logit that takes probability mass but has no value row.
  void (*softmax_with_sink)(float* s, int64_t n, float sink);
  /// gpt-oss's clamped SwiGLU, elementwise over n ≥ 0 values (ref::swiglu_oai: out = g · sigmoid(alpha · g) · (a + 1),
  /// g = min(gate, limit), a = clamp(up, −limit, limit)); out may alias gate or up; NaN in gives NaN out.
  void (*swiglu_oai)(const float* gate, const float* up, float* out, int64_t n, float alpha, float limit);
  /// NeoX RoPE of one head in place (ref::rope_neox_apply): x[num_rot_dims], pair i in [0, num_rot_dims / 2) rotates
  /// (x[i], x[i + num_rot_dims / 2]) by cos_tab[i], sin_tab[i].
  void (*rope_neox)(float* x, int32_t num_rot_dims, const float* cos_tab, const float* sin_tab);

  // Entries filled after the variant's constexpr table is built (dispatch.cpp adds attention_<isa>.cpp's).

  /// attn_scores_* / attn_values_* over block-quantized K/V rows (kv_blocks.h: q8_0 34 bytes, q4_0 18 bytes per 32
  /// values; head_dim a multiple of 32). Each row is dequantized once for the group (value = d · q, one rounding, as
  /// dequantize_kv_*), then used as the f32 kernels use it. Defined in attention_<isa>.cpp.
  void (*attn_scores_q8_0)(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                           int64_t head_dim, float scale, float* scores, int64_t scores_stride) = nullptr;
  void (*attn_values_q8_0)(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                           int64_t num_keys, int64_t head_dim, float* out) = nullptr;
  void (*attn_scores_q4_0)(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                           int64_t head_dim, float scale, float* scores, int64_t scores_stride) = nullptr;
  void (*attn_values_q4_0)(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                           int64_t num_keys, int64_t head_dim, float* out) = nullptr;
  /// One chunk of a split (flash-decoding) softmax, in place over s[n], n ≥ 1: m = max_j s_j; s_j ← exp(s_j − m);
  /// returns Σ_j s_j and sets *max_out = m. The caller merges chunks (and the sink) exactly: with M the largest of the
  /// chunks' m and the sink, Z = Σ_c sum_c · exp(m_c − M) + exp(sink − M).
  float (*softmax_partial)(float* s, int64_t n, float* max_out) = nullptr;

  /// Tiled (flash) attention, one block of keys at a time with an online softmax (runtime/exec/attention_cpu.h drives
  /// it). A tile is num_rows query rows (tokens × the query heads of one KV head) against ≤ kAttnTileMaxKeys keys whose
  /// K and V rows were converted to f32 rows of attn_tile_pitch(head_dim) floats (zeros past head_dim). The layouts of
  /// qt and s are the variant's own; their sizes are attn_tile_qt_floats and attn_tile_scores_floats.
  ///
  /// kv_rows_f32_*: num_keys rows of head_dim values of the type (f16 bits, f32, q8_0 / q4_0 blocks with head_dim a
  /// multiple of 32) at stride_bytes from one to the next → dst[num_keys][attn_tile_pitch(head_dim)], zero padded.
  void (*kv_rows_f32_f16)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim,
                          float* dst) = nullptr;
  void (*kv_rows_f32_f32)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim,
                          float* dst) = nullptr;
  void (*kv_rows_f32_q8_0)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim,
                           float* dst) = nullptr;
  void (*kv_rows_f32_q4_0)(const uint8_t* src, int64_t stride_bytes, int64_t num_keys, int64_t head_dim,
                           float* dst) = nullptr;
  /// K/V rows stored as f16 (the default KV type): src[n] f32 → dst[n] f16 bits, rounded to nearest even; the same
  /// bits as ref::f32_to_f16 at every ISA (NaN stays NaN, ≥ 65520 in magnitude → ±inf).
  void (*kv_row_f16_from_f32)(const float* src, uint16_t* dst, int64_t n) = nullptr;
  /// Writes query rows q[num_rows][head_dim] (f32, contiguous) as rows [row_begin, row_begin + num_rows) of the tile
  /// qt. The caller zeroes qt (attn_tile_qt_floats) before packing a tile's first rows; rows never packed stay zero.
  void (*attn_tile_pack_q)(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin, float* qt) = nullptr;
  /// One key block of the online softmax for every row r of the tile, over the keys j in [key_begin[r], key_end[r])
  /// (0 ≤ begin ≤ end ≤ num_keys; other keys are masked; num_keys in [1, kAttnTileMaxKeys]):
  ///   s_j = scale · q_r · K_j;  M = max(max_io[r], max_j s_j);  a = exp(max_io[r] − M);
  ///   sum_io[r] ← a · sum_io[r] + Σ_j exp(s_j − M);  out[r][:] ← a · out[r][:] + Σ_j exp(s_j − M) · V_j;
  ///   max_io[r] ← M.
  /// A row with no unmasked key in this block is left unchanged. Start a row with max_io = −∞, sum_io = 0, out = 0.
  /// k, v: [num_keys][pitch] f32 (kv_rows_f32_*; k is read one row past num_keys when num_keys is odd: any finite
  /// values); out: [attn_tile_rows(num_rows)][pitch]; max_io, sum_io: [attn_tile_rows(num_rows)]; s: scratch of
  /// attn_tile_scores_floats(num_rows) floats.
  /// prefetch[num_prefetch]: byte ranges (never dereferenced) the SIMD variants prefetch into L1, their lines spread
  /// evenly over the tile's work, so that the next block's K/V rows arrive from DRAM while this one computes
  /// (nullptr, 0: none; the scalar variant ignores them).
  void (*attn_tile_update)(const float* qt, int64_t num_rows, const float* k, const float* v, int64_t num_keys,
                           int64_t head_dim, float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                           float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch,
                           int64_t num_prefetch) = nullptr;
  /// attn_tile_update with V read as f16 rows in place: v = num_keys rows of head_dim f16 values, v_stride_bytes
  /// from one to the next (a multiple of 2), head_dim a multiple of 32. Each V value is widened inside the values
  /// loop instead of by kv_rows_f32_f16 first (decode tiles of ≤ 8 rows read each V row once; larger tiles widen it
  /// once per group of 8 rows). The same bits as attn_tile_update on kv_rows_f32_f16's rows of v.
  void (*attn_tile_update_v_f16)(const float* qt, int64_t num_rows, const float* k, const uint8_t* v,
                                 int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim, float scale,
                                 const int32_t* key_begin, const int32_t* key_end, float* s, float* max_io,
                                 float* sum_io, float* out, const PrefetchRange* prefetch,
                                 int64_t num_prefetch) = nullptr;
  /// Tiles of up to this many rows are faster with f16 V read in place (attn_tile_update_v_f16) than widened first
  /// (kv_rows_f32_f16 + attn_tile_update); the same bits either way. `BM_AttnTile/f16/<isa>/keys:4096`, Zen 4, in
  /// place against widened: AVX-512 1 token (8 rows) 1028–1032 against 1123–1128 µs, 8 tokens (64 rows) 6222–6231
  /// against 5876–5956 µs (there the widened rows feed 4 rows per load); AVX2 in place at both (1060–1072 against
  /// 1227–1231, 6916–6929 against 7361–7530).
  int64_t attn_v_f16_max_rows = 0;
  /// Tiled attention with bf16 products (the opt-in --attention-bf16): attn_tile_update's update with q, K, V and the
  /// probabilities exp(s_j − M) rounded to bf16 (nearest even) before they are multiplied, the products summed in f32
  /// (sum_io from the unrounded probabilities; exp by a degree-3 polynomial of relative error 7.5e-5, far below the
  /// rounding, kernels_variants.h: Bf16TileExp). AVX512_BF16's vdpbf16ps does two such products per f32 lane, twice
  /// the f32 FMA's rate. gpt-oss's own attention runs in bf16 (its reference implementation's einsums over bf16 Q, K,
  /// V and probabilities), so this is the model's precision, not below it; NMSE against attn_tile_update 3.5e-6 on
  /// random rows to 8e-5 over 700 keys (tests/test_kv_attention.cpp).
  /// attn_tile_pack_q_bf16: attn_tile_pack_q into a bf16 qt of attn_tile_qt_floats(num_rows, head_dim) values (half
  /// the f32 qt's bytes), each rounded to bf16; the caller zeroes it first. attn_tile_update_bf16: attn_tile_update's
  /// arguments and contract with that qt (k, v: kv_rows_f32_*'s f32 rows, rounded inside).
  /// Null where the variant has no bf16 products (AVX2; AVX-512 without AVX512_BF16).
  void (*attn_tile_pack_q_bf16)(const float* q, int64_t num_rows, int64_t head_dim, int64_t row_begin,
                                uint16_t* qt) = nullptr;
  void (*attn_tile_update_bf16)(const uint16_t* qt, int64_t num_rows, const float* k, const float* v,
                                int64_t num_keys, int64_t head_dim, float scale, const int32_t* key_begin,
                                const int32_t* key_end, float* s, float* max_io, float* sum_io, float* out,
                                const PrefetchRange* prefetch, int64_t num_prefetch) = nullptr;
  /// attn_tile_update_bf16 with K and V read as f16 rows in place (the f16 KV cache: k and v rows k_stride_bytes and
  /// v_stride_bytes apart, head_dim a multiple of 32, exactly num_keys rows each): the bits of attn_tile_update_bf16
  /// on kv_rows_f32_f16's rows of k and v (f16 → f32 is exact), without the f32 copy.
  void (*attn_tile_update_bf16_kv_f16)(const uint16_t* qt, int64_t num_rows, const uint8_t* k, int64_t k_stride_bytes,
                                       const uint8_t* v, int64_t v_stride_bytes, int64_t num_keys, int64_t head_dim,
                                       float scale, const int32_t* key_begin, const int32_t* key_end, float* s,
                                       float* max_io, float* sum_io, float* out, const PrefetchRange* prefetch,
                                       int64_t num_prefetch) = nullptr;
  /// Tiles of at least this many rows run through the bf16 entries when the caller allows them (runtime/exec/
  /// attention_cpu.h): 1 on AVX-512 with AVX512_BF16 (decode tiles too); int64 max: never (the scalar variant's
  /// entries are the reference the SIMD ones are tested against, not faster than its f32 ones).
  int64_t attn_tile_bf16_min_rows = std::numeric_limits<int64_t>::max();
};

/// Most keys one attn_tile_update call takes.
inline constexpr int64_t kAttnTileMaxKeys = 64;
/// Floats per f32 K/V row and query row in a tile: head_dim rounded up to 32.
constexpr int64_t attn_tile_pitch(int64_t head_dim) { return (head_dim + 31) / 32 * 32; }
/// Rows a tile of num_rows query rows occupies: rounded up to 8 (the SIMD variants put 8 rows across the lanes).
constexpr int64_t attn_tile_rows(int64_t num_rows) { return (num_rows + 7) / 8 * 8; }
/// Sizes of a tile's qt and score scratch, in floats, for every variant.
constexpr int64_t attn_tile_qt_floats(int64_t num_rows, int64_t head_dim) {
  return attn_tile_rows(num_rows) * attn_tile_pitch(head_dim);
}
constexpr int64_t attn_tile_scores_floats(int64_t num_rows) {
  return attn_tile_rows(num_rows) * (kAttnTileMaxKeys + 2);
}

/// The table of `isa`. Every ISA name exists; kScalar is always compiled, the others only on x86-64 builds
/// (isa_compiled). For an ISA that is not compiled the scalar table is returned (its .isa says kScalar).
/// Calling kernels of an ISA this CPU cannot run (not in supported_isas()) raises SIGILL.
const KernelTable& kernel_table(Isa isa);

/// Whether this build contains the variant.
bool isa_compiled(Isa isa);

/// The variants this CPU and OS can run and this build contains (cpuid feature bits, and xgetbv for the OS saving
/// the YMM/ZMM state), kScalar first, in increasing order.
std::vector<Isa> supported_isas();

/// The highest-scoring supported variant (ggml-cpu's feature score: a missing required feature scores 0).
Isa best_isa();

/// Parses a HETMOE_ISA value against a list of supported variants: nullptr or "" → the last (best) entry of
/// `supported`; a name from isa_name() that is in `supported` → that ISA. Errors (kInvalidArgument): an unknown
/// name, or one not in `supported`; the message names the value and the supported variants.
Expected<Isa> select_isa(const char* env_value, const std::vector<Isa>& supported);

/// select_isa(getenv("HETMOE_ISA"), supported_isas()).
Expected<Isa> selected_isa();

}  // namespace hetmoe::cpu
