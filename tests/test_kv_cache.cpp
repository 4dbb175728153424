// KV cache: sliding-window ring buffer, full-context layers, f16/f32 storage, context limits (the quantized types:
// tests/test_kv_attention.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/exec/forward_cpu.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/exec/forward_reference.h"
#include "runtime/model/model.h"

namespace hetmoe {
namespace {

ModelHparams small_hparams() {
  ModelHparams hp;
  hp.num_layers = 2;  // layer 0 sliding, layer 1 full
  hp.hidden_dim = 64;
  hp.num_heads = 4;
  hp.num_kv_heads = 2;
  hp.head_dim = 8;
  hp.num_experts = 4;
  hp.num_experts_used = 2;
  hp.expert_ffn_dim = 64;
  hp.vocab_size = 100;
  hp.context_length = 1024;
  hp.sliding_window = 128;
  return hp;
}

/// A distinct, exactly representable value per (pos, element).
std::vector<float> row_for(uint32_t pos, uint32_t n, float sign) {
  std::vector<float> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = sign * static_cast<float>((pos * 7 + i) % 1000) / 8.0f;
  return v;
}

TEST(KvCache, SlidingLayerKeepsExactlyTheLastWindowAcrossTheRingEdge) {
  const ModelHparams hp = small_hparams();
  auto cache = KvCache::create(hp, 300, KvCacheType::kF32);
  ASSERT_TRUE(cache.has_value());
  EXPECT_EQ(cache->capacity(0), 128u);
  EXPECT_EQ(cache->capacity(1), 300u);
  std::vector<float> out(hp.head_dim);
  for (uint32_t pos = 0; pos < 300; ++pos) {
    const auto k = row_for(pos, hp.kv_dim(), 1), v = row_for(pos, hp.kv_dim(), -1);
    cache->store(0, pos, k.data(), v.data());
    cache->store(1, pos, k.data(), v.data());
    const uint32_t first = cache->first_visible_position(0, pos);
    EXPECT_EQ(first, pos >= 127 ? pos - 127 : 0u) << pos;  // window 128 includes the newest position
    EXPECT_EQ(cache->first_visible_position(1, pos), 0u);
    // Every held position of the sliding layer still reads back its own values (positions 127, 128, 129 cross
    // the ring's wrap).
    for (uint32_t p : {first, (first + pos) / 2, pos}) {
      const auto want_k = row_for(p, hp.kv_dim(), 1), want_v = row_for(p, hp.kv_dim(), -1);
      for (uint32_t g = 0; g < hp.num_kv_heads; ++g) {
        cache->load_k(0, p, g, out.data());
        for (uint32_t i = 0; i < hp.head_dim; ++i) ASSERT_EQ(out[i], want_k[g * hp.head_dim + i]);
        cache->load_v(0, p, g, out.data());
        for (uint32_t i = 0; i < hp.head_dim; ++i) ASSERT_EQ(out[i], want_v[g * hp.head_dim + i]);
      }
    }
  }
  // The full layer still holds position 0 after 300 positions.
  cache->load_k(1, 0, 1, out.data());
  const auto want = row_for(0, hp.kv_dim(), 1);
  for (uint32_t i = 0; i < hp.head_dim; ++i) EXPECT_EQ(out[i], want[hp.head_dim + i]);
}

// A prefill batch stores all its keys before attention: with extra slots, the keys the batch's first token sees
// survive the batch's writes.
TEST(KvCache, ExtraSlidingSlotsKeepTheWindowOfABatchsFirstToken) {
  const ModelHparams hp = small_hparams();
  const uint32_t batch = 64;
  auto cache = KvCache::create(hp, 1024, KvCacheType::kF32, batch - 1);
  ASSERT_TRUE(cache.has_value());
  EXPECT_EQ(cache->capacity(0), 128u + 63u);
  std::vector<float> out(hp.head_dim);
  for (uint32_t pos = 0; pos < 300 + batch; ++pos) {
    const auto k = row_for(pos, hp.kv_dim(), 1);
    cache->store(0, pos, k.data(), k.data());
  }
  // The batch was positions 300..363; token 300 sees 173..300, all still intact.
  for (uint32_t p = cache->first_visible_position(0, 300); p <= 300; ++p) {
    cache->load_k(0, p, 0, out.data());
    ASSERT_EQ(out[0], row_for(p, hp.kv_dim(), 1)[0]) << p;
  }
  EXPECT_EQ(cache->first_visible_position(0, 300), 173u);
}

TEST(KvCache, F16StorageRoundsToHalfPrecision) {
  const ModelHparams hp = small_hparams();
  auto cache = KvCache::create(hp, 16, KvCacheType::kF16);
  ASSERT_TRUE(cache.has_value());
  std::vector<float> k(hp.kv_dim()), v(hp.kv_dim()), out(hp.head_dim);
  for (uint32_t i = 0; i < hp.kv_dim(); ++i) {
    k[i] = 1.0f + static_cast<float>(i) * 1e-4f;
    v[i] = -3.14159f * static_cast<float>(i);
  }
  cache->store(1, 5, k.data(), v.data());
  cache->load_k(1, 5, 1, out.data());
  for (uint32_t i = 0; i < hp.head_dim; ++i) EXPECT_NEAR(out[i], k[hp.head_dim + i], 1e-3f);  // f16: 11-bit mantissa
  cache->load_v(1, 5, 0, out.data());
  for (uint32_t i = 0; i < hp.head_dim; ++i) EXPECT_NEAR(out[i], v[i], std::abs(v[i]) * 1e-3f);
}

TEST(KvCache, ContextLongerThanTheModelsOrZeroIsRejected) {
  const ModelHparams hp = small_hparams();
  auto too_long = KvCache::create(hp, 1025, KvCacheType::kF16);
  ASSERT_FALSE(too_long.has_value());
  EXPECT_NE(too_long.error().message.find("1025"), std::string::npos);
  EXPECT_FALSE(KvCache::create(hp, 0, KvCacheType::kF16).has_value());
}

TEST(KvCache, ContextShorterThanTheWindowCapsTheSlidingRing) {
  const ModelHparams hp = small_hparams();
  auto cache = KvCache::create(hp, 50, KvCacheType::kF16);
  ASSERT_TRUE(cache.has_value());
  EXPECT_EQ(cache->capacity(0), 50u);
  EXPECT_EQ(cache->reserved_bytes(), 2ull * hp.kv_dim() * 2 * (50 + 50));
}

TEST(KvCache, BytesPerPositionFor20bIsTwoKibPerLayer) {
  ModelHparams hp;
  hp.num_kv_heads = 8;
  hp.head_dim = 64;
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kF16), 2048u);  // gpt-oss-spec.md §7
  EXPECT_EQ(kv_bytes_per_position(hp, KvCacheType::kF32), 4096u);
}

// bench --depth-fill repeat: positions appended without computing repeat the entries `period` positions back
// (period = min(positions cached, sliding window)), in every layer (the tiny model's sliding ones wrap their ring),
// and decoding continues from there; bad requests are errors that change nothing.
TEST(KvCache, RepeatedPositionsCopyTheEntriesAPeriodBackAndDecodingContinues) {
  auto model = Model::load(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf");
  ASSERT_TRUE(model.has_value()) << model.error().to_string();
  const ModelHparams& hp = model->hparams;
  CpuForwardOptions o;
  o.context_length = 1024;
  o.num_threads = 2;
  auto fwd = CpuForward::create(*model, o, cpu::kernel_table(*cpu::selected_isa()));
  ASSERT_TRUE(fwd.has_value()) << fwd.error().to_string();
  CpuForward& f = **fwd;
  EXPECT_EQ(f.append_repeated_positions(10).error().code, ErrorCode::kInvalidArgument);  // nothing cached yet
  const uint32_t computed = 200;
  std::vector<int32_t> ids(computed);
  for (uint32_t i = 0; i < computed; ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % hp.vocab_size);
  ASSERT_TRUE(f.forward_batch(ids, {}));
  EXPECT_EQ(f.append_repeated_positions(1024 - computed + 1).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(f.num_positions(), computed);
  ASSERT_TRUE(f.append_repeated_positions(600));
  EXPECT_EQ(f.num_positions(), computed + 600);
  const uint32_t period = std::min(computed, hp.sliding_window);
  const KvCache& kv = f.sequence().kv;
  const uint64_t k_bytes = kv.k_stride_bytes(), v_bytes = kv.v_stride_bytes();
  for (uint32_t l = 0; l < hp.num_layers; ++l)
    for (uint32_t p : {computed, computed + 1, computed + 599})
      for (uint32_t g = 0; g < hp.num_kv_heads; ++g) {
        // The repeated position and the computed one it repeats (period, 2·period, … back).
        uint32_t src = p;
        while (src >= computed) src -= period;
        if (hp.is_sliding(l) && p - src >= kv.capacity(l)) src = p - period;  // the source left the ring: compare
        EXPECT_EQ(0, std::memcmp(kv.k_row(l, p, g), kv.k_row(l, src, g), k_bytes)) << l << " " << p;
        EXPECT_EQ(0, std::memcmp(kv.v_row(l, p, g), kv.v_row(l, src, g), v_bytes)) << l << " " << p;
      }
  std::vector<float> logits(hp.vocab_size);
  ASSERT_TRUE(f.forward(5, logits));
  EXPECT_EQ(f.num_positions(), computed + 601);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  // Paths that do not implement it say so.
  auto reference = ReferenceForward::create(*model, 256, KvCacheType::kF16, 1);
  ASSERT_TRUE(reference.has_value());
  ASSERT_TRUE(reference->forward_batch(std::span<const int32_t>(ids).subspan(0, 4), {}));
  EXPECT_EQ(reference->append_repeated_positions(1).error().code, ErrorCode::kUnsupported);
}

TEST(KvCache, TypeParsingNamesTheChoices) {
  EXPECT_TRUE(parse_kv_cache_type("f16").has_value());
  auto bad = parse_kv_cache_type("q4");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("expected f16, f32, q8_0 or q4_0"), std::string::npos) << bad.error().message;
}

}  // namespace
}  // namespace hetmoe
