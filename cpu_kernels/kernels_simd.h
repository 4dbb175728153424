// Generic SIMD kernels, compiled once per ISA (Highway's skeleton.cc pattern; xsimd's dispatching.rst): a per-ISA
// translation unit (kernels_avx2.cpp, kernels_avx512.cpp) built with its own -m flags defines HETMOE_SIMD_NS (an
// ISA-unique namespace, so that no inline helper is shared between TUs built with different flags — ODR), puts the
// ISA-specific pieces in hetmoe::cpu::HETMOE_SIMD_NS, and then includes this file, which adds the kernels and
// make_kernel_table() to the same namespace. No file without ISA flags may include this header.
//
// What the per-ISA TU provides before the include (in hetmoe::cpu::HETMOE_SIMD_NS):
//   DenseArch                      xsimd arch of the float kernels (f32/f16/bf16 weights, attention helpers)
//   kDenseGemmRows, kDenseGemmTokens  register tiling of the float-weight GEMM (rows × tokens)
//   float reduce_max(xsimd::batch<float, DenseArch>)
//   void store_q8(const xsimd::batch<int32_t, DenseArch>* q, int8_t* out)   32 / lanes vectors → out[32], each value
//                                                                            already in [-127, 127]
//   struct F16Weights, BF16Weights  weight loaders (see F32Weights below for the members)
//   struct Mxfp4Ops, Q8Ops          quantized block operations:
//     using Arch;                           xsimd arch of the float accumulators
//     static constexpr int64_t kBlockBytes; bytes of one weight block (32 values)
//     static constexpr int kGemvRows, kGemmRows, kGemmTokens;   register tiling
//     static constexpr int kGemmWideRows, kGemmWideTokens;  the one tile of batches of kGemmTokens + 1 to
//                                                          kGemmWideTokens tokens (gemm_quant_wide)
//     struct Act;  static Act prepare(const ActQ8Block&);        per activation block, shared by all rows
//     using Weights; static Weights decode(const uint8_t* block); per weight block, shared by all tokens
//     static batch<float, Arch> dot(const Weights&, const Act&);  the block's integer dot Σ_j w_q[j]·x_q[j],
//                                                                 exact, split over the lanes, converted to float
//     static batch<float, Arch> scale(const uint8_t* block);       the weight block's scale d_w, broadcast
//     optional, for the token-lane GEMM (gemm_quant_lanes): using Lanes; kLaneMinTokens; kLaneMinTail (a last
//       partial tile of fewer tokens goes to the row tiles);
//       decode_lane(block, out)
//     optional, block steps for the GEMV and the GEMM row tiles (quant_tile_steps; fewer instructions per block:
//       one weight decode, dot, convert and scale step per kStepBlocks blocks, the scales applied per step):
//       static constexpr int64_t kStepBlocks;                   blocks per step (2 or 4)
//       using Acc; acc_zero(); float acc_reduce(Acc);          per (row, token) accumulator and its horizontal sum
//       using StepAct; prepare_step(const ActQ8Block* x);      activation blocks x[0 .. kStepBlocks) in Q's layout
//       using StepWeights; decode_step(const uint8_t* block);  the weight blocks at block + i · kBlockBytes
//       Acc fma_step(const StepWeights&, const StepAct&, Acc); acc + the blocks' (dot · d_x) · d_w, per lane
//       Acc fma_last(const uint8_t* block, const ActQ8Block&, Acc); the same for one block (the last
//                                                                   num_blocks % kStepBlocks)
// A block adds (float(Σ_j w_q·x_q) · d_x) · d_w to the accumulator, the association of the scalar variant.
// No SIMD value may live at namespace scope or in a static initializer: those run before dispatch (SIGILL on a CPU
// without the ISA). Constants are built inside the functions. Standard-library templates are avoided here too: an
// out-of-line copy instantiated in a TU with ISA flags could be the one the linker keeps for every TU.

#pragma once

#if !defined(HETMOE_SIMD_NS)
#error "define HETMOE_SIMD_NS (an ISA-unique namespace) before including kernels_simd.h"
#endif

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_kernels/kernels_r16_seeds.h"
#include "cpu_kernels/kernels_variants.h"

namespace hetmoe::cpu::HETMOE_SIMD_NS {

inline constexpr int64_t kBlock = 32;

// ---- activation quantization ------------------------------------------------------------------------------------

/// x[n] → out[n / 32]: d = amax / 127, q = round-to-nearest-even(x · (1/d)), the same float operations as the scalar
/// variant (so the blocks are bit-identical).
inline void quantize_act_q8(const float* x, ActQ8Block* out, int64_t n) {
  using fb = xsimd::batch<float, DenseArch>;
  using ib = xsimd::batch<int32_t, DenseArch>;
  constexpr int kVecs = kBlock / fb::size;
  for (int64_t b = 0; b < n / kBlock; ++b) {
    fb v[kVecs];
    fb amax(0.0f);
    for (int i = 0; i < kVecs; ++i) {
      v[i] = fb::load_unaligned(x + b * kBlock + i * fb::size);
      amax = xsimd::max(amax, xsimd::abs(v[i]));
    }
    const float d = reduce_max(amax) / 127.0f;
    const fb inv_d(d != 0.0f ? 1.0f / d : 0.0f);
    ib q[kVecs];
    for (int i = 0; i < kVecs; ++i) q[i] = xsimd::nearbyint_as_int(v[i] * inv_d);
    out[b].d = d;
    store_q8(q, out[b].q);
  }
}

// ---- quantized GEMV / GEMM --------------------------------------------------------------------------------------

/// Software prefetch of the bytes [p, p + num_bytes) into L1 (prefetches never fault, so p may point past the data).
template <int64_t kNumBytes>
inline void prefetch_span(const uint8_t* p) {
  for (int64_t off = 0; off < kNumBytes; off += 64) __builtin_prefetch(p + off, 0, 3);
  __builtin_prefetch(p + kNumBytes - 1, 0, 3);
}

/// Whether Q multiplies weight blocks several at a time (the step members listed at the top of this file).
template <class Q>
concept QuantBlockSteps = requires { typename Q::StepAct; };

/// R rows × T tokens with Q's block-step members: y[t · y_stride + i] = Σ_b (dot · d_x) · d_w per (row i, token t),
/// kStepBlocks blocks per step (one activation step prepared per token for the R rows, one weight step decoded per
/// row for the T tokens) and the last num_blocks % kStepBlocks blocks alone. x: [T][num_blocks]. The GEMV (T = 1)
/// and the GEMM row tiles (below Q::kLaneMinTokens tokens) all run this, so every (row, token) sees the same
/// operations in the same order: the bit-identity of kGemmMatchesGemvBelowTokens. With kPrefetch, the R rows at
/// `prefetch` are streamed into L1 at the loop's pace (see gemv_quant_rows). `packed` (nullptr: none) holds the
/// tokens' activation steps prepared once per call by pack_steps ([T][num_blocks / kStepBlocks], Q::StepAct); the
/// same values as prepare_step, read from L1 instead of recomputed for every row group.
template <class Q, int R, int T, bool kPrefetch>
inline void quant_tile_steps(const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x, int64_t num_blocks, float* y,
                             int64_t y_stride, const uint8_t* prefetch, const void* packed) {
  constexpr int64_t kS = Q::kStepBlocks;
  typename Q::Acc acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = Q::acc_zero();
  int64_t b = 0;
  if (packed != nullptr) {
    const auto* acts = static_cast<const typename Q::StepAct*>(packed);
    const int64_t num_steps = num_blocks / kS;
    const uint8_t* wb = w;  // the step's first block in row 0
    for (int64_t st = 0; st < num_steps; ++st, wb += kS * Q::kBlockBytes) {
      if constexpr (kPrefetch) prefetch_span<kS * R * Q::kBlockBytes>(prefetch + st * (kS * R * Q::kBlockBytes));
      for (int i = 0; i < R; ++i) {
        const typename Q::StepWeights ws = Q::decode_step(wb + i * row_bytes);
        for (int t = 0; t < T; ++t) acc[i][t] = Q::fma_step(ws, acts[t * num_steps + st], acc[i][t]);
      }
    }
    b = num_steps * kS;
  }
  for (; b + kS <= num_blocks; b += kS) {
    if constexpr (kPrefetch) prefetch_span<kS * R * Q::kBlockBytes>(prefetch + b * (R * Q::kBlockBytes));
    typename Q::StepAct act[T];
    for (int t = 0; t < T; ++t) act[t] = Q::prepare_step(x + t * num_blocks + b);
    for (int i = 0; i < R; ++i) {
      const typename Q::StepWeights ws = Q::decode_step(w + i * row_bytes + b * Q::kBlockBytes);
      for (int t = 0; t < T; ++t) acc[i][t] = Q::fma_step(ws, act[t], acc[i][t]);
    }
  }
  for (; b < num_blocks; ++b) {
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < T; ++t)
        acc[i][t] = Q::fma_last(w + i * row_bytes + b * Q::kBlockBytes, x[t * num_blocks + b], acc[i][t]);
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) y[t * y_stride + i] = Q::acc_reduce(acc[i][t]);
}

/// The activation steps of num_tokens tokens (x: [num_tokens][num_blocks]) prepared once, in the calling thread's
/// scratch buffer: [num_tokens][num_blocks / kStepBlocks] Q::StepAct. nullptr when Q has no steps, there is no whole
/// step, or the buffer cannot grow (the tiles then prepare the steps themselves, with the same values).
template <class Q>
const void* pack_steps(const ActQ8Block* x, int64_t num_tokens, int64_t num_blocks) {
  if constexpr (QuantBlockSteps<Q>) {
    const int64_t num_steps = num_blocks / Q::kStepBlocks;
    if (num_steps == 0 || num_tokens == 0) return nullptr;
    void* buffer =
        detail::thread_scratch(static_cast<uint64_t>(num_tokens * num_steps) * sizeof(typename Q::StepAct));
    if (buffer == nullptr) return nullptr;
    auto* acts = static_cast<typename Q::StepAct*>(buffer);
    for (int64_t t = 0; t < num_tokens; ++t)
      for (int64_t st = 0; st < num_steps; ++st)
        acts[t * num_steps + st] = Q::prepare_step(x + t * num_blocks + st * Q::kStepBlocks);
    return buffer;
  } else {
    return nullptr;
  }
}

/// Token t of a pack_steps buffer (nullptr stays nullptr).
template <class Q>
const void* packed_token(const void* packed, int64_t t, int64_t num_blocks) {
  if constexpr (QuantBlockSteps<Q>) {
    if (packed != nullptr) return static_cast<const typename Q::StepAct*>(packed) + t * (num_blocks / Q::kStepBlocks);
  }
  return nullptr;
}

/// R consecutive rows starting at w: y[i] = Σ_b (Σ_j w_q[i,b,j] · x_q[b,j] · d_x[b]) · d_w[i,b]. Each activation block
/// is prepared once for the R rows; every row keeps its own float vector accumulator, reduced at the end.
/// R rows advancing side by side are R interleaved streams that the hardware prefetchers follow poorly (about 6 of
/// 15 GB/s on one core), so the loop also streams the R rows at `prefetch` (a row group further on, contiguous
/// R · row_bytes bytes) into L1 at the same pace: R · kBlockBytes bytes per block step.
template <class Q, int R>
inline void gemv_quant_rows(const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x, int64_t num_blocks, float* y,
                            const uint8_t* prefetch, const void* packed) {
  if constexpr (QuantBlockSteps<Q>) {
    quant_tile_steps<Q, R, 1, true>(w, row_bytes, x, num_blocks, y, 1, prefetch, packed);
  } else {
    using fb = xsimd::batch<float, typename Q::Arch>;
    fb acc[R];
    for (int i = 0; i < R; ++i) acc[i] = fb(0.0f);
    for (int64_t b = 0; b < num_blocks; ++b) {
      prefetch_span<R * Q::kBlockBytes>(prefetch + b * (R * Q::kBlockBytes));
      const typename Q::Act act = Q::prepare(x[b]);
      const fb dx(x[b].d);
      for (int i = 0; i < R; ++i) {
        const uint8_t* block = w + i * row_bytes + b * Q::kBlockBytes;
        acc[i] = xsimd::fma(Q::dot(Q::decode(block), act) * dx, Q::scale(block), acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) y[i] = xsimd::hadd(acc[i]);
  }
}

/// How far ahead gemv_quant_rows prefetches, in bytes, rounded down to whole row groups (at least one): 12 KB = 2
/// groups of 4 (or 1 of 8) MXFP4 rows of 2880, 1 group of 4 Q8_0 rows; ~0.8 µs of DRAM time at 15 GB/s, several
/// memory latencies.
/// Swept on one core from 6 to 72 KB (best of runs interleaved in time; this machine's DRAM is shared, ±10 % noise):
/// 12–24 KB were best for both types, 36 KB and more slower. Rows are assumed packed (row_bytes = the row's size, as in
/// GGUF); with padding the prefetch still helps, less.
inline constexpr uint64_t kPrefetchBytes = 12288;

/// kPrefetchBytes in whole row groups of group_bytes, at least 1.
inline int64_t prefetch_groups_ahead(uint64_t group_bytes) {
  return group_bytes == 0 || group_bytes > kPrefetchBytes ? 1 : static_cast<int64_t>(kPrefetchBytes / group_bytes);
}

/// Rows [row_begin, row_end) in groups of kR rows (the last row_end − row_begin mod kR one by one), each group
/// streaming a later one into L1 (gemv_quant_rows).
template <class Q, int kR>
void gemv_quant_r(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                  int64_t num_cols, float* y) {
  const int64_t num_blocks = num_cols / kBlock;
  const int64_t groups_ahead = prefetch_groups_ahead(kR * row_bytes);
  const void* packed = row_end > row_begin ? pack_steps<Q>(x, 1, num_blocks) : nullptr;
  int64_t r = row_begin;
  for (; r + kR <= row_end; r += kR) {
    // Rows past row_end are not ours to read: prefetch the last group of the range instead (already in cache).
    const int64_t prefetch_row = r + groups_ahead * kR <= row_end - kR ? r + groups_ahead * kR : row_end - kR;
    gemv_quant_rows<Q, kR>(w + r * row_bytes, row_bytes, x, num_blocks, y + (r - row_begin),
                           w + prefetch_row * row_bytes, packed);
  }
  for (; r < row_end; ++r)
    gemv_quant_rows<Q, 1>(w + r * row_bytes, row_bytes, x, num_blocks, y + (r - row_begin), w + r * row_bytes,
                          packed);
}

/// The GEMV: rows in groups of Q::kGemvRows, or of 8 where that is 4 and a row is over 4 KiB (Q8_0 of 4096 columns:
/// the attention output projection). BM_Gemv q8_0 attn_out (2880 × 4096), 1 thread: groups of 8 ahead of groups of
/// 4 in 9 of 9 interleaved pairs at avx2, avx2_vnni and avx512 (+5 to +36 %; 2880-column rows: 8 is slower, 23
/// against 30 GB/s); in decode traces o_proj 33–35 GB/s against 29–32. A row's sums are the same either way.
template <class Q>
void gemv_quant(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                int64_t num_cols, float* y) {
  if constexpr (Q::kGemvRows == 4) {
    if (row_bytes > 4096) return gemv_quant_r<Q, 8>(w, row_bytes, row_begin, row_end, x, num_cols, y);
  }
  gemv_quant_r<Q, Q::kGemvRows>(w, row_bytes, row_begin, row_end, x, num_cols, y);
}

/// A tile of R rows × T tokens: each weight block is decoded once and multiplied with T activation blocks; each
/// activation block is prepared once for the R rows. x: [T][num_blocks] (token stride num_blocks); y[t · y_stride + i].
template <class Q, int R, int T>
inline void gemm_quant_tile(const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x, int64_t num_blocks, float* y,
                            int64_t y_stride, const uint8_t* prefetch = nullptr, const void* packed = nullptr) {
  if constexpr (QuantBlockSteps<Q>) {
    if (prefetch != nullptr)
      return quant_tile_steps<Q, R, T, true>(w, row_bytes, x, num_blocks, y, y_stride, prefetch, packed);
    return quant_tile_steps<Q, R, T, false>(w, row_bytes, x, num_blocks, y, y_stride, nullptr, packed);
  }
  using fb = xsimd::batch<float, typename Q::Arch>;
  fb acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = fb(0.0f);
  for (int64_t b = 0; b < num_blocks; ++b) {
    typename Q::Act act[T];
    fb dx[T];
    for (int t = 0; t < T; ++t) {
      act[t] = Q::prepare(x[t * num_blocks + b]);
      dx[t] = fb(x[t * num_blocks + b].d);
    }
    for (int i = 0; i < R; ++i) {
      const uint8_t* block = w + i * row_bytes + b * Q::kBlockBytes;
      const typename Q::Weights wq = Q::decode(block);
      const fb dw = Q::scale(block);
      for (int t = 0; t < T; ++t) acc[i][t] = xsimd::fma(Q::dot(wq, act[t]) * dx[t], dw, acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) y[t * y_stride + i] = xsimd::hadd(acc[i][t]);
}

/// The last num_tokens < Q::kGemmTokens tokens of a row tile, with a tile of exactly that many tokens.
template <class Q, int R, int T = 1>
inline void gemm_quant_token_tail(int64_t num_tokens, const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x,
                                  int64_t num_blocks, float* y, int64_t y_stride, const uint8_t* prefetch,
                                  const void* packed) {
  if constexpr (T < Q::kGemmTokens) {
    if (num_tokens == T) return gemm_quant_tile<Q, R, T>(w, row_bytes, x, num_blocks, y, y_stride, prefetch, packed);
    gemm_quant_token_tail<Q, R, T + 1>(num_tokens, w, row_bytes, x, num_blocks, y, y_stride, prefetch, packed);
  }
}

/// R rows for num_tokens tokens: the R weight rows stay in L1 while the token tiles pass over them. The first tile
/// streams the row group at `prefetch` (nullptr: none) into L1 at its pace, as the GEMV does: with few tokens (batched
/// decode) the weights come from DRAM just as in the GEMV.
template <class Q, int R>
inline void gemm_quant_rows(const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x, int64_t num_tokens,
                            int64_t num_blocks, float* y, int64_t y_stride, const uint8_t* prefetch,
                            const void* packed) {
  constexpr int kT = Q::kGemmTokens;
  int64_t t = 0;
  for (; t + kT <= num_tokens; t += kT) {
    gemm_quant_tile<Q, R, kT>(w, row_bytes, x + t * num_blocks, num_blocks, y + t * y_stride, y_stride,
                              t == 0 ? prefetch : nullptr, packed_token<Q>(packed, t, num_blocks));
  }
  if (t < num_tokens)
    gemm_quant_token_tail<Q, R>(num_tokens - t, w, row_bytes, x + t * num_blocks, num_blocks, y + t * y_stride,
                                y_stride, t == 0 ? prefetch : nullptr, packed_token<Q>(packed, t, num_blocks));
}

/// Activation bytes per token chunk of the GEMMs: the chunk's activations (re-read for every row tile) stay in L2
/// (2 MiB per core here, 1 MiB on older server cores); weights are re-read once per chunk, which costs little: a
/// chunk of ≥ 100 tokens does ≥ 100 multiply-adds per weight loaded.
inline constexpr int64_t kGemmChunkBytes = 512 * 1024;

/// Tokens per GEMM chunk for a token of token_bytes activation bytes: a multiple of the token tile, at least one tile.
template <int kTokenTile>
inline int64_t gemm_chunk_tokens(int64_t token_bytes) {
  const int64_t tokens = token_bytes > 0 ? kGemmChunkBytes / token_bytes : kGemmChunkBytes;
  return tokens < kTokenTile ? kTokenTile : tokens - tokens % kTokenTile;
}

/// How many rows ahead gemm_quant_lanes prefetches the weights it decodes (2 rows of 2880 MXFP4 values: 3 KB).
inline constexpr int64_t kLaneRowsAhead = 2;

/// The token-lane GEMM of variants whose Q has `Lanes` (see LaneGemm in kernels_avx512.cpp for what it provides):
/// per chunk of tokens, the activations are packed once into tiles of Lanes::kTokens tokens (Lanes::ActBlock, the
/// layout the tile kernel reads: tokens across the lanes); per group of Lanes::kRows rows, every weight block is
/// decoded once (Q::decode_lane, rows read front to back) and the chunk's tiles pass over the decoded group.
/// Returns false (nothing written) when the thread's scratch buffer cannot grow; the caller then uses the row tiles.
template <class Q, class DecodeRows>
bool gemm_lanes(int64_t row_begin, int64_t row_end, const ActQ8Block* x, int64_t num_tokens, int64_t num_blocks,
                float* y, int64_t y_stride, const DecodeRows& decode_rows);

template <class Q>
bool gemm_quant_lanes(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                      int64_t num_tokens, int64_t num_blocks, float* y, int64_t y_stride) {
  using WeightBlock = typename Q::Lanes::WeightBlock;
  constexpr int64_t kR = Q::Lanes::kRows;
  // A last group with fewer rows decodes the range's last row again in the missing places (never read past it).
  // Rows are read front to back, one at a time, and the row kLaneRowsAhead further on is prefetched at the same
  // pace: without it the decode loop waited on its weight loads (58 % of the kernel's samples on the two weight
  // loads in a perf profile of pp64, where each expert's rows are read once for ~8 tokens).
  const auto decode_rows = [&](int64_t r, WeightBlock* wd) {
    for (int64_t i = 0; i < kR; ++i) {
      const uint8_t* row = w + std::min(r + i, row_end - 1) * row_bytes;
      const uint8_t* ahead = w + std::min(r + i + kLaneRowsAhead, row_end - 1) * row_bytes;
      for (int64_t b = 0; b < num_blocks; ++b) {
        __builtin_prefetch(ahead + b * Q::kBlockBytes, 0, 3);
        Q::decode_lane(row + b * Q::kBlockBytes, wd + b * kR + i);
      }
    }
  };
  return gemm_lanes<Q>(row_begin, row_end, x, num_tokens, num_blocks, y, y_stride, decode_rows);
}

/// gemm_quant_lanes over any weight layout: decode_rows(r, wd) writes the decoded blocks of rows [r, r +
/// Lanes::kRows) into wd ([num_blocks][kRows]; in place of rows past row_end, any rows of the range). Same return.
template <class Q, class DecodeRows>
bool gemm_lanes(int64_t row_begin, int64_t row_end, const ActQ8Block* x, int64_t num_tokens, int64_t num_blocks,
                float* y, int64_t y_stride, const DecodeRows& decode_rows) {
  using L = typename Q::Lanes;
  using ActBlock = typename L::ActBlock;
  using WeightBlock = typename L::WeightBlock;
  constexpr int64_t kT = L::kTokens;
  constexpr int64_t kR = L::kRows;
  if (num_blocks == 0 || row_end <= row_begin) {
    for (int64_t t = 0; t < num_tokens; ++t)
      for (int64_t r = row_begin; r < row_end; ++r) y[t * y_stride + (r - row_begin)] = 0.0f;
    return true;
  }
  const int64_t tile_bytes = num_blocks * static_cast<int64_t>(sizeof(ActBlock));
  const int64_t chunk_tiles = std::max<int64_t>(1, kGemmChunkBytes / tile_bytes);
  const int64_t num_tiles = std::min(chunk_tiles, (num_tokens + kT - 1) / kT);
  const int64_t weight_bytes = num_blocks * kR * static_cast<int64_t>(sizeof(WeightBlock));
  void* buffer = detail::thread_scratch(static_cast<uint64_t>(num_tiles * tile_bytes + weight_bytes));
  if (buffer == nullptr) return false;
  auto* act = static_cast<ActBlock*>(buffer);  // [num_tiles][num_blocks]
  auto* wd = reinterpret_cast<WeightBlock*>(static_cast<uint8_t*>(buffer) + num_tiles * tile_bytes);  // [nb][kR]
  alignas(64) float out[kR * kT];  // [kR][kT]
  for (int64_t t0 = 0; t0 < num_tokens; t0 += num_tiles * kT) {
    const int64_t chunk_tokens = std::min(num_tokens - t0, num_tiles * kT);
    const int64_t chunk_num_tiles = (chunk_tokens + kT - 1) / kT;
    for (int64_t tile = 0; tile < chunk_num_tiles; ++tile)
      L::pack(x + (t0 + tile * kT) * num_blocks, num_blocks, std::min(kT, chunk_tokens - tile * kT),
              act + tile * num_blocks);
    for (int64_t r = row_begin; r < row_end; r += kR) {
      decode_rows(r, wd);
      const int64_t rows = std::min(kR, row_end - r);
      for (int64_t tile = 0; tile < chunk_num_tiles; ++tile) {
        L::template tile<kR>(wd, act + tile * num_blocks, num_blocks, out);
        const int64_t n = std::min(kT, chunk_tokens - tile * kT);
        float* yt = y + (t0 + tile * kT) * y_stride + (r - row_begin);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t i = 0; i < rows; ++i) yt[t * y_stride + i] = out[i * kT + t];
      }
    }
  }
  return true;
}

/// gemm_quant_tile<Q, R, T> for the T in [kLo, kHi] that equals num_tokens (none when outside).
template <class Q, int R, int kLo, int kHi>
inline void gemm_quant_tile_of(int64_t num_tokens, const uint8_t* w, uint64_t row_bytes, const ActQ8Block* x,
                               int64_t num_blocks, float* y, int64_t y_stride, const uint8_t* prefetch,
                               const void* packed) {
  if constexpr (kLo <= kHi) {
    if (num_tokens == kLo)
      return gemm_quant_tile<Q, R, kLo>(w, row_bytes, x, num_blocks, y, y_stride, prefetch, packed);
    gemm_quant_tile_of<Q, R, kLo + 1, kHi>(num_tokens, w, row_bytes, x, num_blocks, y, y_stride, prefetch, packed);
  }
}

/// Batches of kGemmTokens < num_tokens ≤ kGemmWideTokens (batched decode of 5 to 8 sequences): one tile of
/// Q::kGemmWideRows rows × all the tokens, so every weight block is decoded once for the batch (with tiles of
/// kGemmTokens tokens it would be decoded twice). The same per-(row, token) operations as the GEMV.
template <class Q>
void gemm_quant_wide(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                     int64_t num_tokens, int64_t num_blocks, float* y, int64_t y_stride) {
  constexpr int kR = Q::kGemmWideRows;
  constexpr int kLo = Q::kGemmTokens + 1, kHi = Q::kGemmWideTokens;
  const int64_t groups_ahead = prefetch_groups_ahead(kR * row_bytes);
  const void* packed = row_end > row_begin ? pack_steps<Q>(x, num_tokens, num_blocks) : nullptr;
  int64_t r = row_begin;
  for (; r + kR <= row_end; r += kR) {
    const int64_t prefetch_row = r + groups_ahead * kR <= row_end - kR ? r + groups_ahead * kR : row_end - kR;
    gemm_quant_tile_of<Q, kR, kLo, kHi>(num_tokens, w + r * row_bytes, row_bytes, x, num_blocks,
                                        y + (r - row_begin), y_stride, w + prefetch_row * row_bytes, packed);
  }
  for (; r < row_end; ++r)
    gemm_quant_tile_of<Q, 1, kLo, kHi>(num_tokens, w + r * row_bytes, row_bytes, x, num_blocks, y + (r - row_begin),
                                       y_stride, w + r * row_bytes, packed);
}

template <class Q>
void gemm_quant(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  const int64_t num_blocks = num_cols / kBlock;
  if constexpr (requires { typename Q::Lanes; })
    static_assert(Q::kLaneMinTokens >= kGemmMatchesGemvBelowTokens, "the token lanes sum in another order");
  if constexpr (requires { typename Q::Lanes; }) {
    if (num_tokens >= Q::kLaneMinTokens) {
      // A last partial tile of fewer than Q::kLaneMinTail tokens costs the lanes more than the row tiles (AVX2):
      // those tokens go to the row tiles below.
      constexpr int64_t kT = Q::Lanes::kTokens;
      const int64_t tail = num_tokens % kT;
      const int64_t lane_tokens = tail >= Q::kLaneMinTail ? num_tokens : num_tokens - tail;
      if (gemm_quant_lanes<Q>(w, row_bytes, row_begin, row_end, x, lane_tokens, num_blocks, y, y_stride)) {
        if (lane_tokens == num_tokens) return;
        x += lane_tokens * num_blocks;
        y += lane_tokens * y_stride;
        num_tokens -= lane_tokens;
      }
    }
  }
  if (num_tokens > Q::kGemmTokens && num_tokens <= Q::kGemmWideTokens)
    return gemm_quant_wide<Q>(w, row_bytes, row_begin, row_end, x, num_tokens, num_blocks, y, y_stride);
  const int64_t chunk = gemm_chunk_tokens<Q::kGemmTokens>(num_blocks * static_cast<int64_t>(sizeof(ActQ8Block)));
  for (int64_t t0 = 0; t0 < num_tokens; t0 += chunk) {
    const int64_t n = num_tokens - t0 < chunk ? num_tokens - t0 : chunk;
    const ActQ8Block* xc = x + t0 * num_blocks;
    float* yc = y + t0 * y_stride;
    constexpr int kR = Q::kGemmRows;
    const int64_t groups_ahead = prefetch_groups_ahead(kR * row_bytes);
    const void* packed = row_end > row_begin ? pack_steps<Q>(xc, n, num_blocks) : nullptr;
    int64_t r = row_begin;
    for (; r + kR <= row_end; r += kR) {
      // As in gemv_quant: a later row group of the range (the last one near the end), only in the first chunk.
      const int64_t prefetch_row = r + groups_ahead * kR <= row_end - kR ? r + groups_ahead * kR : row_end - kR;
      gemm_quant_rows<Q, kR>(w + r * row_bytes, row_bytes, xc, n, num_blocks, yc + (r - row_begin), y_stride,
                             t0 == 0 ? w + prefetch_row * row_bytes : nullptr, packed);
    }
    for (; r < row_end; ++r)
      gemm_quant_rows<Q, 1>(w + r * row_bytes, row_bytes, xc, n, num_blocks, yc + (r - row_begin), y_stride,
                            t0 == 0 ? w + r * row_bytes : nullptr, packed);
  }
}

// ---- float-weight GEMV / GEMM -----------------------------------------------------------------------------------

/// F32 weights; F16Weights and BF16Weights (per ISA) have the same members.
struct F32Weights {
  using Arch = DenseArch;
  static constexpr int64_t kBytes = 4;  // bytes per weight
  static xsimd::batch<float, Arch> load(const uint8_t* p) {
    return xsimd::batch<float, Arch>::load_unaligned(reinterpret_cast<const float*>(p));
  }
  static float value(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
};

/// R consecutive rows: y[i] = Σ_k W[i, k] · x[k]; vector body, scalar tail for num_cols % lanes. Prefetches the row
/// group at `prefetch` at the pace of the loop, as gemv_quant_rows does.
template <class L, int R>
inline void gemv_dense_rows(const uint8_t* w, uint64_t row_bytes, const float* x, int64_t num_cols, float* y,
                            const uint8_t* prefetch) {
  using fb = xsimd::batch<float, typename L::Arch>;
  constexpr int64_t kLanes = fb::size;
  fb acc[R];
  for (int i = 0; i < R; ++i) acc[i] = fb(0.0f);
  int64_t k = 0;
  for (; k + kLanes <= num_cols; k += kLanes) {
    prefetch_span<R * kLanes * L::kBytes>(prefetch + k * (R * L::kBytes));
    const fb xv = fb::load_unaligned(x + k);
    for (int i = 0; i < R; ++i) acc[i] = xsimd::fma(L::load(w + i * row_bytes + k * L::kBytes), xv, acc[i]);
  }
  for (int i = 0; i < R; ++i) {
    float sum = xsimd::hadd(acc[i]);
    for (int64_t kk = k; kk < num_cols; ++kk) sum += L::value(w + i * row_bytes + kk * L::kBytes) * x[kk];
    y[i] = sum;
  }
}

template <class L>
void gemv_dense(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                int64_t num_cols, float* y) {
  constexpr int kR = 4;
  const int64_t groups_ahead = prefetch_groups_ahead(kR * row_bytes);
  int64_t r = row_begin;
  for (; r + kR <= row_end; r += kR) {
    const int64_t prefetch_row = r + groups_ahead * kR <= row_end - kR ? r + groups_ahead * kR : row_end - kR;
    gemv_dense_rows<L, kR>(w + r * row_bytes, row_bytes, x, num_cols, y + (r - row_begin),
                           w + prefetch_row * row_bytes);
  }
  for (; r < row_end; ++r)
    gemv_dense_rows<L, 1>(w + r * row_bytes, row_bytes, x, num_cols, y + (r - row_begin), w + r * row_bytes);
}

/// A tile of R rows × T tokens of float weights; x: [T][num_cols] (token stride num_cols).
template <class L, int R, int T>
inline void gemm_dense_tile(const uint8_t* w, uint64_t row_bytes, const float* x, int64_t num_cols, float* y,
                            int64_t y_stride) {
  using fb = xsimd::batch<float, typename L::Arch>;
  constexpr int64_t kLanes = fb::size;
  fb acc[R][T];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = fb(0.0f);
  int64_t k = 0;
  for (; k + kLanes <= num_cols; k += kLanes) {
    fb wv[R];
    for (int i = 0; i < R; ++i) wv[i] = L::load(w + i * row_bytes + k * L::kBytes);
    for (int t = 0; t < T; ++t) {
      const fb xv = fb::load_unaligned(x + t * num_cols + k);
      for (int i = 0; i < R; ++i) acc[i][t] = xsimd::fma(wv[i], xv, acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < T; ++t) {
      float sum = xsimd::hadd(acc[i][t]);
      for (int64_t kk = k; kk < num_cols; ++kk)
        sum += L::value(w + i * row_bytes + kk * L::kBytes) * x[t * num_cols + kk];
      y[t * y_stride + i] = sum;
    }
  }
}

template <class L, int R, int T = 1>
inline void gemm_dense_token_tail(int64_t num_tokens, const uint8_t* w, uint64_t row_bytes, const float* x,
                                  int64_t num_cols, float* y, int64_t y_stride) {
  if constexpr (T < kDenseGemmTokens) {
    if (num_tokens == T) return gemm_dense_tile<L, R, T>(w, row_bytes, x, num_cols, y, y_stride);
    gemm_dense_token_tail<L, R, T + 1>(num_tokens, w, row_bytes, x, num_cols, y, y_stride);
  }
}

template <class L, int R>
inline void gemm_dense_rows(const uint8_t* w, uint64_t row_bytes, const float* x, int64_t num_tokens,
                            int64_t num_cols, float* y, int64_t y_stride) {
  constexpr int kT = kDenseGemmTokens;
  int64_t t = 0;
  for (; t + kT <= num_tokens; t += kT)
    gemm_dense_tile<L, R, kT>(w, row_bytes, x + t * num_cols, num_cols, y + t * y_stride, y_stride);
  if (t < num_tokens)
    gemm_dense_token_tail<L, R>(num_tokens - t, w, row_bytes, x + t * num_cols, num_cols, y + t * y_stride, y_stride);
}

template <class L>
void gemm_dense(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const float* x,
                int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  const int64_t chunk = gemm_chunk_tokens<kDenseGemmTokens>(num_cols * static_cast<int64_t>(sizeof(float)));
  for (int64_t t0 = 0; t0 < num_tokens; t0 += chunk) {
    const int64_t n = num_tokens - t0 < chunk ? num_tokens - t0 : chunk;
    const float* xc = x + t0 * num_cols;
    float* yc = y + t0 * y_stride;
    int64_t r = row_begin;
    for (; r + kDenseGemmRows <= row_end; r += kDenseGemmRows)
      gemm_dense_rows<L, kDenseGemmRows>(w + r * row_bytes, row_bytes, xc, n, num_cols, yc + (r - row_begin),
                                         y_stride);
    for (; r < row_end; ++r)
      gemm_dense_rows<L, 1>(w + r * row_bytes, row_bytes, xc, n, num_cols, yc + (r - row_begin), y_stride);
  }
}

// ---- attention helpers ------------------------------------------------------------------------------------------

/// Σ_i a[i] · v[i] with a f32 and v of the loader's type; two accumulators, scalar tail.
template <class L>
inline float dot_f32_weights(const float* a, const uint8_t* v, int64_t n) {
  using fb = xsimd::batch<float, typename L::Arch>;
  constexpr int64_t kLanes = fb::size;
  fb acc0(0.0f), acc1(0.0f);
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = xsimd::fma(fb::load_unaligned(a + i), L::load(v + i * L::kBytes), acc0);
    acc1 = xsimd::fma(fb::load_unaligned(a + i + kLanes), L::load(v + (i + kLanes) * L::kBytes), acc1);
  }
  for (; i + kLanes <= n; i += kLanes) acc0 = xsimd::fma(fb::load_unaligned(a + i), L::load(v + i * L::kBytes), acc0);
  float sum = xsimd::hadd(acc0 + acc1);
  for (; i < n; ++i) sum += a[i] * L::value(v + i * L::kBytes);
  return sum;
}

/// out[i] += a · v[i] with v of the loader's type.
template <class L>
inline void axpy_weights(float a, const uint8_t* v, float* out, int64_t n) {
  using fb = xsimd::batch<float, typename L::Arch>;
  constexpr int64_t kLanes = fb::size;
  const fb av(a);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    xsimd::fma(av, L::load(v + i * L::kBytes), fb::load_unaligned(out + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] += a * L::value(v + i * L::kBytes);
}

inline float dot_f32_f16(const float* q, const uint16_t* k, int64_t n) {
  return dot_f32_weights<F16Weights>(q, reinterpret_cast<const uint8_t*>(k), n);
}
inline void axpy_f16(float a, const uint16_t* v, float* out, int64_t n) {
  axpy_weights<F16Weights>(a, reinterpret_cast<const uint8_t*>(v), out, n);
}
inline float dot_f32(const float* a, const float* b, int64_t n) {
  return dot_f32_weights<F32Weights>(a, reinterpret_cast<const uint8_t*>(b), n);
}
inline void axpy_f32(float a, const float* v, float* out, int64_t n) {
  axpy_weights<F32Weights>(a, reinterpret_cast<const uint8_t*>(v), out, n);
}

/// Converts one K/V row of the loader's type to f32 (head_dim values).
template <class L>
inline void load_row_f32(const uint8_t* src, int64_t n, float* dst) {
  using fb = xsimd::batch<float, typename L::Arch>;
  constexpr int64_t kLanes = fb::size;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) L::load(src + i * L::kBytes).store_unaligned(dst + i);
  for (; i < n; ++i) dst[i] = L::value(src + i * L::kBytes);
}

template <class L>
void attn_scores(const float* q, int64_t group, const uint8_t* k, int64_t stride_bytes, int64_t num_keys,
                 int64_t head_dim, float scale, float* scores, int64_t scores_stride) {
  alignas(64) float row[kMaxAttnHeadDim];  // (head_dim) K_j in f32
  for (int64_t j = 0; j < num_keys; ++j) {
    load_row_f32<L>(k + j * stride_bytes, head_dim, row);
    for (int64_t h = 0; h < group; ++h)
      scores[h * scores_stride + j] =
          scale * dot_f32_weights<F32Weights>(q + h * head_dim, reinterpret_cast<const uint8_t*>(row), head_dim);
  }
}

template <class L>
void attn_values(const float* p, int64_t p_stride, int64_t group, const uint8_t* v, int64_t stride_bytes,
                 int64_t num_keys, int64_t head_dim, float* out) {
  alignas(64) float row[kMaxAttnHeadDim];  // (head_dim) V_j in f32
  for (int64_t j = 0; j < num_keys; ++j) {
    load_row_f32<L>(v + j * stride_bytes, head_dim, row);
    for (int64_t h = 0; h < group; ++h)
      axpy_weights<F32Weights>(p[h * p_stride + j], reinterpret_cast<const uint8_t*>(row), out + h * head_dim,
                               head_dim);
  }
}

inline void softmax_with_sink(float* s, int64_t n, float sink) {
  using fb = xsimd::batch<float, DenseArch>;
  constexpr int64_t kLanes = fb::size;
  fb vmax(sink);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vmax = xsimd::max(vmax, fb::load_unaligned(s + i));
  // Lanes reduced through memory: GCC 12 warns (-Wuninitialized, a false positive inside its own header) when
  // _mm512_reduce_max_ps is inlined here.
  alignas(64) float lanes[kLanes];
  vmax.store_aligned(lanes);
  float m = *std::max_element(lanes, lanes + kLanes);
  for (int64_t j = i; j < n; ++j) m = std::max(m, s[j]);
  const fb vm(m);
  fb vsum(0.0f);
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const fb e = xsimd::exp(fb::load_unaligned(s + i) - vm);
    e.store_unaligned(s + i);
    vsum += e;
  }
  float z = xsimd::hadd(vsum) + std::exp(sink - m);
  for (int64_t j = i; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    z += s[j];
  }
  const fb inv(1.0f / z);
  i = 0;
  for (; i + kLanes <= n; i += kLanes) (fb::load_unaligned(s + i) * inv).store_unaligned(s + i);
  for (int64_t j = i; j < n; ++j) s[j] *= 1.0f / z;
}

/// ref::swiglu_oai over the lanes (xsimd::exp, a few ulp from libm's expf). min / max take the data as their second
/// operand: x86 min/max return the second operand when either is NaN, so a NaN gate or up stays NaN as in the
/// reference (std::min / std::clamp).
inline void swiglu_oai(const float* gate, const float* up, float* out, int64_t n, float alpha, float limit) {
  using fb = xsimd::batch<float, DenseArch>;
  constexpr int64_t kLanes = fb::size;
  const fb vlimit(limit), vneg_limit(-limit), vneg_alpha(-alpha), one(1.0f);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const fb g = xsimd::min(vlimit, fb::load_unaligned(gate + i));
    const fb a = xsimd::min(vlimit, xsimd::max(vneg_limit, fb::load_unaligned(up + i)));
    ((g / (one + xsimd::exp(vneg_alpha * g))) * (a + one)).store_unaligned(out + i);
  }
  if (i < n) ref::swiglu_oai(gate + i, up + i, out + i, n - i, alpha, limit);
}

/// ref::rope_neox_apply over the lanes (products possibly contracted into FMAs: within an ulp of the reference).
inline void rope_neox(float* x, int32_t num_rot_dims, const float* cos_tab, const float* sin_tab) {
  using fb = xsimd::batch<float, DenseArch>;
  constexpr int64_t kLanes = fb::size;
  const int64_t half = num_rot_dims / 2;
  int64_t i = 0;
  for (; i + kLanes <= half; i += kLanes) {
    const fb x0 = fb::load_unaligned(x + i), x1 = fb::load_unaligned(x + i + half);
    const fb c = fb::load_unaligned(cos_tab + i), s = fb::load_unaligned(sin_tab + i);
    (x0 * c - x1 * s).store_unaligned(x + i);
    (x0 * s + x1 * c).store_unaligned(x + i + half);
  }
  for (; i < half; ++i) {
    const float x0 = x[i], x1 = x[i + half];
    x[i] = x0 * cos_tab[i] - x1 * sin_tab[i];
    x[i + half] = x0 * sin_tab[i] + x1 * cos_tab[i];
  }
}

// ---- the table ----------------------------------------------------------------------------------------------------

constexpr KernelTable make_kernel_table(Isa isa) {
  return KernelTable{
      .isa = isa,
      .quantize_act_q8 = quantize_act_q8,
      .gemv_mxfp4 = gemv_quant<Mxfp4Ops>,
      .gemv_q8_0 = gemv_quant<Q8Ops>,
      .gemv_f32 = gemv_dense<F32Weights>,
      .gemv_f16 = gemv_dense<F16Weights>,
      .gemv_bf16 = gemv_dense<BF16Weights>,
      .gemm_mxfp4 = gemm_quant<Mxfp4Ops>,
      .gemm_q8_0 = gemm_quant<Q8Ops>,
      .gemm_f32 = gemm_dense<F32Weights>,
      .gemm_f16 = gemm_dense<F16Weights>,
      .gemm_bf16 = gemm_dense<BF16Weights>,
      .dot_f32_f16 = dot_f32_f16,
      .axpy_f16 = axpy_f16,
      .dot_f32 = dot_f32,
      .axpy_f32 = axpy_f32,
      .attn_scores_f16 = attn_scores<F16Weights>,
      .attn_values_f16 = attn_values<F16Weights>,
      .attn_scores_f32 = attn_scores<F32Weights>,
      .attn_values_f32 = attn_values<F32Weights>,
      .softmax_with_sink = softmax_with_sink,
      .swiglu_oai = swiglu_oai,
      .rope_neox = rope_neox,
  };
}

}  // namespace hetmoe::cpu::HETMOE_SIMD_NS
