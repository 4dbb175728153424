#pragma once
// CUDA kernels of the gpt-oss forward pass, one .cu file per op (gpu_kernels/<op>.cu). Each launcher enqueues its
// work on `stream` and returns the launch status: cudaSuccess, cudaErrorInvalidValue for a shape or type the kernel
// does not support (nothing is launched then), or the launch error. Launchers never allocate, never synchronize and
// never exit; the runtime validates shapes against the model and turns a status into an Error.
// All pointers are device pointers unless a comment says otherwise. Activations are f32, row-major.
// The math of every op is that of the CPU reference (cpu_kernels/reference.h) and is tested against it
// (tests/test_cuda_kernels.cpp, NMSE with a commented tolerance).
//
// Refinements by the kernel implementation (signatures of the first contract unchanged; for the device runtime):
// - added gemm_f16 (cuBLAS prefill projections over dequantize_to_f16 weights);
// - alignment: f32 activation inputs of matvec and the MoE launchers, and `scratch`, 16-byte aligned (true for
//   cudaMalloc'ed buffers at offsets that are multiples of 4 floats); q of the attention launchers 8-byte aligned;
// - num_cols of matvec / dequantize_to_f16 (and hidden_dim, ffn_dim of the experts) a multiple of 4 and of the
//   type's block size; attention head_dim 32, 64 or 128 (KV cache f16, q8_0 or q4_0); moe_experts_decode needs
//   num_tokens·top_k ≤ 65535;
// - a shape, type or alignment outside these answers cudaErrorInvalidValue before anything is launched.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cpu_kernels/reference.h"
#include "runtime/base/ggml_types.h"

namespace hetmoe::gpu {

/// out[t][hidden_dim] (f32) = row token_ids[t] of table (vocab, hidden_dim) of `type` (F32, F16, BF16, Q8_0,
/// MXFP4), dequantized bit-exactly as ref::dequantize_row, t < num_tokens. Ids are not range-checked here (the
/// runtime validates them on the host).
cudaError_t embedding_gather(TensorType type, const void* table, int64_t hidden_dim, const int32_t* token_ids,
                             int64_t num_tokens, float* out, cudaStream_t stream);

/// y[r][dim] = x[r][dim] / sqrt(mean(x[r]²) + eps) · weight[dim] for r < num_rows (ref::rms_norm). y may alias x.
cudaError_t rms_norm(const float* x, const float* weight, int64_t num_rows, int64_t dim, float eps, float* y,
                     cudaStream_t stream);

/// y[t][num_rows] = W (num_rows, num_cols) of w_type (Q8_0, BF16, F16, F32, MXFP4) · x[t][num_cols] + bias[num_rows]
/// for t < num_tokens (GEMV for decode, small batches: W is read once per 8 tokens). bias may be nullptr. num_cols
/// must be a multiple of 4 and of the type's block size; x 16-byte aligned. Dot products are accumulated in f32
/// over dequantized weights.
cudaError_t matvec(TensorType w_type, const void* w, int64_t num_rows, int64_t num_cols, const float* x,
                   int64_t num_tokens, const float* bias, float* y, cudaStream_t stream);

/// dst (num_rows, num_cols) f16 = dequantized src (num_rows, num_cols) of `type` (any type above), rounded to
/// nearest even, for cuBLAS GEMMs of prefill projections. Same num_cols rule as matvec; dst 4-byte aligned.
cudaError_t dequantize_to_f16(TensorType type, const void* src, int64_t num_rows, int64_t num_cols, void* dst_f16,
                              cudaStream_t stream);

/// y (num_tokens, num_rows) f32 = x (num_tokens, num_cols) f32 · Wᵀ + bias[num_rows] (bias may be nullptr), W
/// (num_rows, num_cols) f16 from dequantize_to_f16. x is first rounded to f16 into x_f16 (num_tokens · num_cols
/// halves of device scratch); cublasGemmEx multiplies with f32 accumulation on `stream` (this call binds the handle
/// to it with cublasSetStream; cuBLAS uses the handle's own workspace).
/// A cuBLAS failure maps to cudaErrorMemoryAllocation, cudaErrorInvalidValue, cudaErrorInitializationError or
/// cudaErrorUnknown. Dimensions ≤ INT_MAX.
cudaError_t gemm_f16(cublasHandle_t cublas, const void* w_f16, int64_t num_rows, int64_t num_cols, const float* x,
                     int64_t num_tokens, const float* bias, void* x_f16, float* y, cudaStream_t stream);

/// In-place YaRN NEOX RoPE (ref::rope_yarn_cos_sin + ref::rope_neox_apply) of x (num_tokens, num_heads, head_dim),
/// token t at position positions[t] (device array). The cos/sin of each position are computed on the device
/// in the reference's float order (θ bit-identical to the CPU; cosf/sinf within 2 ulp). params.num_rot_dims even
/// and ≤ head_dim; dims past it are left as they are.
cudaError_t rope_neox_yarn(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
                           const int32_t* positions, const ref::RopeYarnParams& params, cudaStream_t stream);

/// Element types of the device KV cache: f16, and ggml's q8_0 / q4_0 blocks of 32 values with an f16 scale d first,
/// exactly as the CPU cache stores them (cpu_kernels/kv_blocks.h, quantized with the same rounding):
///   q8_0 (34 bytes): {f16 d; int8 q[32]}, value j = d · q[j];
///   q4_0 (18 bytes): {f16 d; uint8 qs[16]}, value j = d · (nibble − 8), the low nibble of qs[j] for j < 16 and the
///   high nibble of qs[j − 16] for j ≥ 16.
/// The runtime's KvCacheType (runtime/model/kv_type.h) maps onto it (f32 has no CUDA kernels); kept apart so the .cu
/// sources (C++17) need not include the runtime's headers.
enum class KvType : uint8_t { kF16, kQ8_0, kQ4_0 };

inline constexpr int64_t kKvBlockElems = 32;
inline constexpr int64_t kKvQ8_0BlockBytes = 34;
inline constexpr int64_t kKvQ4_0BlockBytes = 18;

/// Bytes of one head's row of head_dim values (a multiple of 32 for q8_0 / q4_0): 2 · head_dim, 34 · head_dim / 32
/// or 18 · head_dim / 32 (runtime/model/kv_type.h kv_row_bytes).
inline constexpr int64_t kv_type_row_bytes(KvType type, int64_t head_dim) {
  return type == KvType::kF16    ? 2 * head_dim
         : type == KvType::kQ8_0 ? kKvQ8_0BlockBytes * (head_dim / kKvBlockElems)
                                 : kKvQ4_0BlockBytes * (head_dim / kKvBlockElems);
}

/// One layer's view of the device KV cache, laid out as runtime/exec/kv_cache.h: (kv_head, slot, row of head_dim
/// values of k_type / v_type, kv_type_row_bytes each), slot = pos % capacity (sliding layers: a ring; full layers:
/// capacity = context).
struct KvLayerView {
  void* k = nullptr;           // (num_kv_heads, capacity, kv_type_row_bytes(k_type, head_dim))
  void* v = nullptr;           // (num_kv_heads, capacity, kv_type_row_bytes(v_type, head_dim))
  int32_t capacity = 0;        // slots
  int32_t window = 0;          // keys a query sees: sliding_window, or capacity on full-attention layers
  KvType k_type = KvType::kF16;
  KvType v_type = KvType::kF16;
};

/// Writes k, v (num_tokens, num_kv_heads, head_dim) f32 of positions positions[t] into the cache in its types: f16
/// rounded to nearest even (as ref::f32_to_f16); q8_0 / q4_0 quantized per 32-value block bit-exactly as
/// cpu::quantize_kv_q8_0 / quantize_kv_q4_0 (same f32 operations, unfused; the scale rounded as ref::f32_to_f16).
/// The tokens' slots must be distinct (num_tokens ≤ capacity; a sliding ring needs capacity ≥ window + num_tokens − 1
/// so that the batch's first query still finds its keys). q8_0 / q4_0 need head_dim a multiple of 32.
cudaError_t kv_store(const KvLayerView& kv, const float* k, const float* v, int64_t num_tokens,
                     int64_t num_kv_heads, int64_t head_dim, const int32_t* positions, cudaStream_t stream);

/// Attention with sinks (gpt-oss-spec.md §3 step 5): out (num_tokens, num_heads, head_dim) f32 from q (num_tokens,
/// num_heads, head_dim) f32, the cache (already holding these tokens' K/V, any KvType for K and for V, read and
/// dequantized in the kernel as cpu::dequantize_kv_* does), sinks[num_heads] f32 logits, GQA group =
/// num_heads / num_kv_heads, scale = 1/sqrt(head_dim). Token t at position positions[t] sees keys
/// max(0, pos − window + 1) .. pos. `decode` = flash-decoding with split-K over the keys (num_tokens small);
/// `prefill` = tiled, causal + sliding-window mask. sinks may be nullptr (no sink). head_dim 32, 64 or 128.
/// decode: max_position ≥ every positions[t] sizes the split grid (a larger position is still handled, slower);
/// scratch: device floats, at least attention_scratch_floats(num_tokens, num_heads, head_dim, max_keys) with
/// max_keys ≥ min(max_position + 1, kv.window); num_tokens ≤ 65535.
cudaError_t attention_decode(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                             int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, const int32_t* positions,
                             int32_t max_position, float* scratch, float* out, cudaStream_t stream);
cudaError_t attention_prefill(const float* q, const KvLayerView& kv, const float* sinks, int64_t num_tokens,
                              int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, const int32_t* positions,
                              float* out, cudaStream_t stream);
/// Scratch floats attention_decode needs for num_tokens queries over up to max_keys keys (partial outputs and
/// softmax statistics of each 128-key split).
int64_t attention_scratch_floats(int64_t num_tokens, int64_t num_heads, int64_t head_dim, int64_t max_keys);

/// Router: logits (num_tokens, num_experts) f32 → for each token the top_k experts (ties: lower index first) in
/// expert_ids (num_tokens, top_k) int32 and their softmax over the top_k logits in weights (num_tokens, top_k) f32,
/// ordered by descending logit (gpt-oss-spec.md §3 step 7). num_experts ≤ 256, top_k ≤ 8.
cudaError_t router_topk_softmax(const float* logits, int64_t num_tokens, int64_t num_experts, int64_t top_k,
                                int32_t* expert_ids, float* weights, cudaStream_t stream);

/// One layer's experts on the device, in the GGUF tensors' layout (runtime/model/model.h LayerWeights): expert slot s's
/// matrices start at gate + s·(ffn_dim · hidden_dim row bytes) etc. `slot_of_expert[e]` maps a model expert id to its
/// device slot (−1: not resident on this device, skipped), so a layer can hold a subset of its experts.
struct ExpertWeights {
  TensorType type = TensorType::kMXFP4;  // of gate, up and down (MXFP4 in gpt-oss; Q8_0/F32 in tests)
  const void* gate = nullptr;            // (slots, ffn_dim, hidden_dim)
  const void* up = nullptr;              // (slots, ffn_dim, hidden_dim)
  const void* down = nullptr;            // (slots, hidden_dim, ffn_dim)
  const float* gate_bias = nullptr;      // (slots, ffn_dim) f32
  const float* up_bias = nullptr;        // (slots, ffn_dim) f32
  const float* down_bias = nullptr;      // (slots, hidden_dim) f32
  const int32_t* slot_of_expert = nullptr;  // (num_experts) device slot or −1
  int64_t hidden_dim = 0;
  int64_t ffn_dim = 0;
};

/// Decode-size MoE: out[t][hidden_dim] (+)= Σ_j weights[t][j] · expert_{ids[t][j]}(x[t]) over the selected experts
/// that are resident (slot ≥ 0), expert(x) = down · swiglu_oai(gate·x + bg, up·x + bu) + bd, fused per expert.
/// accumulate = false overwrites out, true adds to it (out += Σ, the sum formed first). scratch: device floats,
/// 16-byte aligned, at least moe_scratch_floats(num_tokens, top_k, ffn_dim, hidden_dim). expert_ids must be valid
/// model expert ids (< the length of slot_of_expert). Biases may be nullptr (zero). num_tokens·top_k ≤ 65535.
cudaError_t moe_experts_decode(const ExpertWeights& experts, const float* x, const int32_t* expert_ids,
                               const float* weights, int64_t num_tokens, int64_t top_k, bool accumulate,
                               float* scratch, float* out, cudaStream_t stream);
/// Prefill MoE: the same result as moe_experts_decode for many tokens, as a grouped GEMM over tokens sorted by
/// expert (sorting done on the device inside; `scratch` holds the permutation and intermediates).
/// num_experts ≤ 256 (the length of slot_of_expert); pairs with an id outside [0, num_experts) are skipped.
cudaError_t moe_experts_grouped(const ExpertWeights& experts, const float* x, const int32_t* expert_ids,
                                const float* weights, int64_t num_tokens, int64_t top_k, int64_t num_experts,
                                bool accumulate, float* scratch, float* out, cudaStream_t stream);
/// Scratch floats of either MoE launcher: (num_tokens·top_k)·(ffn_dim + hidden_dim + 1) + 514.
int64_t moe_scratch_floats(int64_t num_tokens, int64_t top_k, int64_t ffn_dim, int64_t hidden_dim);

/// y[i] = a[i] + b[i] (+ c[i] when c is not nullptr) for i < n: the residual add of the two partial expert sums.
cudaError_t add_vectors(const float* a, const float* b, const float* c, int64_t n, float* y, cudaStream_t stream);

}  // namespace hetmoe::gpu
