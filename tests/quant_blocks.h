#pragma once
// Random quantized test data: MXFP4 and Q8_0 weight rows in the file's layout and quantized activation blocks.
// Header-only, for the kernel tests (tests/test_mxfp4_r16.cpp, tests/test_avx2_vnni_evex.cpp).
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "runtime/base/ggml_types.h"

namespace hetmoe::test {

/// num_rows × num_cols MXFP4 weights (num_cols a multiple of 32), rows packed: scale bytes 122..132, and e = 0 or 1
/// (the subnormal scales) in every 37th block; random code bytes.
inline std::vector<uint8_t> random_mxfp4(int64_t num_rows, int64_t num_cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t row_bytes = tensor_row_bytes(TensorType::kMXFP4, static_cast<uint64_t>(num_cols));
  std::vector<uint8_t> w(row_bytes * static_cast<uint64_t>(num_rows));
  std::uniform_int_distribution<int> e_dist(122, 132), byte(0, 255);
  for (size_t b = 0; b < w.size() / kMXFP4BlockBytes; ++b) {
    uint8_t* block = w.data() + b * kMXFP4BlockBytes;
    block[0] = static_cast<uint8_t>(b % 37 == 5 ? b % 2 : e_dist(rng));
    for (int j = 1; j < 17; ++j) block[j] = static_cast<uint8_t>(byte(rng));
  }
  return w;
}

/// num_rows × num_cols Q8_0 weights, rows packed: f16 scales in [1e-3, 5e-2) and 0 in every 41st block; codes
/// −128..127.
inline std::vector<uint8_t> random_q8_0(int64_t num_rows, int64_t num_cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t row_bytes = tensor_row_bytes(TensorType::kQ8_0, static_cast<uint64_t>(num_cols));
  std::vector<uint8_t> w(row_bytes * static_cast<uint64_t>(num_rows));
  std::uniform_real_distribution<float> d_dist(1e-3f, 5e-2f);
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t b = 0; b < w.size() / kQ8_0BlockBytes; ++b) {
    uint8_t* block = w.data() + b * kQ8_0BlockBytes;
    const uint16_t d = ref::f32_to_f16(b % 41 == 7 ? 0.0f : d_dist(rng));
    std::memcpy(block, &d, 2);
    for (int j = 2; j < 34; ++j) block[j] = static_cast<uint8_t>(byte(rng));
  }
  return w;
}

/// num_tokens × num_cols standard-normal activations quantized by the scalar kernel: [num_tokens][num_cols / 32].
inline std::vector<cpu::ActQ8Block> random_act_blocks(int64_t num_tokens, int64_t num_cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(num_tokens * num_cols));
  for (float& v : x) v = normal(rng);
  std::vector<cpu::ActQ8Block> xq(static_cast<size_t>(num_tokens * num_cols / 32));
  cpu::kernel_table(cpu::Isa::kScalar).quantize_act_q8(x.data(), xq.data(), num_tokens * num_cols);
  return xq;
}

}  // namespace hetmoe::test
