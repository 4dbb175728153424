// placement/ram_tier.h on gpt-oss-20b's byte accounting with Zipf-skewed selection probabilities (no file needed):
// nothing is paged when the model fits; short of RAM the coldest experts are paged and the hottest stay; the
// predicted disk time follows from the probabilities and the disk rate; GPU experts take no RAM; the plan's JSON
// keeps the tier; shape mismatches are errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "placement/cost_model.h"
#include "placement/plan.h"
#include "placement/ram_tier.h"
#include "tests/placement_fixture.h"

namespace hetmoe::placement {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Fixture {
  CostInputs in = test::gpt20b_inputs(1.0);
  Plan plan = all_cpu_plan(24, 32, 4, 8192);
};

TEST(RamTier, DisabledWhenTheModelFits) {
  Fixture f;
  RamTierRequest req;
  req.room_bytes = 20 * kGiB;
  req.kv_bytes = kGiB / 2;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  EXPECT_FALSE(f.plan.ram_tier.enabled);
  for (const LayerPlan& l : f.plan.layers) EXPECT_TRUE(l.paged_experts.empty());
  req.room_bytes = 0;  // unknown room: nothing paged either
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  EXPECT_FALSE(f.plan.ram_tier.enabled);
}

// A mapped model that only just fits (weights + KV + buffers under the room, but less than headroom_bytes to spare)
// thrashes the page cache: the tier engages and leaves the headroom free; without headroom it would not.
TEST(RamTier, AModelThatOnlyJustFitsKeepsTheHeadroomFree) {
  Fixture f;
  RamTierRequest req;
  req.kv_bytes = kGiB / 2;
  const uint64_t weights = ram_weight_bytes(f.plan, f.in.bytes);
  req.room_bytes = weights + req.kv_bytes + req.buffer_bytes + req.headroom_bytes / 2;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  ASSERT_TRUE(f.plan.ram_tier.enabled);
  EXPECT_GT(f.plan.ram_tier.num_paged_experts, 0u);
  EXPECT_LE(f.plan.ram_tier.resident_bytes + req.kv_bytes + req.buffer_bytes + req.headroom_bytes, req.room_bytes);
  req.headroom_bytes = 0;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  EXPECT_FALSE(f.plan.ram_tier.enabled);
}

TEST(RamTier, ShortOfRamPagesTheColdestExpertsAndFitsTheRoom) {
  Fixture f;
  RamTierRequest req;
  req.room_bytes = 10 * kGiB;
  req.kv_bytes = kGiB / 2;
  req.disk_read_bytes_per_s = 2e9;
  f.plan.prediction.decode_time_s = 0.05;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  const RamTier& rt = f.plan.ram_tier;
  ASSERT_TRUE(rt.enabled);
  EXPECT_GT(rt.num_paged_experts, 0u);
  EXPECT_LT(rt.num_paged_experts, 24u * 32u);
  EXPECT_EQ(rt.resident_bytes + rt.paged_bytes, ram_weight_bytes(f.plan, f.in.bytes));
  // Resident weights, KV and buffers fit, with the page cache for one token's paged experts beside them.
  EXPECT_LE(rt.resident_bytes + req.kv_bytes + req.buffer_bytes, req.room_bytes);
  // Every paged expert is at most as likely as every resident one (a global ranking).
  double max_paged = 0, min_resident = 1;
  double loads = 0;
  for (uint32_t l = 0; l < 24; ++l)
    for (uint32_t e = 0; e < 32; ++e) {
      const double p = f.in.probabilities[l * 32 + e];
      const auto& paged = f.plan.layers[l].paged_experts;
      if (std::find(paged.begin(), paged.end(), static_cast<int32_t>(e)) != paged.end()) {
        max_paged = std::max(max_paged, p);
        loads += p;
      } else {
        min_resident = std::min(min_resident, p);
      }
    }
  EXPECT_LE(max_paged, min_resident);
  EXPECT_NEAR(rt.paged_loads_per_token, loads, 1e-9);
  const double expected_s = loads * static_cast<double>(f.in.bytes.layers[0].expert_bytes) / 2e9;
  EXPECT_NEAR(rt.paged_time_s, expected_s, 1e-9);
  EXPECT_NEAR(f.plan.prediction.decode_time_s, 0.05 + expected_s, 1e-9);
  EXPECT_FALSE(f.plan.notes.empty());
}

TEST(RamTier, LessRoomPagesMore) {
  Fixture a, b;
  RamTierRequest req;
  req.kv_bytes = kGiB / 2;
  req.room_bytes = 11 * kGiB;
  ASSERT_TRUE(plan_ram_tier(a.plan, a.in.bytes, a.in.probabilities, req));
  req.room_bytes = 8 * kGiB;
  ASSERT_TRUE(plan_ram_tier(b.plan, b.in.bytes, b.in.probabilities, req));
  EXPECT_GT(b.plan.ram_tier.num_paged_experts, a.plan.ram_tier.num_paged_experts);
  EXPECT_GT(b.plan.ram_tier.paged_loads_per_token, a.plan.ram_tier.paged_loads_per_token);
}

TEST(RamTier, GpuExpertsNeedNoRam) {
  Fixture f;
  for (LayerPlan& l : f.plan.layers)
    for (uint32_t e = 0; e < 16; ++e) l.experts[e] = Device::kGpu;
  RamTierRequest req;
  req.room_bytes = 10 * kGiB;  // enough once half the experts are on the GPU
  req.kv_bytes = kGiB / 2;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  EXPECT_FALSE(f.plan.ram_tier.enabled);
  req.room_bytes = 5 * kGiB;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  ASSERT_TRUE(f.plan.ram_tier.enabled);
  for (const LayerPlan& l : f.plan.layers)
    for (int32_t e : l.paged_experts) EXPECT_EQ(l.experts[static_cast<size_t>(e)], Device::kCpu) << e;
}

TEST(RamTier, SurvivesTheJsonRoundTrip) {
  Fixture f;
  RamTierRequest req;
  req.room_bytes = 9 * kGiB;
  req.disk_read_bytes_per_s = 1.5e9;
  ASSERT_TRUE(plan_ram_tier(f.plan, f.in.bytes, f.in.probabilities, req));
  auto back = plan_from_json(plan_to_json(f.plan), "round trip");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_TRUE(back->same_placement(f.plan));
  EXPECT_EQ(back->ram_tier.num_paged_experts, f.plan.ram_tier.num_paged_experts);
  EXPECT_EQ(back->ram_tier.resident_bytes, f.plan.ram_tier.resident_bytes);
  nlohmann::json j = plan_to_json(f.plan);
  j["layers"][0]["paged_experts"] = {32};
  auto bad = plan_from_json(j, "edited");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("layers[0].paged_experts"), std::string::npos) << bad.error().message;
}

TEST(RamTier, ShapeMismatchIsAnError) {
  Fixture f;
  RamTierRequest req;
  req.room_bytes = kGiB;
  std::vector<double> short_probs(10, 0.1);
  auto s = plan_ram_tier(f.plan, f.in.bytes, short_probs, req);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace hetmoe::placement
