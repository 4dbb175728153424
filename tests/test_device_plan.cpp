// Device memory planning (runtime/backend/device_plan.h): byte sizes, the experts a Plan puts on the GPU laid out under the
// VRAM budget at, below and above each threshold, for the tiny fixture and the gpt-oss-20b hyperparameters; the
// GPU experts of a Plan. Pure host code.
#include <gtest/gtest.h>

#include <algorithm>

#include "placement/plan.h"
#include "runtime/backend/device_plan.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"
#include "runtime/model/synth.h"

namespace hetmoe {
namespace {

const std::string kData = HETMOE_TEST_DATA_DIR;

TEST(ParseByteSize, AcceptsBinaryAndDecimalUnitsAndFractions) {
  EXPECT_EQ(*parse_byte_size("6GiB"), 6ull << 30);
  EXPECT_EQ(*parse_byte_size("6gib"), 6ull << 30);
  EXPECT_EQ(*parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_byte_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_byte_size("1.5G"), 3ull << 29);
  EXPECT_EQ(*parse_byte_size("2GB"), 2000000000ull);
  EXPECT_EQ(*parse_byte_size("4096"), 4096ull);
  EXPECT_EQ(*parse_byte_size(" 7 KiB "), 7ull << 10);
  EXPECT_EQ(*parse_byte_size("0"), 0ull);
}

TEST(ParseByteSize, RejectsEmptyNegativeUnknownUnitAndHugeValues) {
  for (const char* text : {"", "GiB", "-1GiB", "6 parsecs", "1e30", "1.2.3G", "99999999999TiB"}) {
    auto r = parse_byte_size(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(std::string("'") + text + "'"), std::string::npos) << r.error().message;
  }
}

DeviceModelDesc tiny_desc() {
  auto m = Model::load(kData + "/gpt-oss-tiny.gguf");
  EXPECT_TRUE(m.has_value());
  return describe_for_device(*m);
}

DeviceModelDesc desc_20b() {
  auto preset = synth_find_preset("gpt-oss-20b");
  EXPECT_TRUE(preset.has_value());
  DeviceModelDesc d;
  ModelHparams& hp = d.hparams;
  hp.num_layers = preset->num_layers;
  hp.hidden_dim = preset->hidden_dim;
  hp.num_heads = preset->num_heads;
  hp.num_kv_heads = preset->num_kv_heads;
  hp.head_dim = preset->head_dim;
  hp.num_experts = preset->num_experts;
  hp.num_experts_used = preset->num_experts_used;
  hp.expert_ffn_dim = preset->expert_ffn_dim;
  hp.vocab_size = preset->vocab_size;
  hp.context_length = preset->context_length;
  hp.sliding_window = preset->sliding_window;
  // Router bias: expert e of layer l has bias ((e * 7 + l) % 32), so each layer ranks its experts differently.
  d.router_bias.assign(hp.num_layers, std::vector<float>(hp.num_experts));
  for (uint32_t l = 0; l < hp.num_layers; ++l)
    for (uint32_t e = 0; e < hp.num_experts; ++e) d.router_bias[l][e] = static_cast<float>((e * 7 + l) % 32);
  return d;
}

/// The experts 0..k−1 of every layer (k = num_experts: all of them; 0: none, as --cpu-moe).
std::vector<std::vector<int32_t>> first_experts(const DeviceModelDesc& d, uint32_t k) {
  std::vector<int32_t> ids(k);
  for (uint32_t e = 0; e < k; ++e) ids[e] = static_cast<int32_t>(e);
  return std::vector<std::vector<int32_t>>(d.hparams.num_layers, ids);
}

DevicePlanOptions options(uint64_t budget, std::vector<std::vector<int32_t>> gpu_experts) {
  DevicePlanOptions o;
  o.vram_budget_bytes = budget;
  o.context_length = 4096;
  o.gpu_experts = std::move(gpu_experts);
  o.attention_scratch_floats = 1 << 16;
  o.moe_scratch_floats = 1 << 16;
  return o;
}

DevicePlanOptions all_experts(const DeviceModelDesc& d, uint64_t budget) {
  return options(budget, first_experts(d, d.hparams.num_experts));
}

/// Every buffer aligned, inside the arena, none overlapping; the arena within the budget.
void expect_consistent(const DevicePlan& p) {
  uint64_t end = 0;
  for (const DeviceBuffer& b : p.buffers) {
    EXPECT_EQ(b.offset % kDeviceBufferAlign, 0u) << b.name;
    EXPECT_GE(b.offset, end) << b.name << " overlaps the previous buffer";
    end = b.offset + b.bytes;
  }
  EXPECT_LE(end, p.total_bytes);
  EXPECT_LE(p.total_bytes, p.budget_bytes);
  EXPECT_EQ(p.total_bytes, p.dense_bytes + p.kv_bytes + p.activation_bytes + p.expert_bytes);
  for (size_t l = 0; l < p.gpu_experts.size(); ++l)
    for (size_t s = 0; s < p.gpu_experts[l].size(); ++s)
      EXPECT_EQ(p.slot_of_expert[l][static_cast<size_t>(p.gpu_experts[l][s])], static_cast<int32_t>(s));
}

TEST(DevicePlan, Gpt20bDenseWeightSizesMatchTheQ8LayoutOfThePublishedFile) {
  const DeviceModelDesc d = desc_20b();
  auto p = plan_device_memory(d, all_experts(d, 1ull << 40));
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  // attn_q: 4096 rows of 2880 Q8_0 values = 4096 · 90 blocks · 34 bytes.
  EXPECT_EQ(p->find("blk.0.attn_q.weight")->bytes, 4096ull * 90 * 34);
  EXPECT_EQ(p->find("output.weight")->bytes, 201088ull * 90 * 34);
  // One expert: gate and up 2880×2880 MXFP4 (90 blocks of 17 bytes per row), down the same, biases f32.
  EXPECT_EQ(p->bytes_per_expert, 3ull * 2880 * 90 * 17 + 4ull * (2880 * 3));
  // KV: sliding layers keep 128 slots, full layers the context; (kv_head 8, slot, 64) f16 for K and for V.
  EXPECT_EQ(p->kv_capacity[0], 128u);
  EXPECT_EQ(p->kv_capacity[1], 4096u);
  EXPECT_EQ(p->find("kv.1.k")->bytes, 512ull * 4096 * 2);
  EXPECT_EQ(p->num_gpu_experts_total(), 24u * 32u);
  EXPECT_TRUE(p->notes.empty());
  expect_consistent(*p);
}

// A quantized KV cache on the GPU: each layer's K and V buffers hold kv_capacity slots of 8 KV heads in rows of
// kv_row_bytes (q8_0: 2 blocks of 34 bytes for head_dim 64; q4_0: 2 of 18), K and V each of its own type; the plan's
// kv_bytes is their sum, and everything else (dense weights, activations) is unchanged.
TEST(DevicePlan, QuantizedKvCacheBuffersHoldRowsOfTheirTypePerSlot) {
  const DeviceModelDesc d = desc_20b();
  auto f16 = plan_device_memory(d, options(1ull << 40, {}));
  ASSERT_TRUE(f16.has_value()) << f16.error().to_string();
  DevicePlanOptions o = options(1ull << 40, {});
  o.k_type = KvCacheType::kQ8_0;
  o.v_type = KvCacheType::kQ4_0;
  auto p = plan_device_memory(d, o);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->k_type, KvCacheType::kQ8_0);
  EXPECT_EQ(p->v_type, KvCacheType::kQ4_0);
  EXPECT_EQ(p->find("kv.0.k")->bytes, 8ull * 128 * 68);   // sliding layer: 128 slots
  EXPECT_EQ(p->find("kv.0.v")->bytes, 8ull * 128 * 36);
  EXPECT_EQ(p->find("kv.1.k")->bytes, 8ull * 4096 * 68);  // full layer: the context
  EXPECT_EQ(p->find("kv.1.v")->bytes, 8ull * 4096 * 36);
  uint64_t kv_buffers = 0;
  for (const DeviceBuffer& b : p->buffers)
    if (b.kind == DeviceBufferKind::kKvCache) kv_buffers += b.bytes;
  // kv_bytes counts the buffers and their alignment padding (each buffer starts at a multiple of 256).
  EXPECT_GE(p->kv_bytes, kv_buffers);
  EXPECT_LT(p->kv_bytes, kv_buffers + 2ull * d.hparams.num_layers * kDeviceBufferAlign);
  // The positions the rows hold are the f16 plan's: its K rows are 128 bytes, so its K buffers 128 / 68 larger.
  EXPECT_EQ(f16->find("kv.1.k")->bytes * 68, p->find("kv.1.k")->bytes * 128);
  EXPECT_EQ(p->dense_bytes, f16->dense_bytes);
  EXPECT_EQ(p->activation_bytes, f16->activation_bytes);
  EXPECT_LT(p->kv_bytes, f16->kv_bytes * 42 / 100);  // (68 + 36) / 256 = 40.6 % of f16's, plus padding
  EXPECT_NE(p->summary().find("KV cache " + format_byte_size(p->kv_bytes) + " K q8_0, V q4_0"), std::string::npos)
      << p->summary();
  expect_consistent(*p);
}

// f32 has no CUDA attention kernel (the plan refuses it, naming K or V), and a quantized type needs head_dim to be a
// multiple of 32 (check_kv_cache_type's message).
TEST(DevicePlan, F32OrAQuantizedTypeThatDoesNotFitHeadDimIsAnError) {
  DevicePlanOptions o = options(1ull << 40, {});
  o.v_type = KvCacheType::kF32;
  auto f32 = plan_device_memory(desc_20b(), o);
  ASSERT_FALSE(f32.has_value());
  EXPECT_EQ(f32.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(f32.error().message.find("(V) f32"), std::string::npos) << f32.error().message;
  DeviceModelDesc d = desc_20b();
  d.hparams.head_dim = 48;
  o = options(1ull << 40, {});
  o.k_type = KvCacheType::kQ4_0;
  auto partial = plan_device_memory(d, o);
  ASSERT_FALSE(partial.has_value());
  EXPECT_NE(partial.error().message.find("q4_0"), std::string::npos) << partial.error().message;
  EXPECT_NE(partial.error().message.find("48"), std::string::npos) << partial.error().message;
}

// Over the budget, the message names the KV types and suggests the next smaller one (none after q4_0).
TEST(DevicePlan, OverTheBudgetTheMessageNamesTheKvTypeAndASmallerOne) {
  for (const auto& [type, hint] : {std::pair{KvCacheType::kF16, "--kv-type q8_0"},
                                   std::pair{KvCacheType::kQ8_0, "--kv-type q4_0"},
                                   std::pair{KvCacheType::kQ4_0, ""}}) {
    DevicePlanOptions o = options(1ull << 20, {});
    o.k_type = o.v_type = type;
    auto p = plan_device_memory(desc_20b(), o);
    ASSERT_FALSE(p.has_value());
    const std::string& m = p.error().message;
    EXPECT_NE(m.find(std::string("4096, ") + kv_cache_type_name(type) + ")"), std::string::npos) << m;
    if (*hint != '\0')
      EXPECT_NE(m.find(hint), std::string::npos) << m;
    else
      EXPECT_EQ(m.find("--kv-type"), std::string::npos) << m;
  }
}

TEST(DevicePlan, DensePartOneByteOverTheBudgetIsAnErrorNamingBudgetAndNeed) {
  auto full = plan_device_memory(desc_20b(), options(1ull << 40, {}));
  ASSERT_TRUE(full.has_value());
  const uint64_t fixed = full->total_bytes;  // no experts: exactly the dense part
  auto at = plan_device_memory(desc_20b(), options(fixed, {}));
  ASSERT_TRUE(at.has_value()) << at.error().to_string();
  EXPECT_EQ(at->total_bytes, fixed);
  auto below = plan_device_memory(desc_20b(), options(fixed - 1, {}));
  ASSERT_FALSE(below.has_value());
  EXPECT_EQ(below.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(below.error().message.find("VRAM budget"), std::string::npos);
  EXPECT_NE(below.error().message.find(format_byte_size(fixed)), std::string::npos) << below.error().message;
  EXPECT_NE(below.error().message.find("--ctx"), std::string::npos);
}

TEST(DevicePlan, EveryListedExpertIsResidentExactlyWhenAllFit) {
  const DeviceModelDesc d = tiny_desc();
  auto all = plan_device_memory(d, all_experts(d, 1ull << 32));
  ASSERT_TRUE(all.has_value());
  const uint64_t need = all->total_bytes;
  auto at = plan_device_memory(d, all_experts(d, need));
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->num_gpu_experts_total(), 4u * 8u);
  EXPECT_TRUE(at->notes.empty());
  expect_consistent(*at);

  auto below = plan_device_memory(d, all_experts(d, need - 1));
  ASSERT_TRUE(below.has_value());
  EXPECT_EQ(below->num_gpu_experts_total(), 4u * 8u - 1);
  ASSERT_EQ(below->notes.size(), 1u);
  EXPECT_NE(below->notes[0].find("1 of the 32 experts"), std::string::npos) << below->notes[0];
  EXPECT_NE(below->notes[0].find("run on the CPU"), std::string::npos);
  expect_consistent(*below);
}

TEST(DevicePlan, TightBudgetSpreadsExpertsOverLayersByRouterBiasRank) {
  const DeviceModelDesc d = desc_20b();
  auto none = plan_device_memory(d, options(1ull << 40, {}));
  ASSERT_TRUE(none.has_value());
  // Room for 24 + 12 experts (plus alignment slack): every layer gets its top expert, half the layers a second.
  const uint64_t budget = none->total_bytes + 36 * (none->bytes_per_expert + 6 * kDeviceBufferAlign);
  auto p = plan_device_memory(d, all_experts(d, budget));
  ASSERT_TRUE(p.has_value());
  expect_consistent(*p);
  EXPECT_EQ(p->num_gpu_experts_total(), 36u);
  for (uint32_t l = 0; l < 24; ++l) {
    ASSERT_EQ(p->gpu_experts[l].size(), l < 12 ? 2u : 1u) << "layer " << l;
    // The top-biased expert of layer l: (e·7 + l) % 32 = 31.
    const auto top = std::max_element(d.router_bias[l].begin(), d.router_bias[l].end()) - d.router_bias[l].begin();
    EXPECT_TRUE(p->expert_on_gpu(l, static_cast<int32_t>(top))) << "layer " << l;
  }
}

TEST(DevicePlan, ListedExpertsAreResidentInAscendingSlotsAndNoOthers) {
  const DeviceModelDesc d = desc_20b();
  std::vector<std::vector<int32_t>> ids(24);
  for (uint32_t l = 0; l < 24; ++l) ids[l] = {31, static_cast<int32_t>(l), 7};  // layer 7 lists 7 once only
  ids[7] = {31, 7, 0};
  auto p = plan_device_memory(d, options(1ull << 40, ids));
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  expect_consistent(*p);
  for (uint32_t l = 0; l < 24; ++l) {
    std::vector<int32_t> want = ids[l];
    std::sort(want.begin(), want.end());
    EXPECT_EQ(p->gpu_experts[l], want) << "layer " << l;
    for (uint32_t e = 0; e < 32; ++e)
      EXPECT_EQ(p->expert_on_gpu(l, static_cast<int32_t>(e)),
                std::find(want.begin(), want.end(), static_cast<int32_t>(e)) != want.end());
  }
  EXPECT_TRUE(p->notes.empty());
  EXPECT_EQ(p->find("blk.3.ffn_gate_exps.weight")->bytes, 3ull * 2880 * 90 * 17);
}

TEST(DevicePlan, EqualBiasesUnderATightBudgetKeepTheLowerIds) {
  DeviceModelDesc d = tiny_desc();
  for (auto& row : d.router_bias) std::fill(row.begin(), row.end(), 0.5f);
  auto three = plan_device_memory(d, options(1ull << 32, first_experts(d, 3)));
  ASSERT_TRUE(three.has_value());
  // Room for exactly 3 experts per layer of the 5 listed.
  auto p = plan_device_memory(d, options(three->total_bytes, first_experts(d, 5)));
  ASSERT_TRUE(p.has_value());
  for (const auto& ids : p->gpu_experts) EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2}));
  ASSERT_EQ(p->notes.size(), 1u);
  EXPECT_NE(p->notes[0].find("8 of the 20 experts the plan puts on the GPU"), std::string::npos) << p->notes[0];
}

TEST(DevicePlan, ExpertIdsOutOfRangeOrTwiceAndWrongLayerCountsAreErrors) {
  const DeviceModelDesc d = tiny_desc();
  auto ids = first_experts(d, 2);
  ids[1] = {0, 8};
  auto out_of_range = plan_device_memory(d, options(1ull << 32, ids));
  ASSERT_FALSE(out_of_range.has_value());
  EXPECT_NE(out_of_range.error().message.find("layer 1 lists expert 8"), std::string::npos);
  ids[1] = {3, 3};
  auto twice = plan_device_memory(d, options(1ull << 32, ids));
  ASSERT_FALSE(twice.has_value());
  EXPECT_NE(twice.error().message.find("twice"), std::string::npos);
  ids.pop_back();
  EXPECT_FALSE(plan_device_memory(d, options(1ull << 32, ids)).has_value());
}

TEST(DevicePlan, NoListedExpertsMeansNoExpertBuffers) {
  auto p = plan_device_memory(tiny_desc(), options(1ull << 32, {}));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->num_gpu_experts_total(), 0u);
  EXPECT_EQ(p->expert_bytes, 0u);
  EXPECT_EQ(p->find("blk.0.ffn_gate_exps.weight"), nullptr);
  EXPECT_TRUE(p->notes.empty());
}

TEST(DevicePlan, GpuExpertsOfAPlanListItsGpuExpertsPerLayer) {
  ModelHparams hp = tiny_desc().hparams;
  placement::Plan plan = placement::all_cpu_plan(hp.num_layers, hp.num_experts, hp.num_experts_used, 64);
  for (auto& l : plan.layers) l.attention = placement::Device::kGpu;
  plan.output = placement::Device::kGpu;
  plan.layers[2].experts[5] = placement::Device::kGpu;
  plan.layers[2].experts[1] = placement::Device::kGpu;
  auto ids = gpu_experts_of_plan(plan, hp);
  ASSERT_TRUE(ids.has_value()) << ids.error().to_string();
  ASSERT_EQ(ids->size(), hp.num_layers);
  EXPECT_TRUE((*ids)[0].empty());
  EXPECT_EQ((*ids)[2], (std::vector<int32_t>{1, 5}));
}

TEST(DevicePlan, GpuExpertsOfAPlanRefuseCpuAttentionCpuOutputAndAnotherShape) {
  ModelHparams hp = tiny_desc().hparams;
  placement::Plan plan = placement::all_cpu_plan(hp.num_layers, hp.num_experts, hp.num_experts_used, 64);
  for (auto& l : plan.layers) l.attention = placement::Device::kGpu;
  plan.output = placement::Device::kGpu;
  plan.layers[3].attention = placement::Device::kCpu;
  auto cpu_attention = gpu_experts_of_plan(plan, hp);
  ASSERT_FALSE(cpu_attention.has_value());
  EXPECT_EQ(cpu_attention.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(cpu_attention.error().message.find("block 3"), std::string::npos);
  plan.layers[3].attention = placement::Device::kGpu;
  plan.output = placement::Device::kCpu;
  EXPECT_FALSE(gpu_experts_of_plan(plan, hp).has_value());
  plan.output = placement::Device::kGpu;
  ASSERT_TRUE(gpu_experts_of_plan(plan, hp).has_value());
  plan.num_experts_used = 3;
  auto shape = gpu_experts_of_plan(plan, hp);
  ASSERT_FALSE(shape.has_value());
  EXPECT_EQ(shape.error().code, ErrorCode::kInvalidArgument);
}

TEST(DevicePlan, ExtraSlidingSlotsGrowOnlyTheSlidingRingsUpToTheContext) {
  DevicePlanOptions o = options(1ull << 32, {});
  o.context_length = 200;
  o.extra_sliding_slots = 63;
  auto p = plan_device_memory(tiny_desc(), o);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->kv_capacity[0], 191u);
  EXPECT_EQ(p->kv_capacity[1], 200u);
  o.extra_sliding_slots = 100;
  auto capped = plan_device_memory(tiny_desc(), o);
  EXPECT_EQ(capped->kv_capacity[0], 200u);
}

TEST(DevicePlan, StoredMatrixSizesOverrideTheTypeDefaults) {
  DeviceModelDesc d = desc_20b();
  d.layer_matrix_bytes.assign(24, {4096ull * 2880 * 2, 512ull * 90 * 34, 512ull * 90 * 34, 2880ull * 128 * 34,
                                   32ull * 2880 * 4});  // attn_q stored as BF16 in this file
  d.output_bytes = 201088ull * 2880 * 2;
  auto p = plan_device_memory(d, options(1ull << 40, {}));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->find("blk.5.attn_q.weight")->bytes, 4096ull * 2880 * 2);
  EXPECT_EQ(p->find("output.weight")->bytes, 201088ull * 2880 * 2);
  d.layer_matrix_bytes.resize(3);
  EXPECT_FALSE(plan_device_memory(d, options(1ull << 40, {})).has_value());
}

TEST(DevicePlan, ZeroContextOrBatchIsAnError) {
  DevicePlanOptions o = options(1ull << 32, {});
  o.context_length = 0;
  EXPECT_FALSE(plan_device_memory(tiny_desc(), o).has_value());
  o = options(1ull << 32, {});
  o.max_batch_tokens = 0;
  EXPECT_FALSE(plan_device_memory(tiny_desc(), o).has_value());
}

}  // namespace
}  // namespace hetmoe
