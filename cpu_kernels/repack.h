#pragma once
// MXFP4 and Q8_0 weights repacked for the CPU kernels: kMXFP4_R16 and kQ8_0_R16 (runtime/base/ggml_types.h), made in
// memory at load time from the file's layout (ik_llama.cpp's run-time repack is the same idea; these layouts are
// hetmoe's own).
//
// Every group of 16 consecutive rows (row 16g + i, i in [0, 16)) is stored block by block: for block b (values
// 32b .. 32b + 31 of every row) kMxfp4R16BlockBytes = 272 bytes, at offset b · 272 from the group's start:
//   bytes [0, 16)                 e[i]: the scale byte of row i's block b
//   bytes [16 + 64k, 16 + 64k + 64)   for k in [0, 4): row i's code bytes qs[4k .. 4k + 3] at 16 + 64k + 4i
// (an MXFP4 block's code byte j holds value j in its low nibble and value j + 16 in its high one). So one 64-byte
// load holds values 4k..4k+3 (low nibbles) and 16+4k..16+4k+3 (high nibbles) of all 16 rows: the 16 int32 lanes of a
// zmm are the 16 rows, and a VNNI dot product with an activation dword broadcast adds 4 products per row.
// A group occupies exactly the bytes of its 16 rows in the file's layout (16 · row_bytes = num_blocks · 272), so
// expert slabs and group addresses are unchanged; only the order inside a group differs.
//
// kQ8_0_R16, the same idea for Q8_0: block b of a group is kQ8R16BlockBytes = 544 bytes at offset b · 544:
//   bytes [0, 32)                     d[i]: row i's f16 scale of block b, at 2i
//   bytes [32 + 64k, 32 + 64k + 64)   for k in [0, 8): row i's q[4k .. 4k + 3] + 128 (as uint8) at 32 + 64k + 4i
// The codes are stored with the sign bit flipped (q + 128, unsigned) so that they are a VNNI dot product's unsigned
// operand as loaded; the kernels start each block's sum at −128 · Σ_j x_q[j].
#include <cstdint>

#include "cpu_kernels/kernels.h"

namespace hetmoe::cpu {

/// Rows per interleaved group (both R16 layouts).
inline constexpr int64_t kR16Rows = 16;
/// Bytes of one block of a group (16 rows × 17 bytes).
inline constexpr int64_t kMxfp4R16BlockBytes = 16 * 17;

/// Bytes of one block of a kQ8_0_R16 group (16 rows × 34 bytes).
inline constexpr int64_t kQ8R16BlockBytes = 16 * 34;

/// Rewrites groups [group_begin, group_end) of an MXFP4 matrix in place into the kMXFP4_R16 layout. data: the
/// matrix's first row; row_bytes = num_cols / 32 · 17 (rows packed, as in GGUF); scratch: 16 · row_bytes bytes the
/// caller owns (one per thread).
void repack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);

/// The inverse: groups [group_begin, group_end) back into the file's MXFP4 layout. Same contract.
void unpack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);

/// The same two for a Q8_0 matrix and kQ8_0_R16: row_bytes = num_cols / 32 · 34.
void repack_q8_0_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);
void unpack_q8_0_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);

/// The scalar kernel of kMXFP4_R16 weights, KernelTable::gemm_mxfp4_r16's contract: for every row r in [row_begin,
/// row_end) and token t, y[t · y_stride + r − row_begin] = Σ_b (float(Σ_j w_q · x_q) · d_x) · d_w, blocks in order,
/// exactly as the scalar MXFP4 GEMV of the unpacked rows (bit for bit). The reference the SIMD variants are tested
/// against; not in any table (a variant without a SIMD kernel does not repack).
void gemm_mxfp4_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                           const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);

/// The same for kQ8_0_R16 weights (KernelTable::gemm_q8_0_r16's contract): the bits of the scalar Q8_0 GEMV of the
/// unpacked rows.
void gemm_q8_0_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                          const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);

}  // namespace hetmoe::cpu
