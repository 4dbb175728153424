// kMXFP4_R16 and kQ8_0_R16 repacking and their scalar kernels (cpu_kernels/repack.h). No ISA flags.
#include "cpu_kernels/repack.h"

#include <cstring>

#include "cpu_kernels/kernels_variants.h"
#include "cpu_kernels/reference.h"

namespace hetmoe::cpu {
namespace {

constexpr int64_t kRows = kR16Rows;

/// Byte offset, inside an MXFP4_R16 group's block, of row i's scale and of its code bytes qs[4k .. 4k + 3].
constexpr int64_t scale_offset(int64_t i) { return i; }
constexpr int64_t codes_offset(int64_t i, int64_t k) { return 16 + 64 * k + 4 * i; }
/// The same in a Q8_0_R16 group's block: row i's f16 scale and its q[4k .. 4k + 3] (+ 128).
constexpr int64_t q8_scale_offset(int64_t i) { return 2 * i; }
constexpr int64_t q8_codes_offset(int64_t i, int64_t k) { return 32 + 64 * k + 4 * i; }

/// One block of one row between the file's layout (file) and the group's block (r16), either way.
struct Mxfp4Block {
  static constexpr int64_t kFileBytes = kMXFP4BlockBytes, kGroupBytes = kMxfp4R16BlockBytes;
  template <bool kToR16>
  static void convert(uint8_t* file, uint8_t* r16, int64_t i) {
    for (int64_t k = 0; k < 4; ++k) {
      if constexpr (kToR16) std::memcpy(r16 + codes_offset(i, k), file + 1 + 4 * k, 4);
      else std::memcpy(file + 1 + 4 * k, r16 + codes_offset(i, k), 4);
    }
    if constexpr (kToR16) r16[scale_offset(i)] = file[0];
    else file[0] = r16[scale_offset(i)];
  }
  /// Σ_j w_q[j] · x_q[j] of row i's block and its d_w.
  static int32_t dot(const uint8_t* r16, int64_t i, const ActQ8Block& x) {
    int32_t dot = 0;
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t j = 0; j < 4; ++j) {
        const uint8_t code = r16[codes_offset(i, k) + j];
        dot += ref::kMxfp4Values[code & 0x0F] * x.q[4 * k + j];
        dot += ref::kMxfp4Values[code >> 4] * x.q[16 + 4 * k + j];
      }
    return dot;
  }
  static float scale(const uint8_t* r16, int64_t i) { return detail::kMxfp4Scale.v[r16[scale_offset(i)]]; }
};

struct Q8Block {
  static constexpr int64_t kFileBytes = kQ8_0BlockBytes, kGroupBytes = kQ8R16BlockBytes;
  template <bool kToR16>
  static void convert(uint8_t* file, uint8_t* r16, int64_t i) {
    for (int64_t k = 0; k < 8; ++k)
      for (int64_t j = 0; j < 4; ++j) {
        if constexpr (kToR16) r16[q8_codes_offset(i, k) + j] = static_cast<uint8_t>(file[2 + 4 * k + j] ^ 0x80u);
        else file[2 + 4 * k + j] = static_cast<uint8_t>(r16[q8_codes_offset(i, k) + j] ^ 0x80u);
      }
    if constexpr (kToR16) std::memcpy(r16 + q8_scale_offset(i), file, 2);
    else std::memcpy(file, r16 + q8_scale_offset(i), 2);
  }
  static int32_t dot(const uint8_t* r16, int64_t i, const ActQ8Block& x) {
    int32_t dot = 0;
    for (int64_t k = 0; k < 8; ++k)
      for (int64_t j = 0; j < 4; ++j)
        dot += (static_cast<int32_t>(r16[q8_codes_offset(i, k) + j]) - 128) * x.q[4 * k + j];
    return dot;
  }
  static float scale(const uint8_t* r16, int64_t i) {
    uint16_t d;
    std::memcpy(&d, r16 + q8_scale_offset(i), sizeof d);
    return ref::f16_to_f32(d);
  }
};

template <class Block, bool kToR16>
void convert(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch) {
  const uint64_t group_bytes = kRows * row_bytes;
  uint8_t* const tmp_base = scratch;
  const auto num_blocks = static_cast<int64_t>(row_bytes / Block::kFileBytes);
  for (int64_t g = group_begin; g < group_end; ++g) {
    uint8_t* group = data + g * group_bytes;
    std::memcpy(tmp_base, group, group_bytes);
    for (int64_t b = 0; b < num_blocks; ++b) {
      uint8_t* r16 = (kToR16 ? group : tmp_base) + b * Block::kGroupBytes;
      for (int64_t i = 0; i < kRows; ++i)
        Block::template convert<kToR16>((kToR16 ? tmp_base : group) + i * row_bytes + b * Block::kFileBytes, r16, i);
    }
  }
}

/// The scalar R16 kernel (repack.h): per row and token Σ_b (float(dot) · d_x) · d_w, blocks in order, as the file
/// layout's scalar GEMV.
template <class Block>
void gemm_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end, const ActQ8Block* x,
                     int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  const int64_t num_blocks = num_cols / kActBlockElems;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* group = w + (r / kRows) * kRows * static_cast<int64_t>(row_bytes);
    const int64_t i = r % kRows;
    for (int64_t t = 0; t < num_tokens; ++t) {
      const ActQ8Block* xt = x + t * num_blocks;
      float acc = 0.0f;
      for (int64_t b = 0; b < num_blocks; ++b) {
        const uint8_t* blk = group + b * Block::kGroupBytes;
        acc += static_cast<float>(Block::dot(blk, i, xt[b])) * xt[b].d * Block::scale(blk, i);
      }
      y[t * y_stride + (r - row_begin)] = acc;
    }
  }
}

}  // namespace

void repack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch) {
  convert<Mxfp4Block, true>(data, row_bytes, group_begin, group_end, scratch);
}

void unpack_mxfp4_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch) {
  convert<Mxfp4Block, false>(data, row_bytes, group_begin, group_end, scratch);
}

void repack_q8_0_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch) {
  convert<Q8Block, true>(data, row_bytes, group_begin, group_end, scratch);
}

void unpack_q8_0_r16(uint8_t* data, uint64_t row_bytes, int64_t group_begin, int64_t group_end, uint8_t* scratch) {
  convert<Q8Block, false>(data, row_bytes, group_begin, group_end, scratch);
}

void gemm_mxfp4_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                           const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  gemm_r16_scalar<Mxfp4Block>(w, row_bytes, row_begin, row_end, x, num_tokens, num_cols, y, y_stride);
}

void gemm_q8_0_r16_scalar(const uint8_t* w, uint64_t row_bytes, int64_t row_begin, int64_t row_end,
                          const ActQ8Block* x, int64_t num_tokens, int64_t num_cols, float* y, int64_t y_stride) {
  gemm_r16_scalar<Q8Block>(w, row_bytes, row_begin, row_end, x, num_tokens, num_cols, y, y_stride);
}

}  // namespace hetmoe::cpu
