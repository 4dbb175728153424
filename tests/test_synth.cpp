// hetmoe synth: layout identical to the tiny fixture, vocabularies from tiktoken ranks and placeholders,
// determinism, router skew, weight scales, ranks-file validation.
#include <gtest/gtest.h>
#include <oneapi/tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "cpu_kernels/reference.h"
#include "runtime/model/gguf.h"
#include "runtime/model/synth.h"
#include "runtime/model/tiktoken_vocab.h"

namespace hetmoe {
namespace {

namespace fs = std::filesystem;
const std::string kData = HETMOE_TEST_DATA_DIR;
const std::string kTinyFixture = kData + "/gpt-oss-tiny.gguf";
const std::string kO200kRanks = kData + "/o200k_base.tiktoken";

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

gguf::File open_or_die(const std::string& path) {
  auto file = gguf::File::open(path);
  EXPECT_TRUE(file) << (file ? "" : file.error().to_string());
  return std::move(*file);
}

std::vector<std::string> string_array(const gguf::File& f, std::string_view key) {
  auto arr = f.get_string_array(key);
  EXPECT_TRUE(arr) << key;
  if (!arr) return {};
  return {arr->begin(), arr->end()};
}

std::vector<float> dequantize(const gguf::TensorInfo& t) {
  std::vector<float> out(t.num_elements);
  ref::dequantize_row(t.type, t.data, out.data(), static_cast<int64_t>(t.num_elements));
  return out;
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / static_cast<double>(v.size());
}

double std_of(const std::vector<float>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

class Synth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hetmoe-synth-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a synthetic model into the temp dir and returns its path.
  std::string write(const std::string& name, const SynthOptions& options) {
    const std::string path = (dir_ / name).string();
    Status s = synth_write(options, path);
    EXPECT_TRUE(s) << (s ? "" : s.error().to_string());
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    return path;
  }

  fs::path dir_;
};

// Metadata keys, value types, scalar values and tensor table of `a` and `b` are the same.
void expect_same_layout(const gguf::File& a, const gguf::File& b, bool same_vocab) {
  EXPECT_EQ(a.version(), b.version());
  EXPECT_EQ(a.alignment(), b.alignment());
  ASSERT_EQ(a.metadata().size(), b.metadata().size());
  for (size_t i = 0; i < a.metadata().size(); ++i) {
    const gguf::KeyValue& ka = a.metadata()[i];
    const gguf::KeyValue& kb = b.metadata()[i];
    EXPECT_EQ(ka.key, kb.key) << "key #" << i;
    EXPECT_EQ(ka.value.type, kb.value.type) << ka.key;
    EXPECT_EQ(ka.value.array_type, kb.value.array_type) << ka.key;
    EXPECT_EQ(ka.value.array_count, kb.value.array_count) << ka.key;
    if (ka.value.type == gguf::ValueType::kArray) continue;
    EXPECT_EQ(ka.value.u64, kb.value.u64) << ka.key;
    EXPECT_EQ(ka.value.f64, kb.value.f64) << ka.key;
    EXPECT_EQ(ka.value.str, kb.value.str) << ka.key;
  }
  if (same_vocab) {
    EXPECT_EQ(a.data_offset(), b.data_offset());
    EXPECT_EQ(a.file_size(), b.file_size());
  }
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const gguf::TensorInfo& ta = a.tensors()[i];
    const gguf::TensorInfo& tb = b.tensors()[i];
    EXPECT_EQ(ta.name, tb.name) << "tensor #" << i;
    EXPECT_EQ(ta.type, tb.type) << ta.name;
    EXPECT_EQ(ta.n_dims, tb.n_dims) << ta.name;
    for (uint32_t d = 0; d < gguf::kMaxDims; ++d) EXPECT_EQ(ta.ne[d], tb.ne[d]) << ta.name << " dim " << d;
    EXPECT_EQ(ta.offset, tb.offset) << ta.name;
    EXPECT_EQ(ta.num_bytes, tb.num_bytes) << ta.name;
  }
}

TEST_F(Synth, TinyWithO200kRanksHasTheFixtureHeaderByteForByte) {
  SynthOptions options;
  options.preset = "tiny";
  options.seed = 3;
  options.vocab_path = kO200kRanks;
  const std::string path = write("tiny.gguf", options);
  const gguf::File mine = open_or_die(path);
  const gguf::File fixture = open_or_die(kTinyFixture);
  expect_same_layout(mine, fixture, /*same_vocab=*/true);
  EXPECT_EQ(string_array(mine, "tokenizer.ggml.tokens"), string_array(fixture, "tokenizer.ggml.tokens"));
  EXPECT_EQ(string_array(mine, "tokenizer.ggml.merges"), string_array(fixture, "tokenizer.ggml.merges"));
  EXPECT_EQ(*mine.get_i32_array("tokenizer.ggml.token_type"), *fixture.get_i32_array("tokenizer.ggml.token_type"));
  EXPECT_EQ(string_array(mine, "tokenizer.ggml.merges").size(), 3840u);

  // Header, metadata, tensor infos and padding: identical bytes.
  const std::vector<uint8_t> a = read_bytes(path), b = read_bytes(kTinyFixture);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + static_cast<ptrdiff_t>(fixture.data_offset()), b.begin()));
}

TEST_F(Synth, TinyPlaceholderVocabularyHasTheFixtureLayoutAndConsistentMerges) {
  SynthOptions options;
  options.preset = "tiny";
  const gguf::File mine = open_or_die(write("tiny.gguf", options));
  const gguf::File fixture = open_or_die(kTinyFixture);
  expect_same_layout(mine, fixture, /*same_vocab=*/false);

  const std::vector<std::string> tokens = string_array(mine, "tokenizer.ggml.tokens");
  const std::vector<std::string> merges = string_array(mine, "tokenizer.ggml.merges");
  const std::vector<int32_t> types = *mine.get_i32_array("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 4106u);
  EXPECT_EQ(types, *fixture.get_i32_array("tokenizer.ggml.token_type"));
  // Single bytes first, in o200k's order; specials as in the fixture.
  const std::vector<std::string> fixture_tokens = string_array(fixture, "tokenizer.ggml.tokens");
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.begin() + 256, fixture_tokens.begin()));
  EXPECT_TRUE(std::equal(tokens.begin() + 4096, tokens.end(), fixture_tokens.begin() + 4096));
  EXPECT_EQ(tokens[4096], "<|startoftext|>");
  EXPECT_EQ(tokens[4098], "<|return|>");
  EXPECT_EQ(tokens[4105], "<|endofprompt|>");

  // One merge per multi-byte token; each merge's sides and their concatenation are tokens.
  EXPECT_EQ(merges.size(), 4096u - 256u);
  const std::unordered_set<std::string> token_set(tokens.begin(), tokens.end());
  EXPECT_EQ(token_set.size(), tokens.size());
  std::set<std::string> merged;
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    ASSERT_NE(space, std::string::npos) << m;
    ASSERT_EQ(m.find(' ', space + 1), std::string::npos) << m;
    const std::string left = m.substr(0, space), right = m.substr(space + 1);
    EXPECT_TRUE(token_set.count(left)) << m;
    EXPECT_TRUE(token_set.count(right)) << m;
    EXPECT_TRUE(token_set.count(left + right)) << m;
    EXPECT_TRUE(merged.insert(left + right).second) << "two merges form " << left + right;
  }
  // Pseudo-words: lowercase letters, optionally after one leading space ('Ġ').
  for (size_t id = 256; id < 4096; ++id) {
    auto bytes = tiktoken::byte_level_decode(tokens[id]);
    ASSERT_TRUE(bytes) << tokens[id];
    const std::string_view word = std::string_view(*bytes).substr((*bytes)[0] == ' ' ? 1 : 0);
    EXPECT_FALSE(word.empty()) << id;
    EXPECT_TRUE(std::all_of(word.begin(), word.end(), [](char c) { return c >= 'a' && c <= 'z'; })) << tokens[id];
  }
}

TEST_F(Synth, SameSeedSameBytesOtherSeedOtherWeights) {
  SynthOptions options;
  options.preset = "tiny";
  options.seed = 11;
  options.router_skew = 1.0f;
  const std::vector<uint8_t> a = read_bytes(write("a.gguf", options));
  const std::vector<uint8_t> b = read_bytes(write("b.gguf", options));
  {
    // The bytes do not depend on the number of threads generating them.
    tbb::global_control one_thread(tbb::global_control::max_allowed_parallelism, 1);
    EXPECT_EQ(a, read_bytes(write("c.gguf", options)));
  }
  EXPECT_EQ(a, b);
  options.seed = 12;
  const std::string other_path = write("d.gguf", options);
  const std::vector<uint8_t> other = read_bytes(other_path);
  ASSERT_EQ(a.size(), other.size());
  EXPECT_NE(a, other);
  // Same header; every large tensor differs.
  const gguf::File fa = open_or_die((dir_ / "a.gguf").string());
  const gguf::File fd = open_or_die(other_path);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + static_cast<ptrdiff_t>(fa.data_offset()), other.begin()));
  for (size_t i = 0; i < fa.tensors().size(); ++i) {
    const gguf::TensorInfo& t = fa.tensors()[i];
    if (t.num_elements < 64) continue;
    EXPECT_FALSE(std::equal(t.data, t.data + t.num_bytes, fd.tensors()[i].data)) << t.name;
  }
}

TEST_F(Synth, RouterSkewGivesAZipfBiasOverAPerLayerPermutation) {
  SynthOptions options;
  options.preset = "tiny";
  options.router_skew = 2.0f;
  const gguf::File skewed = open_or_die(write("skewed.gguf", options));
  options.router_skew = 0.0f;
  const gguf::File flat = open_or_die(write("flat.gguf", options));
  std::set<std::vector<float>> distinct;
  for (int l = 0; l < 4; ++l) {
    const std::string name = "blk." + std::to_string(l) + ".ffn_gate_inp.bias";
    const std::vector<float> bias = dequantize(*skewed.find_tensor(name));
    ASSERT_EQ(bias.size(), 8u);
    std::vector<float> sorted = bias;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (int r = 0; r < 8; ++r) EXPECT_NEAR(sorted[r], -2.0 * std::log(1.0 + r), 1e-5) << name << " rank " << r;
    distinct.insert(bias);
    for (float x : dequantize(*flat.find_tensor(name))) EXPECT_EQ(x, 0.0f) << name;
  }
  EXPECT_GT(distinct.size(), 1u) << "every layer has the same hot experts";
  // The rest of the weights do not depend on the skew.
  const gguf::TensorInfo* a = skewed.find_tensor("blk.2.ffn_gate_exps.weight");
  EXPECT_TRUE(std::equal(a->data, a->data + a->num_bytes, flat.find_tensor("blk.2.ffn_gate_exps.weight")->data));
}

TEST_F(Synth, WeightScalesMatchTheDocumentedStandardDeviations) {
  SynthOptions options;
  options.preset = "tiny";
  options.seed = 5;
  const gguf::File f = open_or_die(write("tiny.gguf", options));
  const double d = 256, q = 256, ffn = 256;
  struct Expectation {
    const char* name;
    double mean;
    double std_dev;
  };
  const Expectation expectations[] = {
      {"token_embd.weight", 0.0, 1.0},
      {"blk.1.attn_q.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.attn_k.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.attn_v.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.attn_output.weight", 0.0, 1.0 / std::sqrt(q)},
      {"blk.1.ffn_gate_inp.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.ffn_gate_exps.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.ffn_up_exps.weight", 0.0, 1.0 / std::sqrt(d)},
      {"blk.1.ffn_down_exps.weight", 0.0, 1.0 / std::sqrt(ffn)},
      {"blk.1.ffn_down_exps.bias", 0.0, 0.02},
      {"blk.1.attn_q.bias", 0.0, 0.02},
      {"blk.1.attn_norm.weight", 1.0, 0.1 / std::sqrt(3.0)},
      {"output.weight", 0.0, 3.0 / std::sqrt(d)},
  };
  for (const auto& e : expectations) {
    const gguf::TensorInfo* t = f.find_tensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    const std::vector<float> v = dequantize(*t);
    EXPECT_NEAR(std_of(v) / e.std_dev, 1.0, 0.06) << e.name;
    EXPECT_NEAR(mean_of(v), e.mean, 0.2 * e.std_dev) << e.name;
  }
  for (int l = 0; l < 4; ++l)
    for (float s : dequantize(*f.find_tensor("blk." + std::to_string(l) + ".attn_sinks.weight"))) {
      EXPECT_GE(s, -1.0f);
      EXPECT_LE(s, 3.0f);
    }
}

TEST_F(Synth, ErrorsLeaveNoFiles) {
  SynthOptions options;
  options.preset = "gpt-oss-7b";
  const std::string path = (dir_ / "x.gguf").string();
  Status s = synth_write(options, path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(s.error().message.find("gpt-oss-20b"), std::string::npos) << s.error().message;

  options.preset = "tiny";
  options.router_skew = -1.0f;
  EXPECT_FALSE(synth_write(options, path));
  options.router_skew = NAN;
  EXPECT_FALSE(synth_write(options, path));

  options.router_skew = 0.0f;
  const std::string ranks = (dir_ / "bad.tiktoken").string();
  std::ofstream(ranks) << "IQ== 0\nIg== 1\nI$== 2\n";
  options.vocab_path = ranks;
  s = synth_write(options, path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kFormat);
  EXPECT_NE(s.error().message.find(ranks + ":3:"), std::string::npos) << s.error().message;

  // A ranks file with too few tokens for the preset.
  std::ofstream(ranks, std::ios::trunc) << "IQ== 0\nIg== 1\n";
  s = synth_write(options, path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);

  options.vocab_path = (dir_ / "missing.tiktoken").string();
  s = synth_write(options, path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kIo);

  // Unwritable output: the directory does not exist.
  options.vocab_path.clear();
  s = synth_write(options, (dir_ / "no-such-dir" / "x.gguf").string());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kIo);

  // Cancelled by the progress callback half-way.
  int num_calls = 0;
  s = synth_write(options, path, [&](const SynthProgress& p) {
    ++num_calls;
    return p.bytes_written < p.total_bytes / 2;
  });
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("cancelled"), std::string::npos) << s.error().message;
  EXPECT_GT(num_calls, 1);

  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(Synth, ProgressReachesTheFileSize) {
  SynthOptions options;
  const std::string path = (dir_ / "tiny.gguf").string();
  SynthProgress last;
  uint64_t previous_bytes = 0;
  bool monotonic = true;
  ASSERT_TRUE(synth_write(options, path, [&](const SynthProgress& p) {
    monotonic = monotonic && p.bytes_written >= previous_bytes;
    previous_bytes = p.bytes_written;
    last = p;
    return true;
  }));
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last.bytes_written, fs::file_size(path));
  EXPECT_EQ(last.total_bytes, fs::file_size(path));
  EXPECT_EQ(last.num_tensors_done, 3u + 4u * 19u);
  EXPECT_EQ(last.num_tensors, 3u + 4u * 19u);
}

TEST(SynthPresets, HaveThePublishedShapes) {
  auto p20 = synth_find_preset("gpt-oss-20b");
  ASSERT_TRUE(p20);
  EXPECT_EQ(p20->num_layers, 24u);
  EXPECT_EQ(p20->num_experts, 32u);
  EXPECT_EQ(p20->hidden_dim, 2880u);
  EXPECT_EQ(p20->q_dim(), 4096u);
  EXPECT_EQ(p20->kv_dim(), 512u);
  EXPECT_EQ(p20->vocab_size, 201088u);
  auto p120 = synth_find_preset("gpt-oss-120b");
  ASSERT_TRUE(p120);
  EXPECT_EQ(p120->num_layers, 36u);
  EXPECT_EQ(p120->num_experts, 128u);
  EXPECT_EQ(p120->num_experts_used, 4u);
  // general.file_type as the published files (llama.cpp's MXFP4 MoE); the tiny fixture has none.
  EXPECT_EQ(p20->file_type, 38u);
  EXPECT_EQ(p120->file_type, 38u);
  EXPECT_EQ(synth_find_preset("tiny")->file_type, 0u);
  EXPECT_EQ(synth_presets().size(), 3u);
  EXPECT_FALSE(synth_find_preset("huge"));
}

TEST(SynthVocab, O200kRanksGiveTheFixtureVocabulary) {
  auto fixture = gguf::File::open(kData + "/o200k-harmony-vocab.gguf");
  ASSERT_TRUE(fixture) << fixture.error().to_string();
  auto preset = synth_find_preset("gpt-oss-20b");
  ASSERT_TRUE(preset);
  auto vocab = synth_build_vocab(*preset, kO200kRanks);
  ASSERT_TRUE(vocab) << vocab.error().to_string();
  EXPECT_EQ(vocab->merges.size(), 199742u);
  EXPECT_EQ(vocab->tokens, string_array(*fixture, "tokenizer.ggml.tokens"));
  EXPECT_EQ(vocab->merges, string_array(*fixture, "tokenizer.ggml.merges"));
  EXPECT_EQ(vocab->token_types, *fixture->get_i32_array("tokenizer.ggml.token_type"));
  EXPECT_EQ(vocab->tokens[200002], "<|return|>");
  EXPECT_EQ(vocab->tokens[200001], "<|reserved_200001|>");
}

TEST(SynthVocab, GptOssPlaceholderVocabularyFillsAllRegularIds) {
  auto preset = synth_find_preset("gpt-oss-20b");
  ASSERT_TRUE(preset);
  auto vocab = synth_build_vocab(*preset, "");
  ASSERT_TRUE(vocab) << vocab.error().to_string();
  ASSERT_EQ(vocab->tokens.size(), 201088u);
  EXPECT_EQ(vocab->merges.size(), 199998u - 256u);
  EXPECT_EQ(vocab->tokens[199998], "<|startoftext|>");
  EXPECT_EQ(vocab->tokens[200018], "<|endofprompt|>");
  EXPECT_EQ(vocab->tokens[201087], "<|reserved_201087|>");
  EXPECT_EQ(std::count(vocab->token_types.begin(), vocab->token_types.end(), 3), 201088 - 199998);
}

TEST(TiktokenRanks, ParsesAndRejectsMalformedLines) {
  auto ok = tiktoken::parse_ranks("IQ== 1\r\nIg== 0\n\naGk= 2\n", "t.tiktoken");
  ASSERT_TRUE(ok) << ok.error().to_string();
  EXPECT_EQ(*ok, (std::vector<std::string>{"\"", "!", "hi"}));

  struct Case {
    const char* text;
    const char* expected;  // in the message
  };
  const Case cases[] = {
      {"IQ== 0\nI*== 1\n", "t.tiktoken:2: invalid base64"},
      {"IQ== 0\nIQ 1\n", "t.tiktoken:2: invalid base64"},
      {"IQ== 0\nIg== 0\n", "t.tiktoken:2: duplicate rank 0 (also on line 1)"},
      {"IQ== 0\nIg== 2\n", "t.tiktoken: rank 1 is missing"},
      {"IQ== 0\nIg== x1\n", "t.tiktoken:2: rank 'x1'"},
      {"IQ== 0\nIg== -1\n", "t.tiktoken:2: rank '-1'"},
      {"IQ== 0\nIg==  1\n", "t.tiktoken:2: expected 'BASE64 RANK'"},
      {"IQ== 0\nIg==\n", "t.tiktoken:2: expected 'BASE64 RANK'"},
      {"IQ== 0\nIQ== 1\n", "t.tiktoken:2: duplicate token '!' (also on line 1)"},
      {"IQ== 0\n 1\n", "t.tiktoken:2: empty token"},
      {"IQ== 99999999999\n", "t.tiktoken:1: rank '99999999999'"},
  };
  for (const auto& c : cases) {
    auto r = tiktoken::parse_ranks(c.text, "t.tiktoken");
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code, ErrorCode::kFormat) << c.text;
    EXPECT_NE(r.error().message.find(c.expected), std::string::npos) << r.error().message;
  }
  auto missing = tiktoken::load_ranks("/nonexistent/o200k.tiktoken");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kIo);
}

TEST(TiktokenRanks, Base64IsStrict) {
  EXPECT_EQ(*tiktoken::base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(*tiktoken::base64_decode("aGVsbA=="), "hell");
  EXPECT_EQ(*tiktoken::base64_decode("aGVs"), "hel");
  EXPECT_EQ(*tiktoken::base64_decode("+/+/"), std::string("\xfb\xff\xbf"));
  for (const char* bad : {"aGVsbG8", "aGV=bG8=", "a===", "aGVs\n", "aG Vs", "=aGV", "aGVsbA=a"})
    EXPECT_FALSE(tiktoken::base64_decode(bad)) << bad;
}

TEST(TiktokenVocab, ByteLevelMappingRoundTripsAllBytes) {
  EXPECT_EQ(tiktoken::byte_level_encode(" "), "\xc4\xa0");   // Ġ
  EXPECT_EQ(tiktoken::byte_level_encode("\n"), "\xc4\x8a");  // Ċ
  EXPECT_EQ(tiktoken::byte_level_encode("a!~"), "a!~");
  EXPECT_EQ(tiktoken::byte_level_encode("\xad"), "\xc5\x83");  // the last remapped byte: U+0143
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(*tiktoken::byte_level_decode(tiktoken::byte_level_encode(all)), all);
  EXPECT_FALSE(tiktoken::byte_level_decode("\xc5\x84"));  // U+0144: not mapped
  EXPECT_FALSE(tiktoken::byte_level_decode(" "));         // the space byte is 'Ġ', not ' '
  EXPECT_FALSE(tiktoken::byte_level_decode("\xc4"));      // truncated
  const auto order = tiktoken::byte_level_order();
  EXPECT_EQ(order[0], '!');
  EXPECT_EQ(order[187], 0xFF);
  EXPECT_EQ(order[188], 0x00);
  EXPECT_EQ(order[255], 0xAD);
}

TEST(TiktokenVocab, MergesFollowTheRanks) {
  // "ab" (rank 3) = a + b; "abc" (rank 5) = ab + c; "bc" (rank 4) exists but has a higher rank than "ab".
  const std::vector<std::string> tokens = {"a", "b", "c", "ab", "bc", "abc"};
  auto merges = tiktoken::derive_merges(tokens);
  ASSERT_TRUE(merges) << merges.error().to_string();
  ASSERT_EQ(merges->size(), 3u);
  EXPECT_EQ(tiktoken::merge_text(tokens, (*merges)[0]), "a b");
  EXPECT_EQ(tiktoken::merge_text(tokens, (*merges)[1]), "b c");
  EXPECT_EQ(tiktoken::merge_text(tokens, (*merges)[2]), "ab c");
  EXPECT_EQ((*merges)[2].merged_rank, 5u);

  // "abc" cannot come from one merge when no two-byte token is below it.
  auto bad = tiktoken::derive_merges(std::vector<std::string>{"a", "b", "c", "abc"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("rank 3"), std::string::npos) << bad.error().message;
  // A byte without a single-byte token.
  EXPECT_FALSE(tiktoken::derive_merges(std::vector<std::string>{"a", "ab"}));
}

}  // namespace
}  // namespace hetmoe
