#pragma once
// MXFP4 weights repacked for the CPU kernels: kMXFP4_R16 (runtime/base/ggml_types.h), made in memory at load time
// from the file's MXFP4 (ik_llama.cpp's run-time repack is the same idea; this layout is hetmoe's own).
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
#include <cstdint>

#include "cpu_kernels/kernels.h"

namespace hetmoe::cpu {

/// Rows per interleaved group.
inline constexpr int64_t kMxfp4R16Rows = 16;
/// Bytes of one block of a group (16 rows × 17 bytes).
inline constexpr int64_t kMxfp4R16BlockBytes = 16 * 17;

/// Rewrites groups [group_begin, group_end) of an MXFP4 matrix in place into the kMXFP4_R16 layout. data: the
/// matrix's first row; row_bytes = num_cols / 32 · 17 (rows packed, as in GGUF); scratch: 16 · row_bytes bytes the
/// caller owns (one per thread).
void repack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);

/// The inverse: groups [group_begin, group_end) back into the file's MXFP4 layout. Same contract.
void unpack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch);

/// The scalar kernel of kMXFP4_R16 weights, KernelTable::gemm_mxfp4_r16's contract: for every row r in [row_begin,
/// row_end) and token t, y[t · y_stride + r − row_begin] = Σ_b (float(Σ_j w_q · x_q) · d_x) · d_w, blocks in order,
/// exactly as the scalar MXFP4 GEMV of the unpacked rows (bit for bit). The reference the SIMD variants are tested
/// against; not in any table (a variant without a SIMD kernel does not repack).
void gemm_mxfp4_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                           const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride);

}  // namespace hetmoe::cpu
