// Quantized KV cache (q8_0, q4_0) and split attention: the block layouts against hand-made blocks, the attention
// kernels over quantized rows at every ISA against the scalar variant and the scalar variant against double sums, the
// split-softmax chunk kernel, the tiled (flash) attention kernels against the scalar variant, and the CPU attention
// (attention_cpu.h) per key and tiled, unsplit and split over threads, for decode and prefill tiles, at odd key
// counts, mixed K/V types, and at the sliding window's edge where the ring wraps.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"
#include "runtime/exec/attention_cpu.h"
#include "runtime/exec/kv_cache.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

using cpu::Isa;
using cpu::KernelTable;

// SIMD vs scalar variant over quantized rows: each row dequantizes to the same f32 values (d · q, one rounding, in
// both), so only the order of the f32 additions differs: NMSE ~1e-14 (as the f16/f32 attention kernels,
// tests/test_cpu_kernels.cpp); 1e-10 still catches one wrong element of a 32-value block (NMSE ~1e-3).
constexpr double kSimdVsScalarNmse = 1e-10;
// Scalar variant vs double sums over the same dequantized values: f32 rounding of sums of up to 256 products.
constexpr double kScalarVsDoubleNmse = 1e-10;
// Split (chunks merged) vs unsplit attention over the same cache: exp(s − m_c) · exp(m_c − M) instead of exp(s − M)
// and another summation order, a few ulp per term: NMSE ~1e-13 expected; 1e-9 leaves room, while dropping a chunk
// or its rescaling moves the output by O(1) (NMSE ≥ 1e-3).
constexpr double kSplitVsUnsplitNmse = 1e-9;

using test::nmse;

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

float block_scale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return ref::f16_to_f32(d);
}

// ---- block layouts ------------------------------------------------------------------------------------------------

// Integers in [-127, 127] with 127 present: d = 127 / 127 = 1 exactly, so every value must come back exactly, in
// order; an all-zero block gets d = 0 and zeros.
TEST(KvBlocks, Q8_0KeepsIntegerBlocksExactlyAndInOrder) {
  std::vector<float> x(64);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 37) % 255 - 127);
  x[5] = 127.0f;
  std::vector<uint8_t> q(2 * cpu::kKvQ8_0BlockBytes, 0xAB);
  cpu::quantize_kv_q8_0(x.data(), q.data(), 64);
  EXPECT_EQ(block_scale(q.data()), 1.0f);
  EXPECT_EQ(block_scale(q.data() + cpu::kKvQ8_0BlockBytes), 0.0f);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(static_cast<int8_t>(q[2 + j]), static_cast<int>(x[j])) << j;
  std::vector<float> back(64, -1.0f);
  cpu::dequantize_kv_q8_0(q.data(), back.data(), 64);
  EXPECT_EQ(back, x);
}

// Integers in [-8, 7] with -8 the value of largest magnitude: d = -8 / -8 = 1, so nibble = value + 8 exactly. Byte j
// holds value j in its low nibble and value j + 16 in its high one (ggml's block_q4_0).
TEST(KvBlocks, Q4_0KeepsIntegerBlocksExactlyWithGgmlsNibbleOrder) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * 5) % 16 - 8);
  x[3] = -8.0f;
  std::vector<uint8_t> q(cpu::kKvQ4_0BlockBytes);
  cpu::quantize_kv_q4_0(x.data(), q.data(), 32);
  EXPECT_EQ(block_scale(q.data()), 1.0f);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(q[2 + j] & 0x0F, static_cast<int>(x[j]) + 8) << j;
    EXPECT_EQ(q[2 + j] >> 4, static_cast<int>(x[j + 16]) + 8) << j;
  }
  std::vector<float> back(32);
  cpu::dequantize_kv_q4_0(q.data(), back.data(), 32);
  EXPECT_EQ(back, x);
}

// Random blocks: every value within half a step (q8_0) or one step (q4_0: the clamp at nibble 15 costs up to a whole
// step for values near −max) of the input, plus the f16 rounding of d (2^-11 relative, times |q| ≤ 127 or 8).
TEST(KvBlocks, RandomBlocksStayWithinTheQuantizationStep) {
  const auto x = random_floats(32 * 64, 5, 3.0f);
  std::vector<uint8_t> q8(64 * cpu::kKvQ8_0BlockBytes), q4(64 * cpu::kKvQ4_0BlockBytes);
  cpu::quantize_kv_q8_0(x.data(), q8.data(), 32 * 64);
  cpu::quantize_kv_q4_0(x.data(), q4.data(), 32 * 64);
  std::vector<float> b8(x.size()), b4(x.size());
  cpu::dequantize_kv_q8_0(q8.data(), b8.data(), 32 * 64);
  cpu::dequantize_kv_q4_0(q4.data(), b4.data(), 32 * 64);
  for (size_t i = 0; i < x.size(); ++i) {
    const float d8 = std::fabs(block_scale(q8.data() + (i / 32) * cpu::kKvQ8_0BlockBytes));
    const float d4 = std::fabs(block_scale(q4.data() + (i / 32) * cpu::kKvQ4_0BlockBytes));
    EXPECT_LE(std::fabs(b8[i] - x[i]), d8 * (0.5f + 127.0f / 2048.0f)) << i;
    EXPECT_LE(std::fabs(b4[i] - x[i]), d4 * (1.0f + 8.0f / 2048.0f)) << i;
  }
}

// ---- kernels over quantized rows, per ISA -------------------------------------------------------------------------

enum class Quant { kQ8_0, kQ4_0 };

int64_t block_bytes(Quant t) { return t == Quant::kQ8_0 ? cpu::kKvQ8_0BlockBytes : cpu::kKvQ4_0BlockBytes; }

/// num_keys slots of two KV heads' quantized rows, interleaved like the cache's (stride = two rows), and the
/// dequantized values of the second head's rows, [num_keys][head_dim].
struct QuantRows {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  int64_t stride = 0;
  const uint8_t* second_head() const { return bytes.data() + stride / 2; }
};

QuantRows make_rows(Quant t, int64_t num_keys, int64_t head_dim, uint32_t seed) {
  const int64_t row = head_dim / 32 * block_bytes(t);
  QuantRows r;
  r.stride = 2 * row;
  r.bytes.resize(static_cast<size_t>(num_keys * r.stride));
  r.values.resize(static_cast<size_t>(num_keys * head_dim));
  const auto x = random_floats(num_keys * 2 * head_dim, seed);
  for (int64_t j = 0; j < num_keys; ++j)
    for (int64_t h = 0; h < 2; ++h) {
      const float* src = &x[static_cast<size_t>((j * 2 + h) * head_dim)];
      uint8_t* dst = r.bytes.data() + j * r.stride + h * row;
      if (t == Quant::kQ8_0) cpu::quantize_kv_q8_0(src, dst, head_dim);
      else cpu::quantize_kv_q4_0(src, dst, head_dim);
    }
  for (int64_t j = 0; j < num_keys; ++j) {
    const uint8_t* src = r.second_head() + j * r.stride;
    float* dst = &r.values[static_cast<size_t>(j * head_dim)];
    if (t == Quant::kQ8_0) cpu::dequantize_kv_q8_0(src, dst, head_dim);
    else cpu::dequantize_kv_q4_0(src, dst, head_dim);
  }
  return r;
}

auto scores_fn(const KernelTable& k, Quant t) { return t == Quant::kQ8_0 ? k.attn_scores_q8_0 : k.attn_scores_q4_0; }
auto values_fn(const KernelTable& k, Quant t) { return t == Quant::kQ8_0 ? k.attn_values_q8_0 : k.attn_values_q4_0; }

class KvAttentionPerIsa : public ::testing::TestWithParam<Isa> {
 protected:
  const KernelTable& table() const { return cpu::kernel_table(GetParam()); }
  const KernelTable& scalar() const { return cpu::kernel_table(Isa::kScalar); }
};

INSTANTIATE_TEST_SUITE_P(SupportedIsas, KvAttentionPerIsa, ::testing::ValuesIn(cpu::supported_isas()),
                         [](const auto& info) { return std::string(cpu::isa_name(info.param)); });

TEST_P(KvAttentionPerIsa, TableHasTheQuantizedAttentionKernels) {
  EXPECT_EQ(table().isa, GetParam());
  EXPECT_NE(table().attn_scores_q8_0, nullptr);
  EXPECT_NE(table().attn_values_q8_0, nullptr);
  EXPECT_NE(table().attn_scores_q4_0, nullptr);
  EXPECT_NE(table().attn_values_q4_0, nullptr);
  EXPECT_NE(table().softmax_partial, nullptr);
}

// f32 → f16 of K/V rows on store at every ISA, bit for bit against ref::f32_to_f16: 2^20 random bit patterns
// (every exponent, NaNs with payloads, subnormals) plus the edges — ±0, ±inf, the largest half 65504, 65519.996
// (rounds down) and 65520 (rounds to inf), the smallest subnormal half 2^-24 and half of it (a tie: rounds to even,
// 0), ties between two normal halves — at lengths 1 and 2^20 + 26 (a tail after the last vector at both widths).
// NaN: NaN out (payload not compared). Truncating instead of rounding fails it.
TEST_P(KvAttentionPerIsa, F16RowStoreMatchesReferenceBitForBit) {
  std::mt19937 rng(5);
  std::vector<float> x;
  for (int i = 0; i < (1 << 20); ++i) x.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  const float inf = std::numeric_limits<float>::infinity();
  for (float e : {0.0f, -0.0f, inf, -inf, 65504.0f, 65519.996f, 65520.0f, -65520.0f, 0x1p-24f, 0x1p-25f, -0x1p-25f,
                  0x1.8p-25f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 0x1p-14f, 0x1.ff8p-15f, 1.0f, -2.5f})
    x.push_back(e);
  for (int i = 0; i < 8; ++i) x.push_back(static_cast<float>(i) * 0.37f);  // 2^20 + 18 + 8 = 2^20 + 26 values
  for (int64_t n : {int64_t{1}, static_cast<int64_t>(x.size())}) {
    std::vector<uint16_t> got(static_cast<size_t>(n), 0xFFFF);
    table().kv_row_f16_from_f32(x.data(), got.data(), n);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = ref::f32_to_f16(x[static_cast<size_t>(i)]);
      const bool want_nan = (want & 0x7C00) == 0x7C00 && (want & 0x3FF) != 0;
      const bool got_nan = (got[i] & 0x7C00) == 0x7C00 && (got[i] & 0x3FF) != 0;
      if (want_nan ? !got_nan : got[i] != want) {
        if (++mismatches <= 5)
          ADD_FAILURE() << "x = " << x[static_cast<size_t>(i)] << " (bits 0x" << std::hex
                        << std::bit_cast<uint32_t>(x[static_cast<size_t>(i)]) << "): got 0x" << got[i] << ", want 0x"
                        << want << std::dec;
      }
    }
    EXPECT_EQ(mismatches, 0) << "n " << n;
  }
}

// Odd shapes: 1, 3 and 8 query heads per KV head; head_dim 32 (one block), 64 (gpt-oss), 96 (three blocks) and 256
// (the largest); 1, 7, 33 and 201 keys; the second KV head's rows at a stride of two rows. Scores against the scalar
// variant and against double sums over the dequantized values; values (accumulated onto a non-zero output) likewise.
// A wrong block, nibble or scale anywhere moves the pooled NMSE far above the bars (~1e-3 for one block of 32).
TEST_P(KvAttentionPerIsa, QuantizedRowsMatchScalarVariantAndDoubleSums) {
  for (Quant t : {Quant::kQ8_0, Quant::kQ4_0}) {
    // Outputs pooled over the shapes: a single score can sit near zero by cancellation (one key, one head), which
    // says nothing about the kernel.
    std::vector<float> all_want, all_got, all_exact;
    const auto pool = [&](const std::vector<float>& want, const std::vector<float>& got,
                          const std::vector<float>& exact) {
      all_want.insert(all_want.end(), want.begin(), want.end());
      all_got.insert(all_got.end(), got.begin(), got.end());
      all_exact.insert(all_exact.end(), exact.begin(), exact.end());
    };
    for (int64_t group : {1, 3, 8}) {
      for (int64_t head_dim : {32, 64, 96, 256}) {
        for (int64_t num_keys : {1, 7, 33, 201}) {
          const QuantRows rows = make_rows(t, num_keys, head_dim, 11 + static_cast<uint32_t>(num_keys));
          const auto q = random_floats(group * head_dim, 12);
          const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
          std::vector<float> want(group * num_keys), got(group * num_keys), exact(group * num_keys);
          scores_fn(scalar(), t)(q.data(), group, rows.second_head(), rows.stride, num_keys, head_dim, scale,
                                 want.data(), num_keys);
          scores_fn(table(), t)(q.data(), group, rows.second_head(), rows.stride, num_keys, head_dim, scale,
                                got.data(), num_keys);
          for (int64_t h = 0; h < group; ++h)
            for (int64_t j = 0; j < num_keys; ++j) {
              double acc = 0;
              for (int64_t i = 0; i < head_dim; ++i)
                acc += static_cast<double>(q[h * head_dim + i]) * rows.values[j * head_dim + i];
              exact[h * num_keys + j] = static_cast<float>(scale * acc);
            }
          pool(want, got, exact);

          const auto p = random_floats(group * num_keys, 13);
          std::vector<float> want_o(group * head_dim, 0.5f), got_o(group * head_dim, 0.5f);
          std::vector<float> exact_o(group * head_dim);
          values_fn(scalar(), t)(p.data(), num_keys, group, rows.second_head(), rows.stride, num_keys, head_dim,
                                 want_o.data());
          values_fn(table(), t)(p.data(), num_keys, group, rows.second_head(), rows.stride, num_keys, head_dim,
                                got_o.data());
          for (int64_t h = 0; h < group; ++h)
            for (int64_t i = 0; i < head_dim; ++i) {
              double acc = 0.5;
              for (int64_t j = 0; j < num_keys; ++j)
                acc += static_cast<double>(p[h * num_keys + j]) * rows.values[j * head_dim + i];
              exact_o[h * head_dim + i] = static_cast<float>(acc);
            }
          pool(want_o, got_o, exact_o);
        }
      }
    }
    EXPECT_LE(nmse(all_want, all_got), kSimdVsScalarNmse) << (t == Quant::kQ8_0 ? "q8_0" : "q4_0");
    EXPECT_LE(nmse(all_exact, all_want), kScalarVsDoubleNmse) << (t == Quant::kQ8_0 ? "q8_0" : "q4_0");
  }
}

// The split-softmax chunk on lengths around the vector width: the max exactly, the exponentials and their sum against
// double. f32 exp is within a few ulp: NMSE ~1e-14; 1e-10 leaves room for the summation order.
TEST_P(KvAttentionPerIsa, SoftmaxPartialMatchesDouble) {
  for (int64_t n : {1, 7, 15, 16, 17, 300, 4097}) {
    auto s = random_floats(n, 21 + static_cast<uint32_t>(n), 3.0f);
    double m = s[0];
    for (float v : s) m = std::max<double>(m, v);
    std::vector<float> want(s.size());
    double want_sum = 0;
    for (size_t j = 0; j < s.size(); ++j) {
      want[j] = static_cast<float>(std::exp(s[j] - m));
      want_sum += want[j];
    }
    float got_max = 0;
    const float got_sum = table().softmax_partial(s.data(), n, &got_max);
    EXPECT_EQ(got_max, static_cast<float>(m)) << n;
    EXPECT_LE(nmse(want, s), 1e-10) << n;
    EXPECT_NEAR(got_sum, want_sum, 1e-5 * want_sum) << n;
  }
}

// ---- CPU attention over a KV cache: unsplit against double, split against unsplit ----------------------------------

ModelHparams attention_hparams(uint32_t head_dim) {
  ModelHparams hp;
  hp.num_layers = 2;  // layer 0 sliding (window 8), layer 1 full
  hp.hidden_dim = 64;
  hp.num_heads = 6;
  hp.num_kv_heads = 2;  // group 3
  hp.head_dim = head_dim;
  hp.num_experts = 4;
  hp.num_experts_used = 2;
  hp.expert_ffn_dim = 64;
  hp.vocab_size = 100;
  hp.context_length = 4096;
  hp.sliding_window = 8;
  return hp;
}

/// Stores random K and V of position `pos` in both layers.
void store_position(KvCache& cache, const ModelHparams& hp, uint32_t pos) {
  const auto k = random_floats(hp.kv_dim(), 1000 + pos, 1.5f);
  const auto v = random_floats(hp.kv_dim(), 50000 + pos);
  cache.store(0, pos, k.data(), v.data());
  cache.store(1, pos, k.data(), v.data());
}

/// A cache of `num_positions` random K/V positions (the sliding layer's ring of 8 + extra_sliding_slots slots wraps
/// many times).
KvCache filled_cache(const ModelHparams& hp, KvCacheType k_type, KvCacheType v_type, uint32_t num_positions,
                     uint32_t extra_sliding_slots = 3) {
  auto cache = KvCache::create(hp, hp.context_length, k_type, v_type, extra_sliding_slots);
  EXPECT_TRUE(cache.has_value());
  for (uint32_t pos = 0; pos < num_positions; ++pos) store_position(*cache, hp, pos);
  return std::move(*cache);
}

/// Softmax-with-sink attention in double over what load_k / load_v return (the dequantized cache), positions
/// [first, first + num_keys) of one KV head: out[group][head_dim].
std::vector<float> attention_double(const KvCache& kv, uint32_t layer, uint32_t kv_head, uint32_t first,
                                    uint32_t num_keys, const std::vector<float>& q, uint32_t group, float scale,
                                    const std::vector<float>& sinks) {
  const uint32_t hd = kv.head_dim();
  std::vector<float> out(group * hd), k(hd), v(hd);
  for (uint32_t h = 0; h < group; ++h) {
    std::vector<double> s(num_keys);
    double m = sinks[h];
    for (uint32_t j = 0; j < num_keys; ++j) {
      kv.load_k(layer, first + j, kv_head, k.data());
      double acc = 0;
      for (uint32_t i = 0; i < hd; ++i) acc += static_cast<double>(q[h * hd + i]) * k[i];
      s[j] = scale * acc;
      m = std::max(m, s[j]);
    }
    double z = std::exp(sinks[h] - m);
    for (double& x : s) z += (x = std::exp(x - m));
    std::vector<double> o(hd, 0.0);
    for (uint32_t j = 0; j < num_keys; ++j) {
      kv.load_v(layer, first + j, kv_head, v.data());
      for (uint32_t i = 0; i < hd; ++i) o[i] += s[j] / z * v[i];
    }
    for (uint32_t i = 0; i < hd; ++i) out[h * hd + i] = static_cast<float>(o[i]);
  }
  return out;
}

struct KvTypePair {
  KvCacheType k, v;
};
constexpr KvTypePair kTypePairs[] = {{KvCacheType::kF16, KvCacheType::kF16},
                                     {KvCacheType::kQ8_0, KvCacheType::kQ8_0},
                                     {KvCacheType::kQ4_0, KvCacheType::kQ4_0},
                                     {KvCacheType::kQ8_0, KvCacheType::kQ4_0},
                                     {KvCacheType::kF32, KvCacheType::kQ8_0}};

std::string pair_name(KvTypePair p) {
  return std::string(kv_cache_type_name(p.k)) + "/" + kv_cache_type_name(p.v);
}

// The unsplit attention (what each (token, KV head) task runs) against double over the dequantized cache, on the
// sliding layer at and past its window's edge (query positions 7..9 and 17..20 with a window of 8 and a ring of 11
// slots: the visible keys wrap around the ring) and on the full layer. Both sides read the same quantized bytes, so
// only f32 rounding separates them.
TEST_P(KvAttentionPerIsa, UnsplitAttentionMatchesDoubleAtTheSlidingWindowEdge) {
  const uint32_t group = 3;
  for (KvTypePair types : kTypePairs) {
    for (uint32_t head_dim : {32u, 64u}) {
      const ModelHparams hp = attention_hparams(head_dim);
      KvCache kv = filled_cache(hp, types.k, types.v, 0);
      const KvAttentionKernels kk = kv_attention_kernels(table(), types.k, types.v);
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      const auto q = random_floats(group * head_dim, 77);
      const std::vector<float> sinks = {0.5f, -1.0f, 2.0f};
      for (uint32_t pos = 0; pos <= 20; ++pos) {  // the query at pos sees the cache as decoding leaves it
        store_position(kv, hp, pos);
        if (pos != 0 && (pos < 7 || pos > 9) && pos < 17) continue;
        for (uint32_t layer : {0u, 1u}) {
          const uint32_t first = kv.first_visible_position(layer, pos);
          const uint32_t num_keys = pos - first + 1;
          EXPECT_EQ(num_keys, layer == 0 ? std::min(pos + 1, 8u) : pos + 1);
          std::vector<float> scores(group * num_keys), got(group * head_dim);
          attention_full(table(), kk, kv, layer, 1, first, num_keys, q.data(), group, scale, sinks.data(),
                         scores.data(), got.data());
          const auto want = attention_double(kv, layer, 1, first, num_keys, q, group, scale, sinks);
          EXPECT_LE(nmse(want, got), kScalarVsDoubleNmse)
              << pair_name(types) << " head_dim " << head_dim << " layer " << layer << " pos " << pos;
        }
      }
    }
  }
}

// Split into chunks and merged (flash-decoding) against unsplit, at odd key counts (1, 7, 1001, 2047 keys, and a
// sliding-layer range that wraps the ring) and 1, 2, 3 and 7 chunks (chunks of unequal sizes, some of one key).
TEST_P(KvAttentionPerIsa, SplitAttentionMatchesUnsplitAtOddKeyCounts) {
  const uint32_t group = 3, head_dim = 64;
  const ModelHparams hp = attention_hparams(head_dim);
  const float scale = 0.125f;
  const auto q = random_floats(group * head_dim, 78, 2.0f);
  const std::vector<float> sinks = {1.0f, -3.0f, 6.0f};  // 6: a sink that takes most of the mass
  for (KvTypePair types : kTypePairs) {
    const KvCache kv = filled_cache(hp, types.k, types.v, 2048);
    const KvAttentionKernels kk = kv_attention_kernels(table(), types.k, types.v);
    struct Range {
      uint32_t layer, first, num_keys;
    };
    for (Range r : {Range{1, 0, 1}, Range{1, 0, 7}, Range{1, 5, 1001}, Range{1, 0, 2047}, Range{0, 2040, 8}}) {
      std::vector<float> scores(group * r.num_keys), want(group * head_dim);
      attention_full(table(), kk, kv, r.layer, 0, r.first, r.num_keys, q.data(), group, scale, sinks.data(),
                     scores.data(), want.data());
      for (uint32_t num_chunks : {1u, 2u, 3u, 7u}) {
        if (num_chunks > r.num_keys) continue;
        std::vector<float> outs(num_chunks * group * head_dim), maxs(num_chunks * group), sums(num_chunks * group);
        for (uint32_t c = 0; c < num_chunks; ++c) {
          const uint32_t begin = r.num_keys * c / num_chunks, end = r.num_keys * (c + 1) / num_chunks;
          attention_chunk(table(), kk, kv, r.layer, 0, r.first + begin, end - begin, q.data(), group, scale,
                          scores.data(), &outs[c * group * head_dim], &maxs[c * group], &sums[c * group]);
        }
        std::vector<float> got(group * head_dim);
        merge_attention_chunks(num_chunks, group, head_dim, outs.data(), maxs.data(), sums.data(), sinks.data(),
                               got.data());
        EXPECT_LE(nmse(want, got), kSplitVsUnsplitNmse)
            << pair_name(types) << " layer " << r.layer << " keys " << r.num_keys << " chunks " << num_chunks;
      }
    }
  }
}

// ---- tiled (flash) attention ---------------------------------------------------------------------------------------

// Tiled vs per-key attention and the SIMD tile kernels vs the scalar ones: the same f32 products summed in another
// order, and exp(s − m_block) · exp(m_block − M) instead of exp(s − M): a few ulp per term, NMSE ~1e-13 expected;
// 1e-9 leaves room, while a wrong mask, a lost rescale or a wrong row or lane moves the output by O(1) (NMSE ≥ 1e-3).
constexpr double kTileNmse = 1e-9;

// The K/V row converters give the scalar variant's values bit for bit (f16 widening, d · q with one rounding, a
// copy), zero padded to the pitch, at every type and head_dim 32, 64, 72 (f16/f32: a tail past the vector width), 96,
// 128 (64 and 128: the f16 converter's unrolled rows).
TEST_P(KvAttentionPerIsa, KvRowConvertersMatchScalarVariantBitForBit) {
  struct Conv {
    KvCacheType type;
    decltype(&KernelTable::kv_rows_f32_f16) entry;
  };
  for (Conv conv : {Conv{KvCacheType::kF16, &KernelTable::kv_rows_f32_f16},
                    Conv{KvCacheType::kF32, &KernelTable::kv_rows_f32_f32},
                    Conv{KvCacheType::kQ8_0, &KernelTable::kv_rows_f32_q8_0},
                    Conv{KvCacheType::kQ4_0, &KernelTable::kv_rows_f32_q4_0}}) {
    for (int64_t head_dim : {32, 64, 72, 96, 128}) {
      const bool quantized = conv.type == KvCacheType::kQ8_0 || conv.type == KvCacheType::kQ4_0;
      if (quantized && head_dim % 32 != 0) continue;
      const int64_t num_keys = 5;
      const int64_t row_bytes = static_cast<int64_t>(kv_row_bytes(conv.type, static_cast<uint32_t>(head_dim)));
      const int64_t stride = row_bytes + 6;  // rows apart, as two heads' rows are in the cache
      std::vector<uint8_t> src(static_cast<size_t>(num_keys * stride));
      const auto x = random_floats(num_keys * head_dim, 91, 2.0f);
      for (int64_t j = 0; j < num_keys; ++j) {
        uint8_t* row = src.data() + j * stride;
        const float* xr = &x[static_cast<size_t>(j * head_dim)];
        if (conv.type == KvCacheType::kF16)
          for (int64_t d = 0; d < head_dim; ++d) {
            const uint16_t h = ref::f32_to_f16(xr[d]);
            std::memcpy(row + 2 * d, &h, 2);
          }
        else if (conv.type == KvCacheType::kF32) std::memcpy(row, xr, static_cast<size_t>(head_dim) * 4);
        else if (conv.type == KvCacheType::kQ8_0) cpu::quantize_kv_q8_0(xr, row, head_dim);
        else cpu::quantize_kv_q4_0(xr, row, head_dim);
      }
      const int64_t pitch = cpu::attn_tile_pitch(head_dim);
      std::vector<float> want(static_cast<size_t>(num_keys * pitch), -1.0f), got = want;
      (scalar().*conv.entry)(src.data(), stride, num_keys, head_dim, want.data());
      (table().*conv.entry)(src.data(), stride, num_keys, head_dim, got.data());
      EXPECT_EQ(want, got) << kv_cache_type_name(conv.type) << " head_dim " << head_dim;
      for (int64_t j = 0; j < num_keys; ++j)
        for (int64_t d = head_dim; d < pitch; ++d) EXPECT_EQ(got[static_cast<size_t>(j * pitch + d)], 0.0f);
    }
  }
}

/// One tile's online-softmax state, normalized for comparison: out[r] / sum[r] and m + ln(sum) per real row.
std::vector<float> tile_result(const std::vector<float>& out, const std::vector<float>& max,
                               const std::vector<float>& sum, int64_t num_rows, int64_t head_dim) {
  const int64_t pitch = cpu::attn_tile_pitch(head_dim);
  std::vector<float> r;
  for (int64_t i = 0; i < num_rows; ++i) {
    if (sum[static_cast<size_t>(i)] == 0.0f) {  // a row that never saw a key: still the initial state
      r.insert(r.end(), static_cast<size_t>(head_dim) + 1, 0.0f);
      continue;
    }
    for (int64_t d = 0; d < head_dim; ++d)
      r.push_back(out[static_cast<size_t>(i * pitch + d)] / sum[static_cast<size_t>(i)]);
    r.push_back(max[static_cast<size_t>(i)] + std::log(sum[static_cast<size_t>(i)]));
  }
  return r;
}

/// A tile's running state (out, max, sum) for num_rows rows of head_dim, as attention_tile starts it (out 0,
/// max −∞, sum 0), and its score scratch.
struct TileState {
  std::vector<float> out, max, sum, scores;
  TileState(int64_t num_rows, int64_t head_dim)
      : out(static_cast<size_t>(cpu::attn_tile_rows(num_rows) * cpu::attn_tile_pitch(head_dim)), 0.0f),
        max(static_cast<size_t>(cpu::attn_tile_rows(num_rows)), -INFINITY),
        sum(static_cast<size_t>(cpu::attn_tile_rows(num_rows)), 0.0f),
        scores(static_cast<size_t>(cpu::attn_tile_scores_floats(num_rows))) {}
};

/// Per-row key ranges [begin, end) of block `block` (0 or 1) of num_keys keys, cycling over the rows: every key, a
/// window starting mid-block, causal (ends before the block does), empty in the first block.
void block_masks(int64_t num_rows, int64_t num_keys, int block, std::vector<int32_t>& begin,
                 std::vector<int32_t>& end) {
  begin.assign(static_cast<size_t>(num_rows), 0);
  end.assign(static_cast<size_t>(num_rows), 0);
  const auto n = static_cast<int32_t>(num_keys);
  for (size_t r = 0; r < begin.size(); ++r) {
    switch ((r + static_cast<size_t>(block)) % 4) {
      case 0: begin[r] = 0, end[r] = n; break;
      case 1: begin[r] = n / 3, end[r] = n; break;
      case 2: begin[r] = 0, end[r] = std::max(1, n - 2); break;
      default: begin[r] = block == 0 ? n : 0, end[r] = n; break;
    }
  }
}

// attn_tile_update at every ISA against the scalar variant on odd shapes: 1, 3, 8, 9, 13, 16, 24 and 64 rows (row
// groups of 8 partly filled, one to eight groups),
// head_dim 32, 64, 72 (pitch 96, zero padded), 1, 7, 33 and 64 keys (odd: the SIMD scores read the padding row),
// two key blocks in a row (the second rescales the first), and per-row masks that leave rows empty in one block, start
// mid-block or end before it.
TEST_P(KvAttentionPerIsa, TileUpdateMatchesScalarVariantOnOddShapesAndMasks) {
  std::vector<float> all_want, all_got;
  for (int64_t num_rows : {1, 3, 8, 9, 13, 16, 24, 64}) {
    for (int64_t head_dim : {32, 64, 72}) {
      for (int64_t num_keys : {1, 7, 33, 64}) {
        const int64_t pitch = cpu::attn_tile_pitch(head_dim);
        const auto q = random_floats(num_rows * head_dim, 101 + static_cast<uint32_t>(num_rows), 1.5f);
        std::vector<float> qt_want(static_cast<size_t>(cpu::attn_tile_qt_floats(num_rows, head_dim)), 0.0f);
        std::vector<float> qt_got = qt_want;
        // Packed in two calls (rows [0, 1) and [1, num_rows)), as a prefill tile packs token by token.
        scalar().attn_tile_pack_q(q.data(), 1, head_dim, 0, qt_want.data());
        scalar().attn_tile_pack_q(q.data() + head_dim, num_rows - 1, head_dim, 1, qt_want.data());
        table().attn_tile_pack_q(q.data(), 1, head_dim, 0, qt_got.data());
        table().attn_tile_pack_q(q.data() + head_dim, num_rows - 1, head_dim, 1, qt_got.data());
        TileState want_state(num_rows, head_dim), got_state(num_rows, head_dim);
        auto& [out_want, max_want, sum_want, s] = want_state;
        auto& [out_got, max_got, sum_got, s_got] = got_state;
        for (int block = 0; block < 2; ++block) {
          const uint32_t seed = 200 + static_cast<uint32_t>(block * 1000 + num_keys + head_dim);
          auto k = random_floats((num_keys + 1) * pitch, seed, 1.0f);
          const auto v = random_floats(num_keys * pitch, seed + 1);
          for (int64_t j = 0; j <= num_keys; ++j)  // zero padding past head_dim, as kv_rows_f32_* writes it
            for (int64_t d = head_dim; d < pitch; ++d) k[static_cast<size_t>(j * pitch + d)] = 0.0f;
          std::vector<int32_t> begin, end;
          block_masks(num_rows, num_keys, block, begin, end);
          scalar().attn_tile_update(qt_want.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f,
                                    begin.data(), end.data(), s.data(), max_want.data(), sum_want.data(),
                                    out_want.data(), nullptr, 0);
          table().attn_tile_update(qt_got.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f,
                                   begin.data(), end.data(), s.data(), max_got.data(), sum_got.data(), out_got.data(),
                                   nullptr, 0);
        }
        const auto want = tile_result(out_want, max_want, sum_want, num_rows, head_dim);
        const auto got = tile_result(out_got, max_got, sum_got, num_rows, head_dim);
        EXPECT_LE(nmse(want, got), kTileNmse)
            << "rows " << num_rows << " head_dim " << head_dim << " keys " << num_keys;
        all_want.insert(all_want.end(), want.begin(), want.end());
        all_got.insert(all_got.end(), got.begin(), got.end());
      }
    }
  }
  EXPECT_LE(nmse(all_want, all_got), kTileNmse);
}

// attn_tile_update's prefetch ranges change nothing but timing: the same bits as without them at every ISA, for
// ranges with unaligned starts, of 1 and 0 bytes, more lines than the tile has inner steps (1 row, 1 key: ~2 steps),
// and a tile with many steps and one line.
TEST_P(KvAttentionPerIsa, TileUpdateGivesTheSameBitsWithPrefetchRanges) {
  const std::vector<uint8_t> far(1 << 20, 0);  // prefetched, never read
  const std::vector<std::vector<cpu::PrefetchRange>> range_sets = {
      {{far.data() + 3, 1}},
      {{far.data() + 5, 0}, {far.data() + 100, 300}, {far.data() + 4096 + 17, 8192}},
      {{far.data(), static_cast<int64_t>(far.size())}},
  };
  for (int64_t num_rows : {1, 8, 24}) {
    for (int64_t num_keys : {1, 33, 64}) {
      const int64_t head_dim = 64, pitch = cpu::attn_tile_pitch(head_dim), rows = cpu::attn_tile_rows(num_rows);
      const auto q = random_floats(num_rows * head_dim, 7 + static_cast<uint32_t>(num_rows), 1.5f);
      std::vector<float> qt(static_cast<size_t>(cpu::attn_tile_qt_floats(num_rows, head_dim)), 0.0f);
      table().attn_tile_pack_q(q.data(), num_rows, head_dim, 0, qt.data());
      const auto k = random_floats((num_keys + 1) * pitch, 31, 1.0f);
      const auto v = random_floats(num_keys * pitch, 32);
      const std::vector<int32_t> begin(static_cast<size_t>(num_rows), 0),
          end(static_cast<size_t>(num_rows), static_cast<int32_t>(num_keys));
      std::vector<float> s(static_cast<size_t>(cpu::attn_tile_scores_floats(num_rows)));
      const auto run = [&](const cpu::PrefetchRange* ranges, int64_t num_ranges) {
        std::vector<float> out(static_cast<size_t>(rows * pitch), 0.0f), mx(static_cast<size_t>(rows), -INFINITY),
            sum(static_cast<size_t>(rows), 0.0f);
        table().attn_tile_update(qt.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f, begin.data(),
                                 end.data(), s.data(), mx.data(), sum.data(), out.data(), ranges, num_ranges);
        return tile_result(out, mx, sum, num_rows, head_dim);
      };
      const auto want = run(nullptr, 0);
      for (const auto& ranges : range_sets) {
        const auto got = run(ranges.data(), static_cast<int64_t>(ranges.size()));
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_EQ(want[i], got[i]) << "rows " << num_rows << " keys " << num_keys << " ranges " << ranges.size()
                                     << " value " << i;
      }
    }
  }
}

// attn_tile_update_v_f16 (V read as f16 rows in place, what decode tiles run) gives the bits of attn_tile_update on
// kv_rows_f32_f16's rows at every ISA: 1, 3, 8, 9 and 24 rows (one to three row groups), head_dim 32, 64, 96 and 128,
// 1, 7, 33 and 64 keys, V rows 16 values apart beyond head_dim (the stride is honoured), two key blocks in a row with
// the masks of the odd-shapes test, and prefetch ranges on the second block.
TEST_P(KvAttentionPerIsa, TileUpdateWithF16ValuesInPlaceGivesTheBitsOfConvertedRows) {
  const std::vector<uint8_t> far(1 << 16, 0);  // prefetched, never read
  const cpu::PrefetchRange ranges[2] = {{far.data() + 3, 5000}, {far.data() + 8192, 8192}};
  for (int64_t num_rows : {1, 3, 8, 9, 24}) {
    for (int64_t head_dim : {32, 64, 96, 128}) {
      for (int64_t num_keys : {1, 7, 33, 64}) {
        const int64_t pitch = cpu::attn_tile_pitch(head_dim);
        const int64_t v_stride = head_dim + 16;  // f16 values from one V row to the next
        const auto q = random_floats(num_rows * head_dim, 301 + static_cast<uint32_t>(num_rows), 1.5f);
        std::vector<float> qt(static_cast<size_t>(cpu::attn_tile_qt_floats(num_rows, head_dim)), 0.0f);
        table().attn_tile_pack_q(q.data(), num_rows, head_dim, 0, qt.data());
        TileState want_state(num_rows, head_dim), got_state(num_rows, head_dim);
        auto& [out_want, max_want, sum_want, s] = want_state;
        auto& [out_got, max_got, sum_got, s_got] = got_state;
        for (int block = 0; block < 2; ++block) {
          const uint32_t seed = 400 + static_cast<uint32_t>(block * 1000 + num_keys + head_dim);
          const auto k = random_floats((num_keys + 1) * pitch, seed, 1.0f);  // pitch == head_dim: no padding
          const auto v_values = random_floats(num_keys * v_stride, seed + 1);
          std::vector<uint16_t> v16(v_values.size());
          for (size_t i = 0; i < v16.size(); ++i) v16[i] = ref::f32_to_f16(v_values[i]);
          const auto* v_bytes = reinterpret_cast<const uint8_t*>(v16.data());
          const auto v_stride_bytes = v_stride * static_cast<int64_t>(sizeof(uint16_t));
          std::vector<float> v_rows(static_cast<size_t>(num_keys * pitch));
          table().kv_rows_f32_f16(v_bytes, v_stride_bytes, num_keys, head_dim, v_rows.data());
          std::vector<int32_t> begin, end;
          block_masks(num_rows, num_keys, block, begin, end);
          const cpu::PrefetchRange* pf = block == 1 ? ranges : nullptr;
          const int64_t num_pf = block == 1 ? 2 : 0;
          table().attn_tile_update(qt.data(), num_rows, k.data(), v_rows.data(), num_keys, head_dim, 0.125f,
                                   begin.data(), end.data(), s.data(), max_want.data(), sum_want.data(),
                                   out_want.data(), pf, num_pf);
          table().attn_tile_update_v_f16(qt.data(), num_rows, k.data(), v_bytes, v_stride_bytes, num_keys, head_dim,
                                         0.125f, begin.data(), end.data(), s.data(), max_got.data(), sum_got.data(),
                                         out_got.data(), pf, num_pf);
        }
        for (int64_t r = 0; r < num_rows; ++r) {
          ASSERT_EQ(max_want[static_cast<size_t>(r)], max_got[static_cast<size_t>(r)]) << "row " << r;
          ASSERT_EQ(sum_want[static_cast<size_t>(r)], sum_got[static_cast<size_t>(r)]) << "row " << r;
          for (int64_t d = 0; d < head_dim; ++d)
            ASSERT_EQ(out_want[static_cast<size_t>(r * pitch + d)], out_got[static_cast<size_t>(r * pitch + d)])
                << "rows " << num_rows << " head_dim " << head_dim << " keys " << num_keys << " row " << r << " dim "
                << d;
        }
      }
    }
  }
}

// bf16 tile products: q, K, V and the probabilities rounded to bf16 (relative error ≤ 2^-9 each), f32 sums. Rounding
// q and K moves a score by about 2^-9 · scale · (Σ_d (q_d K_d)²)^½ (~0.004 for these rows: |q_d| ~1.5–2, |K_d| ~1),
// so each probability by that relative amount, and the output — an average over many keys, small against its V rows —
// by that over its own size: NMSE 3.5e-6 (tile test) to 8e-5 (prefill test, 700 keys) measured against f32; 3e-4
// leaves room while pairing the wrong keys or dims moves the output by O(1). A SIMD variant against the scalar bf16
// reference: the same rounded operands, f32 sums in another order (an ulp can flip a probability's rounding): NMSE
// ≤ 1e-14 measured; 1e-9 as for the f32 tiles.
constexpr double kBf16VsF32Nmse = 3e-4;
constexpr double kBf16TileNmse = 1e-9;

// attn_tile_update_bf16 (where the variant has it) against the scalar variant's bf16 reference, and that reference
// against the f32 update, on the odd shapes and masks of the f32 test (two key blocks, rows 1..64, head_dim 32, 64,
// 72, odd key counts: the pair of the last key is half padding); the bf16 results must differ from the f32 ones
// (the rounding is there).
TEST_P(KvAttentionPerIsa, Bf16TileUpdateMatchesScalarBf16AndF32WithinBf16Rounding) {
  if (table().attn_tile_update_bf16 == nullptr) GTEST_SKIP() << "no bf16 tile products in this variant on this CPU";
  std::vector<float> all_f32, all_ref, all_got;
  for (int64_t num_rows : {1, 3, 8, 9, 13, 16, 24, 64}) {
    for (int64_t head_dim : {32, 64, 72}) {
      for (int64_t num_keys : {1, 7, 33, 64}) {
        const int64_t pitch = cpu::attn_tile_pitch(head_dim);
        const auto q = random_floats(num_rows * head_dim, 101 + static_cast<uint32_t>(num_rows), 1.5f);
        const auto qt_size = static_cast<size_t>(cpu::attn_tile_qt_floats(num_rows, head_dim));
        std::vector<float> qt_f32(qt_size, 0.0f);
        std::vector<uint16_t> qt_ref(qt_size, 0), qt_got(qt_size, 0);
        scalar().attn_tile_pack_q(q.data(), num_rows, head_dim, 0, qt_f32.data());
        scalar().attn_tile_pack_q_bf16(q.data(), num_rows, head_dim, 0, qt_ref.data());
        table().attn_tile_pack_q_bf16(q.data(), 1, head_dim, 0, qt_got.data());
        table().attn_tile_pack_q_bf16(q.data() + head_dim, num_rows - 1, head_dim, 1, qt_got.data());
        TileState f32_state(num_rows, head_dim), ref_state(num_rows, head_dim), got_state(num_rows, head_dim);
        for (int block = 0; block < 2; ++block) {
          const uint32_t seed = 200 + static_cast<uint32_t>(block * 1000 + num_keys + head_dim);
          auto k = random_floats((num_keys + 1) * pitch, seed, 1.0f);
          const auto v = random_floats(num_keys * pitch, seed + 1);
          for (int64_t j = 0; j <= num_keys; ++j)
            for (int64_t d = head_dim; d < pitch; ++d) k[static_cast<size_t>(j * pitch + d)] = 0.0f;
          std::vector<int32_t> begin, end;
          block_masks(num_rows, num_keys, block, begin, end);
          scalar().attn_tile_update(qt_f32.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f,
                                    begin.data(), end.data(), f32_state.scores.data(), f32_state.max.data(),
                                    f32_state.sum.data(), f32_state.out.data(), nullptr, 0);
          scalar().attn_tile_update_bf16(qt_ref.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f,
                                         begin.data(), end.data(), ref_state.scores.data(), ref_state.max.data(),
                                         ref_state.sum.data(), ref_state.out.data(), nullptr, 0);
          table().attn_tile_update_bf16(qt_got.data(), num_rows, k.data(), v.data(), num_keys, head_dim, 0.125f,
                                        begin.data(), end.data(), got_state.scores.data(), got_state.max.data(),
                                        got_state.sum.data(), got_state.out.data(), nullptr, 0);
        }
        const auto f32 = tile_result(f32_state.out, f32_state.max, f32_state.sum, num_rows, head_dim);
        const auto ref = tile_result(ref_state.out, ref_state.max, ref_state.sum, num_rows, head_dim);
        const auto got = tile_result(got_state.out, got_state.max, got_state.sum, num_rows, head_dim);
        EXPECT_LE(nmse(ref, got), kBf16TileNmse)
            << "rows " << num_rows << " head_dim " << head_dim << " keys " << num_keys;
        EXPECT_LE(nmse(f32, ref), kBf16VsF32Nmse)
            << "rows " << num_rows << " head_dim " << head_dim << " keys " << num_keys;
        all_f32.insert(all_f32.end(), f32.begin(), f32.end());
        all_ref.insert(all_ref.end(), ref.begin(), ref.end());
        all_got.insert(all_got.end(), got.begin(), got.end());
      }
    }
  }
  EXPECT_LE(nmse(all_ref, all_got), kBf16TileNmse);
  EXPECT_LE(nmse(all_f32, all_got), kBf16VsF32Nmse);
  EXPECT_GT(nmse(all_f32, all_got), kTileNmse);  // rounded to bf16, not f32 under another name
  std::printf("bf16 tile NMSE: vs scalar bf16 %.3g, vs f32 %.3g\n", nmse(all_ref, all_got), nmse(all_f32, all_got));
}

// attn_tile_update_bf16_kv_f16 (f16 K and V rows in place) gives the bits of attn_tile_update_bf16 on kv_rows_f32_f16's
// rows at every ISA that has it: 1, 8, 9 and 24 rows, head_dim 32, 64 and 128, 1, 7, 33 and 64 keys (an odd count:
// the last pair's second K row is zeros in place, the zero padding row through f32), rows 16 values apart beyond
// head_dim, two key blocks with the odd-shapes test's masks, prefetch ranges on the second.
TEST_P(KvAttentionPerIsa, Bf16TileUpdateFromF16RowsGivesTheBitsOfConvertedRows) {
  if (table().attn_tile_update_bf16_kv_f16 == nullptr) GTEST_SKIP() << "no bf16 tile products in this variant";
  const std::vector<uint8_t> far(1 << 16, 0);  // prefetched, never read
  const cpu::PrefetchRange ranges[2] = {{far.data() + 3, 5000}, {far.data() + 8192, 8192}};
  for (int64_t num_rows : {1, 8, 9, 24}) {
    for (int64_t head_dim : {32, 64, 128}) {
      for (int64_t num_keys : {1, 7, 33, 64}) {
        const int64_t pitch = cpu::attn_tile_pitch(head_dim), stride = head_dim + 16;
        const auto stride_bytes = stride * static_cast<int64_t>(sizeof(uint16_t));
        const auto q = random_floats(num_rows * head_dim, 501 + static_cast<uint32_t>(num_rows), 1.5f);
        std::vector<uint16_t> qt(static_cast<size_t>(cpu::attn_tile_qt_floats(num_rows, head_dim)), 0);
        table().attn_tile_pack_q_bf16(q.data(), num_rows, head_dim, 0, qt.data());
        TileState want_state(num_rows, head_dim), got_state(num_rows, head_dim);
        for (int block = 0; block < 2; ++block) {
          const uint32_t seed = 600 + static_cast<uint32_t>(block * 1000 + num_keys + head_dim);
          std::vector<uint16_t> k16(static_cast<size_t>(num_keys * stride)), v16(k16.size());
          const auto kx = random_floats(num_keys * stride, seed, 1.0f), vx = random_floats(num_keys * stride, seed + 1);
          for (size_t i = 0; i < k16.size(); ++i) k16[i] = ref::f32_to_f16(kx[i]), v16[i] = ref::f32_to_f16(vx[i]);
          const auto* k_bytes = reinterpret_cast<const uint8_t*>(k16.data());
          const auto* v_bytes = reinterpret_cast<const uint8_t*>(v16.data());
          std::vector<float> k_rows(static_cast<size_t>((num_keys + 1) * pitch), 0.0f), v_rows(k_rows.size());
          table().kv_rows_f32_f16(k_bytes, stride_bytes, num_keys, head_dim, k_rows.data());
          table().kv_rows_f32_f16(v_bytes, stride_bytes, num_keys, head_dim, v_rows.data());
          std::vector<int32_t> begin, end;
          block_masks(num_rows, num_keys, block, begin, end);
          const cpu::PrefetchRange* pf = block == 1 ? ranges : nullptr;
          const int64_t num_pf = block == 1 ? 2 : 0;
          table().attn_tile_update_bf16(qt.data(), num_rows, k_rows.data(), v_rows.data(), num_keys, head_dim, 0.125f,
                                        begin.data(), end.data(), want_state.scores.data(), want_state.max.data(),
                                        want_state.sum.data(), want_state.out.data(), pf, num_pf);
          table().attn_tile_update_bf16_kv_f16(qt.data(), num_rows, k_bytes, stride_bytes, v_bytes, stride_bytes,
                                               num_keys, head_dim, 0.125f, begin.data(), end.data(),
                                               got_state.scores.data(), got_state.max.data(), got_state.sum.data(),
                                               got_state.out.data(), pf, num_pf);
        }
        for (int64_t r = 0; r < num_rows; ++r) {
          ASSERT_EQ(want_state.max[static_cast<size_t>(r)], got_state.max[static_cast<size_t>(r)]) << "row " << r;
          ASSERT_EQ(want_state.sum[static_cast<size_t>(r)], got_state.sum[static_cast<size_t>(r)]) << "row " << r;
          for (int64_t d = 0; d < head_dim; ++d)
            ASSERT_EQ(want_state.out[static_cast<size_t>(r * pitch + d)],
                      got_state.out[static_cast<size_t>(r * pitch + d)])
                << "rows " << num_rows << " head_dim " << head_dim << " keys " << num_keys << " row " << r << " dim "
                << d;
        }
      }
    }
  }
}

/// attention_tile over query tokens at `positions` (one sequence) for KV head kv_head of `layer`, split into
/// num_chunks chunks of the span and combined: out[tokens][group][head_dim].
std::vector<float> tiled_attention(const KernelTable& kernels, const KvCache& kv, uint32_t layer, uint32_t kv_head,
                                   const std::vector<uint32_t>& positions, const std::vector<float>& q,
                                   uint32_t group, float scale, const std::vector<float>& sinks, uint32_t num_chunks,
                                   bool allow_bf16 = false) {
  const uint32_t hd = kv.head_dim(), num_tokens = static_cast<uint32_t>(positions.size());
  std::vector<uint32_t> lo(num_tokens), hi(num_tokens);
  uint32_t span_lo = UINT32_MAX, span_hi = 0;
  for (uint32_t i = 0; i < num_tokens; ++i) {
    lo[i] = kv.first_visible_position(layer, positions[i]);
    hi[i] = positions[i] + 1;
    span_lo = std::min(span_lo, lo[i]);
    span_hi = std::max(span_hi, hi[i]);
  }
  AttentionTileScratch scratch(num_tokens * group, hd);
  AttentionTile tile;
  tile.q = q.data();
  tile.q_token_stride = static_cast<uint64_t>(group) * hd;
  tile.num_tokens = num_tokens;
  tile.key_lo = lo.data();
  tile.key_hi = hi.data();
  tile.scale = scale;
  const KvTileKernels tk = kv_tile_kernels(kernels, kv.k_type(), kv.v_type(), allow_bf16);
  std::vector<float> parts(num_chunks * scratch.part_floats());
  for (uint32_t c = 0; c < num_chunks; ++c) {
    const uint32_t begin = span_lo + (span_hi - span_lo) * c / num_chunks;
    const uint32_t end = span_lo + (span_hi - span_lo) * (c + 1) / num_chunks;
    attention_tile(kernels, tk, kv, layer, kv_head, tile, group, begin, end, scratch);
    std::copy(scratch.part(), scratch.part() + scratch.part_floats(), parts.begin() + c * scratch.part_floats());
  }
  std::vector<float> out(static_cast<size_t>(num_tokens) * group * hd, -1.0f);
  attention_tile_combine(num_chunks, parts.data(), scratch.part_floats(), scratch.max_rows(), num_tokens * group, group,
                         hd, sinks.data(), out.data(), static_cast<uint64_t>(group) * hd);
  return out;
}

// Decode tiles (one token) against double over the dequantized cache, as the per-key path is tested above: the
// sliding layer at and past its window's edge (the visible keys wrap the ring) and the full layer, with sinks, every
// K/V type pair, head_dim 32 and 64, unsplit and split into 3 chunks (chunks of the short ranges hold no key).
TEST_P(KvAttentionPerIsa, TiledDecodeAttentionMatchesDoubleAtTheSlidingWindowEdge) {
  const uint32_t group = 3;
  for (KvTypePair types : kTypePairs) {
    for (uint32_t head_dim : {32u, 64u}) {
      const ModelHparams hp = attention_hparams(head_dim);
      KvCache kv = filled_cache(hp, types.k, types.v, 0);
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      const auto q = random_floats(group * head_dim, 77);
      const std::vector<float> sinks = {0.5f, -1.0f, 2.0f};
      for (uint32_t pos = 0; pos <= 20; ++pos) {
        store_position(kv, hp, pos);
        if (pos != 0 && (pos < 7 || pos > 9) && pos < 17) continue;
        for (uint32_t layer : {0u, 1u}) {
          const uint32_t first = kv.first_visible_position(layer, pos);
          const auto want = attention_double(kv, layer, 1, first, pos - first + 1, q, group, scale, sinks);
          for (uint32_t chunks : {1u, 3u}) {
            const auto got = tiled_attention(table(), kv, layer, 1, {pos}, q, group, scale, sinks, chunks);
            EXPECT_LE(nmse(want, got), kScalarVsDoubleNmse) << pair_name(types) << " head_dim " << head_dim
                                                            << " layer " << layer << " pos " << pos << " chunks "
                                                            << chunks;
          }
        }
      }
    }
  }
}

// Prefill tiles: 1, 5 and 8 consecutive tokens (rows 3 .. 24) whose key ranges differ (causal: each sees up to its
// own position; sliding layer: each its own window, the ring holding the tile's extra positions), over long spans of
// 2 to 33 key blocks, against the per-key path (attention_full) for each token; unsplit and in 2 chunks. Where the
// variant runs bf16 tiles, also with them allowed (KvTileKernels::bf16, --attention-bf16; f16 rows in place, through
// f32 rows where the ring wraps, q8_0/q4_0 through f32 rows): within bf16 rounding, and not the f32 tiles' results.
TEST_P(KvAttentionPerIsa, TiledPrefillAttentionMatchesPerKeyPathForEveryToken) {
  const uint32_t group = 3, head_dim = 64;
  const ModelHparams hp = attention_hparams(head_dim);
  const float scale = 0.125f;
  const std::vector<float> sinks = {1.0f, -3.0f, 6.0f};
  const bool runs_bf16 = table().attn_tile_update_bf16 != nullptr && table().attn_tile_bf16_min_rows <= 3;
  for (KvTypePair types : {kTypePairs[0], kTypePairs[3]}) {
    const KvAttentionKernels kk = kv_attention_kernels(table(), types.k, types.v);
    for (uint32_t num_tokens : {1u, 5u, 8u}) {
      for (uint32_t last : {100u, 2047u}) {
        // The cache as a prefill leaves it when the tile's tokens have been stored: up to the last one.
        // 7 extra ring slots: the sliding layer still holds the first token's window.
        const KvCache kv = filled_cache(hp, types.k, types.v, last + 1, /*extra_sliding_slots=*/7);
        std::vector<uint32_t> positions;
        for (uint32_t i = 0; i < num_tokens; ++i) positions.push_back(last + 1 - num_tokens + i);
        const auto q = random_floats(num_tokens * group * head_dim, 300 + num_tokens, 2.0f);
        for (uint32_t layer : {0u, 1u}) {
          std::vector<float> want;
          for (uint32_t i = 0; i < num_tokens; ++i) {
            const uint32_t first = kv.first_visible_position(layer, positions[i]);
            const uint32_t n = positions[i] - first + 1;
            std::vector<float> scores(group * n), o(group * head_dim);
            const std::vector<float> qi(q.begin() + i * group * head_dim, q.begin() + (i + 1) * group * head_dim);
            attention_full(table(), kk, kv, layer, 0, first, n, qi.data(), group, scale, sinks.data(), scores.data(),
                           o.data());
            want.insert(want.end(), o.begin(), o.end());
          }
          for (uint32_t chunks : {1u, 2u}) {
            const auto got = tiled_attention(table(), kv, layer, 0, positions, q, group, scale, sinks, chunks);
            const std::string where = pair_name(types) + " tokens " + std::to_string(num_tokens) + " last " +
                                      std::to_string(last) + " layer " + std::to_string(layer) + " chunks " +
                                      std::to_string(chunks);
            EXPECT_LE(nmse(want, got), kTileNmse) << where;
            if (!runs_bf16) continue;
            // With the bf16 products allowed (--attention-bf16): within bf16 rounding, and not the f32 results.
            const auto got16 = tiled_attention(table(), kv, layer, 0, positions, q, group, scale, sinks, chunks, true);
            EXPECT_LE(nmse(want, got16), kBf16VsF32Nmse) << where;
            EXPECT_GT(nmse(got, got16), 0.0) << where;
          }
        }
      }
    }
  }
}

TEST(AttentionChunks, SplitOnlyWhenTasksAreFewerThanThreadsAndKeysAreMany) {
  EXPECT_EQ(attention_num_chunks(8, 100000, 8), 1u);    // as many tasks as threads
  EXPECT_EQ(attention_num_chunks(8, 100000, 16), 2u);   // 8 KV heads, 16 threads
  EXPECT_EQ(attention_num_chunks(8, 100000, 12), 2u);   // rounded up: every thread gets a chunk
  EXPECT_EQ(attention_num_chunks(2, 1023, 16), 1u);     // fewer than 2 chunks of kMinKeysPerAttentionChunk keys
  EXPECT_EQ(attention_num_chunks(2, 1024, 16), 2u);
  EXPECT_EQ(attention_num_chunks(2, 100000, 16), 8u);
  EXPECT_EQ(attention_num_chunks(0, 100000, 16), 1u);
}

TEST(KvCacheTypes, BytesPerPositionAndCacheSizeFollowTheBlockLayouts) {
  ModelHparams hp = attention_hparams(64);
  hp.num_kv_heads = 8;  // gpt-oss-20b: 8 KV heads of 64
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kF16), 2048u);
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kQ8_0), 8u * 2 * 68);   // 2 blocks of 34 per row
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kQ4_0), 8u * 2 * 36);   // 2 blocks of 18 per row
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kQ8_0, KvCacheType::kQ4_0), 8u * (68 + 36));
  // Sliding layer 0 keeps 8 positions, full layer 1 all 100.
  EXPECT_EQ(kv_cache_bytes(hp, 100, KvCacheType::kQ8_0, KvCacheType::kF16), (8u + 100) * 8 * (68 + 128));
  auto cache = KvCache::create(hp, 100, KvCacheType::kQ8_0, KvCacheType::kF16);
  ASSERT_TRUE(cache.has_value());
  EXPECT_EQ(cache->reserved_bytes(), kv_cache_bytes(hp, 100, KvCacheType::kQ8_0, KvCacheType::kF16));
  EXPECT_EQ(cache->k_stride_bytes(), 68u);
  EXPECT_EQ(cache->v_stride_bytes(), 128u);
}

TEST(KvCacheTypes, ParseNamesEveryTypeAndRejectsOthersNamingTheValue) {
  for (KvCacheType t : {KvCacheType::kF16, KvCacheType::kF32, KvCacheType::kQ8_0, KvCacheType::kQ4_0})
    EXPECT_EQ(parse_kv_cache_type(kv_cache_type_name(t)).value(), t);
  auto bad = parse_kv_cache_type("q5_0");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("'q5_0'"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("q4_0"), std::string::npos) << bad.error().message;
}

TEST(KvCacheTypes, QuantizedTypeNeedsAHeadDimThatIsAMultipleOf32) {
  const ModelHparams hp = attention_hparams(40);
  auto cache = KvCache::create(hp, 16, KvCacheType::kF16, KvCacheType::kQ8_0);
  ASSERT_FALSE(cache.has_value());
  EXPECT_NE(cache.error().message.find("q8_0"), std::string::npos) << cache.error().message;
  EXPECT_NE(cache.error().message.find("head_dim 40"), std::string::npos) << cache.error().message;
  EXPECT_TRUE(KvCache::create(hp, 16, KvCacheType::kF16, KvCacheType::kF32).has_value());
}

}  // namespace
}  // namespace hetmoe
