// The device KV cache's block code (gpu_kernels/kv_blocks.cuh, __host__ __device__) run on the host against the CPU
// cache's scalar functions (cpu_kernels/kv_blocks.h, ref::f32_to_f16 / f16_to_f32), bit for bit: the quantizers of
// kv_store, the reader of the attention kernels at every index pattern the kernels use (decode: lane l reads dims
// l·head_dim/32 ..; prefill: pairs 2e, 2e + 1), and kv_store's mapping of a batch's blocks onto ring slots. Built by
// nvcc, needs no GPU: what it cannot check is the launch itself and the device's rounding intrinsics (__fdiv_rn,
// __fmul_rn, __fadd_rn, IEEE round-to-nearest-even like the host operations used here; tests/test_cuda_kernels.cpp
// checks those on a GPU).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"
#include "gpu_kernels/kv_blocks.cuh"
#include "tests/kv_rows.h"

namespace hetmoe::gpu {
namespace {

/// The CPU cache's read of one row (host_kv_row_load).
std::vector<float> cpu_load_row(KvType type, const uint8_t* row, int64_t head_dim) {
  std::vector<float> out(static_cast<size_t>(head_dim));
  test::host_kv_row_load(type, row, head_dim, out.data());
  return out;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

/// Blocks of 32 values that stress each rounding rule, then random blocks over scales from f16-subnormal to f16
/// overflow of the scale.
std::vector<std::vector<float>> test_blocks() {
  std::vector<std::vector<float>> blocks;
  blocks.push_back(std::vector<float>(32, 0.0f));  // d = 0: id = 0, every q 0 (q4_0: d = −0, nibble 8)
  std::vector<float> b(32);
  for (int j = 0; j < 32; ++j) b[j] = static_cast<float>(j % 7) - 3.5f;  // halves with amax 127 below: d = 1
  b[31] = 127.0f;
  blocks.push_back(b);  // q8_0 rounds half away from zero (0.5 → 1, −2.5 → −3)
  for (int j = 0; j < 32; ++j) b[j] = 0.5f * static_cast<float>(j % 9) - 2.0f;
  b[30] = -8.0f;
  blocks.push_back(b);  // q4_0: x_max −8, d = 1, x + 8.5 on and between integers (truncation decides)
  for (int j = 0; j < 32; ++j) b[j] = (j % 2 == 0 ? 1.0f : -1.0f) * (j % 5 == 0 ? 2.0f : 0.25f * (j % 4));
  blocks.push_back(b);  // |x| ties of opposite sign: q4_0 takes the first (+2) for its sign; −x_max clamps to 15
  for (int j = 0; j < 32; ++j) b[j] = -b[j];
  blocks.push_back(b);  // the same with the first of the ties negative
  std::vector<float> one_hot(32, 0.0f);
  one_hot[17] = -3.0f;
  blocks.push_back(one_hot);  // one non-zero value: the zeros quantize to q 0 (q8_0) and nibble 8 (q4_0)
  std::mt19937 rng(14);
  for (float scale : {1e-7f, 1e-5f, 1e-3f, 0.1f, 1.0f, 3.0f, 100.0f, 1e4f, 1e7f}) {
    std::normal_distribution<float> normal(0.0f, scale);
    for (int r = 0; r < 40; ++r) {
      for (float& v : b) v = normal(rng);
      blocks.push_back(b);
    }
  }
  return blocks;
}

TEST(KvBlocksDeviceCode, QuantizersWriteTheCpuCachesBytes) {
  for (const std::vector<float>& x : test_blocks()) {
    uint8_t want8[34], got8[34], want4[18], got4[18];
    cpu::quantize_kv_q8_0(x.data(), want8, 32);
    detail::quantize_kv_block_q8_0(x.data(), got8);
    EXPECT_EQ(0, std::memcmp(want8, got8, sizeof(want8))) << "q8_0, block starting " << x[0] << ", " << x[1];
    cpu::quantize_kv_q4_0(x.data(), want4, 32);
    detail::quantize_kv_block_q4_0(x.data(), got4);
    EXPECT_EQ(0, std::memcmp(want4, got4, sizeof(want4))) << "q4_0, block starting " << x[0] << ", " << x[1];
  }
}

/// Every row of a (kv_heads, capacity) cache of `type` read back through load_kv_values at the decode kernel's lane
/// pattern (N = head_dim / 32 values from lane · N, as attention_decode.cu) and at the prefill kernel's pairs (2e,
/// 2e + 1, as attention_prefill.cu), with the row found by kv_row_offset: the CPU's values, bit for bit. Rows of
/// q4_0 at head_dim 32 are 18 bytes: every other row starts 2 bytes off a 4-byte boundary.
template <int HeadDim>
void check_reader(KvType type) {
  SCOPED_TRACE(std::string(test::kv_type_name(type)) + " head_dim " + std::to_string(HeadDim));
  constexpr int kDims = HeadDim / 32;
  constexpr int64_t kKvHeads = 3;
  constexpr int32_t kCapacity = 5;
  const int64_t row_bytes = kv_type_row_bytes(type, HeadDim);
  std::vector<uint8_t> cache(static_cast<size_t>(kKvHeads * kCapacity * row_bytes));
  std::mt19937 rng(static_cast<uint32_t>(HeadDim) + static_cast<uint32_t>(type));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> x(HeadDim);
  for (int64_t r = 0; r < kKvHeads * kCapacity; ++r) {
    for (float& v : x) v = normal(rng);
    test::host_kv_row_store(type, x.data(), HeadDim, &cache[static_cast<size_t>(r * row_bytes)]);
  }
  for (int64_t g = 0; g < kKvHeads; ++g)
    for (int64_t slot = 0; slot < kCapacity; ++slot) {
      const int64_t offset = detail::kv_row_offset(g, slot, kCapacity, row_bytes);
      ASSERT_EQ(offset, (g * kCapacity + slot) * row_bytes);
      const uint8_t* row = &cache[static_cast<size_t>(offset)];
      const std::vector<float> want = cpu_load_row(type, row, HeadDim);
      for (int lane = 0; lane < 32; ++lane) {
        float got[kDims];
        detail::load_kv_values<kDims>(type, row, lane * kDims, got);
        for (int i = 0; i < kDims; ++i)
          ASSERT_TRUE(same_bits(got[i], want[static_cast<size_t>(lane * kDims + i)]))
              << "decode lane " << lane << " value " << i << " of row " << g << "/" << slot << ": " << got[i]
              << ", the CPU's " << want[static_cast<size_t>(lane * kDims + i)];
      }
      for (int e = 0; e < HeadDim / 2; ++e) {
        float got[2];
        detail::load_kv_values<2>(type, row, 2 * e, got);
        for (int i = 0; i < 2; ++i)
          ASSERT_TRUE(same_bits(got[i], want[static_cast<size_t>(2 * e + i)]))
              << "prefill pair " << e << " value " << i << " of row " << g << "/" << slot;
      }
    }
}

TEST(KvBlocksDeviceCode, ReaderReturnsTheCpuValuesAtEveryKernelIndexPattern) {
  for (KvType type : {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0}) {
    check_reader<32>(type);
    check_reader<64>(type);
    check_reader<128>(type);
  }
}

/// kv_store's quantizing pass run on the host over a batch: thread e = 0 .. n − 1 quantizes src + src_offset into
/// cache + dst_offset (kv_block_target). Every block of every written row is written exactly once, nothing else is
/// touched, and the cache holds the CPU cache's bytes at slot positions[t] % capacity.
void check_store_mapping(KvType type, int64_t kv_heads, int64_t head_dim, int32_t capacity,
                         const std::vector<int32_t>& positions) {
  SCOPED_TRACE(std::string(test::kv_type_name(type)) + " head_dim " + std::to_string(head_dim) + " kv_heads " +
               std::to_string(kv_heads) + " capacity " + std::to_string(capacity));
  const auto tokens = static_cast<int64_t>(positions.size());
  const int64_t block_bytes = type == KvType::kQ8_0 ? kKvQ8_0BlockBytes : kKvQ4_0BlockBytes;
  const int64_t row_bytes = kv_type_row_bytes(type, head_dim);
  std::mt19937 rng(static_cast<uint32_t>(head_dim * 7 + capacity));
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> src(static_cast<size_t>(tokens * kv_heads * head_dim));
  for (float& v : src) v = normal(rng);
  const size_t cache_bytes = static_cast<size_t>(kv_heads * capacity * row_bytes);
  std::vector<uint8_t> got(cache_bytes, 0xAB), want(cache_bytes, 0xAB);
  std::vector<int> writes(cache_bytes / static_cast<size_t>(block_bytes), 0);
  const int64_t n = tokens * kv_heads * (head_dim / kKvBlockElems);
  for (int64_t e = 0; e < n; ++e) {
    const detail::KvBlockTarget at =
        detail::kv_block_target(e, kv_heads, head_dim, block_bytes, capacity, positions.data());
    ASSERT_LT(at.token, tokens);
    ASSERT_LE(at.src_offset + kKvBlockElems, static_cast<int64_t>(src.size()));
    ASSERT_LE(at.dst_offset + block_bytes, static_cast<int64_t>(cache_bytes));
    ASSERT_EQ(at.dst_offset % block_bytes, 0);
    ++writes[static_cast<size_t>(at.dst_offset / block_bytes)];
    const float* x = &src[static_cast<size_t>(at.src_offset)];
    uint8_t* dst = &got[static_cast<size_t>(at.dst_offset)];
    if (type == KvType::kQ8_0)
      detail::quantize_kv_block_q8_0(x, dst);
    else
      detail::quantize_kv_block_q4_0(x, dst);
  }
  std::vector<int> want_writes(writes.size(), 0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < kv_heads; ++g) {
      const int64_t row = g * capacity + positions[static_cast<size_t>(t)] % capacity;
      test::host_kv_row_store(type, &src[static_cast<size_t>((t * kv_heads + g) * head_dim)], head_dim,
                    &want[static_cast<size_t>(row * row_bytes)]);
      for (int64_t b = 0; b < head_dim / kKvBlockElems; ++b)
        ++want_writes[static_cast<size_t>((row * row_bytes) / block_bytes + b)];
    }
  EXPECT_EQ(writes, want_writes);
  size_t num_diff = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && num_diff++ == 0) first = i;
  EXPECT_EQ(num_diff, 0u) << "first difference at byte " << first << " (row " << first / row_bytes << ")";
}

TEST(KvBlocksDeviceCode, StoreMapsEveryBlockOfABatchOntoItsRingSlotOnce) {
  for (KvType type : {KvType::kQ8_0, KvType::kQ4_0})
    for (int64_t head_dim : {32, 64, 128}) {
      check_store_mapping(type, 3, head_dim, 7, {5, 6, 7, 8});  // wraps: 7 → slot 0, 8 → slot 1
      check_store_mapping(type, 1, head_dim, 3, {2});
      std::vector<int32_t> batch(64);
      for (int32_t t = 0; t < 64; ++t) batch[static_cast<size_t>(t)] = 150 + t;
      check_store_mapping(type, 8, head_dim, 191, batch);  // gpt-oss-20b's 8 KV heads, a prefill batch across the wrap
    }
}

}  // namespace
}  // namespace hetmoe::gpu
