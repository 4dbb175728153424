// Model binding: hparams from metadata, tensors by name with shape/type checks, clear errors; other weight types.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/exec/forward_reference.h"
#include "runtime/model/model.h"
#include "tests/gguf_rewrite.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

const std::string kTiny = std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.gguf";

const gguf::File& tiny_file() {
  static const gguf::File f = std::move(*gguf::File::open(kTiny));
  return f;
}

/// Loads an edited copy of the tiny fixture; the bytes must outlive the model, so they are kept in `storage`.
Expected<Model> load_edited(const test::GgufEdits& edits, std::vector<uint8_t>& storage) {
  storage = test::rewrite_gguf(tiny_file(), edits);
  auto f = gguf::File::from_memory(storage, "edited.gguf");
  if (!f) return f.error();
  return Model::from_file(std::move(*f));
}

Error expect_load_error(const test::GgufEdits& edits, ErrorCode code, const std::string& fragment) {
  std::vector<uint8_t> storage;
  auto m = load_edited(edits, storage);
  EXPECT_FALSE(m.has_value());
  if (m) return {};
  EXPECT_EQ(m.error().code, code) << m.error().to_string();
  EXPECT_NE(m.error().message.find(fragment), std::string::npos) << m.error().to_string();
  return m.error();
}

TEST(Model, UneditedCopyLoads) {
  std::vector<uint8_t> storage;
  auto m = load_edited({}, storage);
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->layers.size(), 4u);
  EXPECT_EQ(m->layers[3].gate_exps.type, TensorType::kMXFP4);
}

TEST(Model, MissingTensorIsNamed) {
  test::GgufEdits e;
  e.edit_tensor = [](const gguf::TensorInfo& t) {
    test::TensorEdit edit;
    edit.drop = t.name == "blk.2.attn_sinks.weight";
    return edit;
  };
  expect_load_error(e, ErrorCode::kMissing, "tensor 'blk.2.attn_sinks.weight' is missing");
}

TEST(Model, MisshapedTensorNamesFoundAndExpectedShapes) {
  test::GgufEdits e;
  e.edit_tensor = [](const gguf::TensorInfo& t) {
    test::TensorEdit edit;
    if (t.name == "blk.1.attn_q.weight") edit.shape = std::vector<uint64_t>{256, 128};
    return edit;
  };
  expect_load_error(e, ErrorCode::kShape, "'blk.1.attn_q.weight' has shape {256, 128}, expected {256, 256}");
}

TEST(Model, ExpertStackWithWrongExpertCountIsRejected) {
  test::GgufEdits e;
  e.edit_tensor = [](const gguf::TensorInfo& t) {
    test::TensorEdit edit;
    if (t.name == "blk.0.ffn_up_exps.weight") edit.shape = std::vector<uint64_t>{256, 256, 7};
    return edit;
  };
  expect_load_error(e, ErrorCode::kShape, "expected {256, 256, 8}");
}

TEST(Model, OtherArchitectureIsUnsupported) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "general.architecture"; };
  e.add_metadata = [](gguf::Writer& w) { w.add_string("general.architecture", "llama"); };
  expect_load_error(e, ErrorCode::kUnsupported, "'llama', expected 'gpt-oss'");
}

TEST(Model, MissingRequiredHparamIsNamed) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "gpt-oss.expert_count"; };
  expect_load_error(e, ErrorCode::kMissing, "gpt-oss.expert_count");
}

TEST(Model, KvHeadsThatDoNotDivideHeadsAreRejected) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "gpt-oss.attention.head_count_kv"; };
  e.add_metadata = [](gguf::Writer& w) { w.add_u32("gpt-oss.attention.head_count_kv", 3); };
  expect_load_error(e, ErrorCode::kFormat, "not a multiple of head_count_kv 3");
}

TEST(Model, MoreExpertsUsedThanExistIsOutOfRange) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "gpt-oss.expert_used_count"; };
  e.add_metadata = [](gguf::Writer& w) { w.add_u32("gpt-oss.expert_used_count", 9); };
  expect_load_error(e, ErrorCode::kFormat, "'gpt-oss.expert_used_count' = 9 is out of range (expected 1..8)");
}

TEST(Model, UnknownRopeScalingTypeIsUnsupported) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "gpt-oss.rope.scaling.type"; };
  e.add_metadata = [](gguf::Writer& w) { w.add_string("gpt-oss.rope.scaling.type", "linear"); };
  expect_load_error(e, ErrorCode::kUnsupported, "'linear' is not supported");
}

TEST(Model, HparamOfTheWrongValueTypeIsRejected) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "gpt-oss.block_count"; };
  e.add_metadata = [](gguf::Writer& w) { w.add_string("gpt-oss.block_count", "four"); };
  expect_load_error(e, ErrorCode::kFormat, "gpt-oss.block_count");
}

TEST(Model, VocabularyLongerThanTheEmbeddingIsRejected) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) { return k != "tokenizer.ggml.tokens"; };
  e.add_metadata = [](gguf::Writer& w) {
    std::vector<std::string> tokens(4107, "x");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
  };
  expect_load_error(e, ErrorCode::kShape, "4107 entries but token_embd.weight has 4106 rows");
}

TEST(Model, AbsentOptionalKeysTakeTheSpecDefaults) {
  test::GgufEdits e;
  e.keep_key = [](const std::string& k) {
    return k != "gpt-oss.attention.sliding_window" && k != "gpt-oss.rope.freq_base" &&
           k != "gpt-oss.attention.layer_norm_rms_epsilon";
  };
  std::vector<uint8_t> storage;
  auto m = load_edited(e, storage);
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  EXPECT_EQ(m->hparams.sliding_window, 128u);
  EXPECT_EQ(m->hparams.sliding_window_pattern, 2u);
  EXPECT_FLOAT_EQ(m->hparams.rope_freq_base, 150000.0f);
  EXPECT_FLOAT_EQ(m->hparams.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(m->hparams.yarn_beta_fast, 32.0f);
  EXPECT_FLOAT_EQ(m->hparams.yarn_beta_slow, 1.0f);
}

constexpr int kNumPositions = 60;

/// Logits of the first kNumPositions fixture tokens.
std::vector<float> logits_of(const Model& m) {
  static const auto ids = test::read_numbers<int32_t>(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.ids.txt");
  auto fwd = ReferenceForward::create(m, 64, KvCacheType::kF32, 2);
  std::vector<float> all;
  std::vector<float> row(m.hparams.vocab_size);
  for (int i = 0; i < kNumPositions; ++i) {
    EXPECT_TRUE(fwd->forward(ids[i], row).has_value());
    all.insert(all.end(), row.begin(), row.end());
  }
  return all;
}

// Community GGUFs store the dense matrices as F32, F16 or BF16: the same model in those types gives the same
// logits (exactly for F32, which holds the dequantized Q8_0 values; within rounding for F16/BF16).
TEST(Model, DenseMatricesInF32F16Bf16GiveTheSameLogits) {
  const Model base = std::move(*Model::from_file(std::move(*gguf::File::open(kTiny))));
  const std::vector<float> want = logits_of(base);
  // Near-ties in routing can flip under any rounding: judge the positions with router margin >= 0.15, as the
  // fixture bar does.
  const auto margin = test::read_numbers<double>(std::string(HETMOE_TEST_DATA_DIR) + "/gpt-oss-tiny.router-margin.txt");
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
    test::GgufEdits e;
    e.edit_tensor = [type](const gguf::TensorInfo& t) {
      test::TensorEdit edit;
      if (t.type == TensorType::kQ8_0) edit.convert_to = type;
      return edit;
    };
    std::vector<uint8_t> storage;
    auto m = load_edited(e, storage);
    ASSERT_TRUE(m.has_value()) << m.error().to_string();
    EXPECT_EQ(m->layers[0].wq.type, type);
    const auto a = test::agreement(want, logits_of(*m), 4106, margin);
    // F32 holds the Q8_0 values exactly (KL ~1e-12); F16 rounds d·q to 11 bits, BF16 to 8 bits: still far below
    // the fixture bar of 1e-3.
    const double tolerance = type == TensorType::kF32 ? 1e-9 : 1e-3;
    EXPECT_LE(a.p99_confident, tolerance) << tensor_type_name(static_cast<uint32_t>(type));
    std::printf("[ dense %s ] KL p50 %.3g p99 %.3g\n", std::string(tensor_type_traits(type).name).c_str(), a.p50_all, a.p99_confident);
  }
}

}  // namespace
}  // namespace hetmoe
