// The batched CPU multi-sequence pass (CpuMultiForward) against solo runs of the same slots, bit for bit: decode
// tokens of up to 8 slots at different positions, steps that mix decode and prompt chunks, errors in one slot,
// truncate and reset, and the expert counts read while it runs.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>

#include "runtime/exec/forward_factory.h"
#include "runtime/exec/multi_forward_cpu.h"
#include "runtime/model/model.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

const std::string kData = HETMOE_TEST_DATA_DIR;

const Model& tiny() {
  static const Model m = std::move(*Model::load(kData + "/gpt-oss-tiny.gguf"));
  return m;
}

const std::vector<int32_t>& fixture_ids() {
  static const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  return ids;
}

struct PassOptions {
  uint32_t context = 256;
  uint32_t max_batch = 64;
  uint32_t rollback = 0;
  uint64_t* expert_counts = nullptr;
};

std::unique_ptr<CpuForward> make_pass(cpu::Isa isa, const PassOptions& p) {
  CpuForwardOptions o;
  o.context_length = p.context;
  o.num_threads = 2;
  o.max_batch_tokens = p.max_batch;
  o.rollback_slots = p.rollback;
  o.expert_counts = p.expert_counts;
  auto f = CpuForward::create(tiny(), o, cpu::kernel_table(isa));
  EXPECT_TRUE(f.has_value());
  return std::move(*f);
}

std::unique_ptr<CpuMultiForward> make_multi(cpu::Isa isa, uint32_t num_slots, const PassOptions& p) {
  auto m = CpuMultiForward::create(make_pass(isa, p), num_slots);
  EXPECT_TRUE(m.has_value());
  return std::move(*m);
}

/// One operation on a slot: run `tokens` (a prompt chunk or one decode token), keep the logits of the last one.
struct SlotOp {
  std::vector<int32_t> tokens;
  bool want_logits = true;
};

/// Logits of every op of one slot run alone on a fresh pass (what the slot would get without the others).
std::vector<std::vector<float>> solo_run(cpu::Isa isa, const PassOptions& p, const std::vector<SlotOp>& ops) {
  auto pass = make_pass(isa, p);
  std::vector<std::vector<float>> out;
  for (const SlotOp& op : ops) {
    std::vector<float> logits(op.want_logits ? tiny().hparams.vocab_size : 0);
    EXPECT_TRUE(pass->forward_batch(op.tokens, logits).has_value());
    out.push_back(std::move(logits));
  }
  return out;
}

/// Bitwise equality of two logit vectors; on failure the first differing index.
::testing::AssertionResult same_bits(const std::vector<float>& want, const std::vector<float>& got) {
  if (want.size() != got.size())
    return ::testing::AssertionFailure() << "sizes " << want.size() << " vs " << got.size();
  for (size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "logit " << i << ": " << want[i] << " alone, " << got[i] << " batched";
  return ::testing::AssertionSuccess();
}

/// Runs per-slot op lists through `multi` step by step: slot s starts at step start[s] and does one op per step, so
/// steps mix prompt chunks of some slots with decode tokens of others. Returns every op's logits per slot.
std::vector<std::vector<std::vector<float>>> run_interleaved(MultiSequenceForward& multi,
                                                             const std::vector<std::vector<SlotOp>>& ops,
                                                             const std::vector<size_t>& start) {
  const size_t num_slots = ops.size();
  std::vector<std::vector<std::vector<float>>> out(num_slots);
  size_t last_step = 0;
  for (size_t s = 0; s < num_slots; ++s) last_step = std::max(last_step, start[s] + ops[s].size());
  for (size_t k = 0; k < last_step; ++k) {
    std::vector<SequenceStep> steps;
    std::vector<std::vector<float>> logits;
    logits.reserve(num_slots);
    std::vector<size_t> slot_of_step;
    for (size_t s = 0; s < num_slots; ++s) {
      if (k < start[s] || k >= start[s] + ops[s].size()) continue;
      const SlotOp& op = ops[s][k - start[s]];
      logits.emplace_back(op.want_logits ? multi.vocab_size() : 0);
      steps.push_back(SequenceStep{static_cast<uint32_t>(s), op.tokens, logits.back()});
      slot_of_step.push_back(s);
    }
    std::vector<Status> results(steps.size());
    multi.step(steps, results);
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_TRUE(results[i].has_value()) << "step " << k << " slot " << slot_of_step[i] << ": "
                                          << results[i].error().to_string();
      out[slot_of_step[i]].push_back(std::move(logits[i]));
    }
  }
  return out;
}

/// Slot s: a prompt of prompt_len[s] fixture tokens (from offset 7·s, one chunk or chunks of `chunk`), then
/// num_decode teacher-forced decode tokens.
std::vector<SlotOp> slot_ops(size_t s, uint32_t prompt_len, uint32_t chunk, uint32_t num_decode) {
  const auto& ids = fixture_ids();
  std::vector<SlotOp> ops;
  const size_t offset = 7 * s;
  for (uint32_t i = 0; i < prompt_len; i += chunk) {
    const uint32_t n = std::min(chunk, prompt_len - i);
    SlotOp op;
    op.tokens.assign(ids.begin() + offset + i, ids.begin() + offset + i + n);
    op.want_logits = i + n == prompt_len;
    ops.push_back(std::move(op));
  }
  for (uint32_t d = 0; d < num_decode; ++d) ops.push_back(SlotOp{{ids[(offset + prompt_len + d) % ids.size()]}, true});
  return ops;
}

class MultiForwardCpuPerIsa : public ::testing::TestWithParam<cpu::Isa> {};

// 1 to 8 slots, each started one step after the previous, with prompts of 1 to 140 tokens (a 1-token prompt joins a
// decode group; 140 crosses the 128-token sliding window and the 64-token batches): every slot's logits at every
// step are bit for bit those of its solo run. The steps mix prompt chunks with decode groups of up to 8 slots.
TEST_P(MultiForwardCpuPerIsa, EverySlotGetsItsSoloLogitsBitForBitFrom1To8Slots) {
  const PassOptions p;
  const uint32_t prompt_len[] = {9, 140, 1, 33, 5, 70, 2, 17};
  std::vector<std::vector<SlotOp>> all_ops;
  std::vector<std::vector<std::vector<float>>> solo;  // a slot's solo run does not depend on the slot count
  for (uint32_t s = 0; s < 8; ++s) {
    all_ops.push_back(slot_ops(s, prompt_len[s], 256, 6 + s % 3));
    solo.push_back(solo_run(GetParam(), p, all_ops.back()));
  }
  for (uint32_t num_slots = 1; num_slots <= 8; ++num_slots) {
    const std::vector<std::vector<SlotOp>> ops(all_ops.begin(), all_ops.begin() + num_slots);
    std::vector<size_t> start(num_slots);
    std::iota(start.begin(), start.end(), size_t{0});
    auto multi = make_multi(GetParam(), num_slots, p);
    EXPECT_EQ(multi->pass().max_group_tokens(), 8u);
    const auto got = run_interleaved(*multi, ops, start);
    for (uint32_t s = 0; s < num_slots; ++s) {
      const auto& want = solo[s];
      ASSERT_EQ(got[s].size(), want.size());
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_TRUE(same_bits(want[i], got[s][i])) << num_slots << " slots, slot " << s << ", op " << i;
      uint32_t positions = 0;
      for (const SlotOp& op : ops[s]) positions += static_cast<uint32_t>(op.tokens.size());
      EXPECT_EQ(multi->num_positions(s), positions);
    }
  }
}

// Prompts in chunks (of 3 and 6: the GEMM's row tiles, and of 10: its token lanes, from 9 tokens on) while other
// slots decode, and batches of 2 tokens (max_batch_tokens 2: decode groups of 2, and the prompt chunks split in
// 2-token batches).
TEST_P(MultiForwardCpuPerIsa, ChunkedPromptsBesideDecodingSlotsAndSmallBatches) {
  for (const uint32_t max_batch : {64u, 2u}) {
    PassOptions p;
    p.max_batch = max_batch;
    std::vector<std::vector<SlotOp>> ops;
    const uint32_t chunk[] = {3, 10, 1, 6, 3};
    for (uint32_t s = 0; s < 5; ++s) ops.push_back(slot_ops(s, 4 + 5 * s, chunk[s], 5));
    auto multi = make_multi(GetParam(), 5, p);
    EXPECT_EQ(multi->pass().max_group_tokens(), std::min(8u, max_batch));
    const auto got = run_interleaved(*multi, ops, {0, 0, 2, 3, 1});
    for (uint32_t s = 0; s < 5; ++s) {
      const auto want = solo_run(GetParam(), p, ops[s]);
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_TRUE(same_bits(want[i], got[s][i])) << "max batch " << max_batch << ", slot " << s << ", op " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(SupportedIsas, MultiForwardCpuPerIsa, ::testing::ValuesIn(cpu::supported_isas()),
                         [](const auto& info) { return std::string(cpu::isa_name(info.param)); });

// In one step: a bad token, a slot at the end of its context, a wrong logits size, an unknown slot and a slot named
// twice are refused with errors that name them; those slots keep their positions, and the good slots' logits are
// still their solo ones.
TEST(MultiForwardCpu, AnErrorInOneSlotLeavesTheOthersUnaffected) {
  PassOptions p;
  p.context = 24;
  const cpu::Isa isa = cpu::Isa::kScalar;
  const auto& ids = fixture_ids();
  auto multi = make_multi(isa, 6, p);
  const uint32_t vocab = multi->vocab_size();
  // Slot 2 fills its context; the others hold 4 tokens.
  std::vector<Status> results(6);
  std::vector<std::vector<float>> logits(6, std::vector<float>(vocab));
  std::vector<SequenceStep> prefill;
  for (uint32_t s = 0; s < 6; ++s)
    prefill.push_back(SequenceStep{s, std::span<const int32_t>(ids).subspan(s, s == 2 ? 24 : 4), logits[s]});
  multi->step(prefill, results);
  for (const Status& r : results) ASSERT_TRUE(r.has_value());

  const int32_t good0 = ids[40], good5 = ids[41], bad_token = static_cast<int32_t>(vocab), full = ids[42];
  std::vector<float> short_logits(vocab - 1);
  const std::vector<SequenceStep> steps = {
      {0, {&good0, 1}, logits[0]},     {1, {&bad_token, 1}, logits[1]}, {2, {&full, 1}, logits[2]},
      {3, {&good0, 1}, short_logits},  {9, {&good0, 1}, logits[4]},     {5, {&good5, 1}, logits[5]},
      {0, {&good5, 1}, logits[0]},
  };
  results.assign(steps.size(), Status{});
  multi->step(steps, results);
  EXPECT_TRUE(results[0].has_value());
  EXPECT_TRUE(results[5].has_value());
  auto message = [&](size_t i) { return results[i] ? std::string("(no error)") : results[i].error().to_string(); };
  EXPECT_NE(message(1).find(std::to_string(vocab)), std::string::npos) << message(1);
  EXPECT_NE(message(2).find("context is full"), std::string::npos) << message(2);
  EXPECT_NE(message(3).find("logits buffer"), std::string::npos) << message(3);
  EXPECT_NE(message(4).find("slot 9 does not exist"), std::string::npos) << message(4);
  EXPECT_NE(message(6).find("slot 0 appears twice"), std::string::npos) << message(6);
  EXPECT_EQ(multi->num_positions(0), 5u);
  EXPECT_EQ(multi->num_positions(1), 4u);
  EXPECT_EQ(multi->num_positions(2), 24u);
  EXPECT_EQ(multi->num_positions(3), 4u);
  EXPECT_EQ(multi->num_positions(5), 5u);
  // Slot 0's second entry was refused, so its logits are the first one's: its solo run of 4 + 1 tokens.
  const auto want0 = solo_run(isa, p, {{{ids.begin(), ids.begin() + 4}, false}, {{good0}, true}});
  EXPECT_TRUE(same_bits(want0[1], logits[0]));
  const auto want5 = solo_run(isa, p, {{{ids.begin() + 5, ids.begin() + 9}, false}, {{good5}, true}});
  EXPECT_TRUE(same_bits(want5[1], logits[5]));
  // The refused slots go on as if nothing happened.
  results.assign(1, Status{});
  multi->step(std::vector<SequenceStep>{{1, {&good5, 1}, logits[1]}}, results);
  ASSERT_TRUE(results[0].has_value());
  const auto want1 = solo_run(isa, p, {{{ids.begin() + 1, ids.begin() + 5}, false}, {{good5}, true}});
  EXPECT_TRUE(same_bits(want1[1], logits[1]));
}

// The group limit and its checks, at forward_group itself.
TEST(MultiForwardCpu, ForwardGroupRefusesRepeatedSequencesAndTooManyTokens) {
  auto pass = make_pass(cpu::Isa::kScalar, PassOptions{});
  auto other = pass->create_sequence();
  ASSERT_TRUE(other.has_value());
  const int32_t t = fixture_ids()[0];
  std::vector<CpuForward::GroupToken> twice = {{&pass->sequence(), t, {}}, {&pass->sequence(), t, {}}};
  auto s = pass->forward_group(twice);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("same sequence"), std::string::npos);
  std::vector<CpuForward::Sequence> many;
  for (int i = 0; i < 9; ++i) many.push_back(std::move(*pass->create_sequence()));
  std::vector<CpuForward::GroupToken> nine;
  for (auto& seq : many) nine.push_back({&seq, t, {}});
  s = pass->forward_group(nine);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("expected 1..8"), std::string::npos);
  EXPECT_FALSE(pass->forward_group({}));
  for (auto& seq : many) EXPECT_EQ(seq.num_positions, 0u);
  EXPECT_EQ(pass->num_positions(), 0u);
}

// Truncate (prompt caching) and reset on one slot while the others decode: the slot's next logits are those of a
// solo pass truncated or reset the same way, and the others' stay their solo ones.
TEST(MultiForwardCpu, TruncateAndResetOneSlotWhileOthersDecode) {
  PassOptions p;
  p.rollback = 16;
  const cpu::Isa isa = cpu::supported_isas().back();  // the best this machine runs
  const auto& ids = fixture_ids();
  const uint32_t vocab = tiny().hparams.vocab_size;
  auto multi = make_multi(isa, 3, p);
  auto solo = std::vector<std::unique_ptr<CpuForward>>();
  for (int s = 0; s < 3; ++s) solo.push_back(make_pass(isa, p));
  std::vector<std::vector<float>> got(3, std::vector<float>(vocab)), want(3, std::vector<float>(vocab));
  // Each slot and its solo pass take the same tokens; compare after every step.
  auto run = [&](const std::vector<std::pair<uint32_t, std::vector<int32_t>>>& work, const char* what) {
    std::vector<SequenceStep> steps;
    for (const auto& [s, tokens] : work) {
      steps.push_back(SequenceStep{s, tokens, got[s]});
      ASSERT_TRUE(solo[s]->forward_batch(tokens, want[s]).has_value());
    }
    std::vector<Status> results(steps.size());
    multi->step(steps, results);
    for (size_t i = 0; i < steps.size(); ++i) {
      ASSERT_TRUE(results[i].has_value()) << what;
      EXPECT_TRUE(same_bits(want[steps[i].slot_idx], got[steps[i].slot_idx])) << what << ", slot "
                                                                             << steps[i].slot_idx;
      EXPECT_EQ(multi->num_positions(steps[i].slot_idx), solo[steps[i].slot_idx]->num_positions()) << what;
    }
  };
  run({{0, {ids.begin(), ids.begin() + 20}}, {1, {ids.begin() + 30, ids.begin() + 42}}, {2, {ids[50]}}}, "prompts");
  for (int k = 0; k < 4; ++k)
    run({{0, {ids[60 + k]}}, {1, {ids[70 + k]}}, {2, {ids[80 + k]}}}, "decode");
  // Slot 0 goes back 10 positions and takes other tokens; slot 1 starts over; slot 2 decodes on.
  ASSERT_TRUE(multi->truncate(0, 14).has_value());
  ASSERT_TRUE(solo[0]->truncate(14).has_value());
  EXPECT_EQ(multi->num_positions(0), 14u);
  multi->reset(1);
  solo[1]->reset();
  EXPECT_EQ(multi->num_positions(1), 0u);
  run({{0, {ids[90]}}, {1, {ids.begin() + 100, ids.begin() + 103}}, {2, {ids[84]}}}, "after truncate and reset");
  for (int k = 0; k < 3; ++k)
    run({{0, {ids[91 + k]}}, {1, {ids[110 + k]}}, {2, {ids[85 + k]}}}, "decode after truncate and reset");
  // Going back further than the spare ring slots is refused, as on the single-sequence pass.
  const auto too_far = multi->truncate(0, 0);  // 24 positions were written, the ring keeps 16 spare slots
  ASSERT_FALSE(too_far);
  EXPECT_EQ(too_far.error().code, ErrorCode::kUnsupported);
  EXPECT_EQ(multi->num_positions(0), 14u + 1u + 3u);
}

// Expert selections are counted once per token, layer and chosen expert however the tokens are grouped, and another
// thread reading them meanwhile (as /metrics does, with atomic loads) sees a count that only grows.
TEST(MultiForwardCpu, ExpertCountsAreCountedPerTokenAndReadableWhileRunning) {
  const ModelHparams& hp = tiny().hparams;
  std::vector<uint64_t> counts(static_cast<size_t>(hp.num_layers) * hp.num_experts, 0);
  PassOptions p;
  p.expert_counts = counts.data();
  auto multi = make_multi(cpu::Isa::kScalar, 6, p);
  std::atomic<bool> done{false};
  std::atomic<bool> monotonic{true};
  std::thread reader([&] {
    uint64_t last = 0;
    while (!done.load()) {
      uint64_t total = 0;
      for (uint64_t& c : counts) total += std::atomic_ref<uint64_t>(c).load(std::memory_order_relaxed);
      if (total < last) monotonic = false;
      last = total;
    }
  });
  std::vector<std::vector<SlotOp>> ops;
  uint64_t num_tokens = 0;
  for (uint32_t s = 0; s < 6; ++s) {
    ops.push_back(slot_ops(s, 3 + s, 256, 8));
    num_tokens += 3 + s + 8;
  }
  run_interleaved(*multi, ops, {0, 1, 2, 0, 1, 2});
  done = true;
  reader.join();
  EXPECT_TRUE(monotonic.load());
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), uint64_t{0}),
            num_tokens * hp.num_layers * hp.num_experts_used);
}

// The factory batches the CPU path and runs other passes (here the reference) in turn.
TEST(MultiForwardCpu, FactoryBatchesTheCpuPathAndRunsTheReferenceInTurn) {
  ForwardOptions o;
  o.context_length = 64;
  o.num_threads = 1;
  auto cpu_pass = create_forward(tiny(), o);
  ASSERT_TRUE(cpu_pass.has_value());
  auto batched = create_multi_forward(tiny(), o, std::move(*cpu_pass), 3);
  ASSERT_TRUE(batched.has_value());
  EXPECT_NE(dynamic_cast<CpuMultiForward*>(batched->get()), nullptr);
  EXPECT_EQ((*batched)->num_slots(), 3u);
  o.use_reference = true;
  auto ref_pass = create_forward(tiny(), o);
  ASSERT_TRUE(ref_pass.has_value());
  auto in_turn = create_multi_forward(tiny(), o, std::move(*ref_pass), 2);
  ASSERT_TRUE(in_turn.has_value());
  EXPECT_EQ(dynamic_cast<CpuMultiForward*>(in_turn->get()), nullptr);
  EXPECT_EQ((*in_turn)->num_slots(), 2u);
  EXPECT_FALSE(create_multi_forward(tiny(), o, nullptr, 2));
}

}  // namespace
}  // namespace hetmoe
