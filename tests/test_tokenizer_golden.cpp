// The tokenizer against the reference encoder: every string of tests/data/tokenizer-golden/o200k_base.jsonl (made by
// scripts/tokenizer_golden/generate.mjs with the npm package gpt-tokenizer, which carries the real o200k ranks) must
// encode to exactly the golden ids with the o200k-harmony-vocab.gguf tokenizer, and decode back to the string.
// The bar is 100 %: one differing string fails the test (the first few differences are printed with both id lists).

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/text/tokenizer.h"
#include "tests/vocab_fixture.h"

namespace hetmoe {
namespace {

const std::string kDataDir = HETMOE_TEST_DATA_DIR;

struct GoldenString {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<GoldenString> load_corpus(std::string* error) {
  std::vector<GoldenString> corpus;
  const std::string path = kDataDir + "/tokenizer-golden/o200k_base.jsonl";
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot open";
    return corpus;
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    corpus.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>()});
  }
  return corpus;
}

using test::Vocab;

const Vocab& o200k() {
  static const Vocab vocab = test::load_vocab("o200k-harmony-vocab.gguf");
  return vocab;
}

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "]";
}

TEST(TokenizerGolden, CorpusIsLargeAndCoversTheCategories) {
  std::string error;
  const std::vector<GoldenString> corpus = load_corpus(&error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_GE(corpus.size(), 2000u);
  // A few markers of the categories the issue names, so a regenerated corpus cannot silently lose them.
  auto has = [&](std::string_view needle) {
    for (const GoldenString& g : corpus) {
      if (g.text.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("\xE2\x80\x8D"));          // ZWJ sequences
  EXPECT_TRUE(has("\xF0\x9F\x8F\xBD"));      // skin tone modifier
  EXPECT_TRUE(has("ภาษาไทย"));                // Thai
  EXPECT_TRUE(has("नमस्ते"));                  // Hindi
  EXPECT_TRUE(has("שלום"));                   // Hebrew
  EXPECT_TRUE(has("مرحبا"));                  // Arabic
  EXPECT_TRUE(has("你好"));                    // CJK
  EXPECT_TRUE(has("I'M SURE WE'LL"));         // upper-case contractions
  EXPECT_TRUE(has("https://"));               // URLs
  EXPECT_TRUE(has("\r\n\r\n"));               // mixed newlines
  EXPECT_TRUE(has(std::string(1000, ' ')));   // long white space runs
  EXPECT_TRUE(has("<|start|>"));              // special-token text as ordinary text
}

TEST(TokenizerGolden, EveryCorpusStringEncodesToTheReferenceIds) {
  ASSERT_NE(o200k().tokenizer, nullptr) << o200k().error;
  const Tokenizer& tok = *o200k().tokenizer;
  std::string error;
  const std::vector<GoldenString> corpus = load_corpus(&error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_FALSE(corpus.empty());
  size_t num_identical = 0;
  size_t num_shown = 0;
  for (const GoldenString& g : corpus) {
    const std::vector<int32_t> ids = tok.encode(g.text, false);
    if (ids == g.ids) {
      ++num_identical;
    } else if (++num_shown <= 10) {
      ADD_FAILURE() << "text " << nlohmann::json(g.text).dump() << "\n  ours      " << ids_text(ids)
                    << "\n  reference " << ids_text(g.ids);
    }
    Expected<std::string> back = tok.decode(g.ids);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(*back, g.text) << "the reference ids do not decode to the text";
  }
  std::printf("[ golden   ] %zu of %zu strings identical (%.2f %%)\n", num_identical, corpus.size(),
              100.0 * num_identical / corpus.size());
  EXPECT_EQ(num_identical, corpus.size());
}

// The same strings with parse_special on: strings without special-token text are unchanged, and strings with it
// split exactly at the special tokens (each part equal to its own ordinary encoding).
TEST(TokenizerGolden, ParseSpecialSplitsOnlyAtSpecialTokens) {
  ASSERT_NE(o200k().tokenizer, nullptr) << o200k().error;
  const Tokenizer& tok = *o200k().tokenizer;
  std::string error;
  const std::vector<GoldenString> corpus = load_corpus(&error);
  ASSERT_TRUE(error.empty()) << error;
  size_t num_with_special = 0;
  for (const GoldenString& g : corpus) {
    const std::vector<int32_t> ids = tok.encode(g.text, true);
    std::vector<int32_t> expected;
    bool has_special = false;
    size_t start = 0;
    for (const int32_t id : ids) {
      if (!tok.is_special(id)) continue;
      has_special = true;
      const std::string_view special = tok.token_bytes(id);
      const size_t at = g.text.find(special, start);
      ASSERT_NE(at, std::string::npos);
      const std::vector<int32_t> part = tok.encode(std::string_view(g.text).substr(start, at - start), false);
      expected.insert(expected.end(), part.begin(), part.end());
      expected.push_back(id);
      start = at + special.size();
    }
    const std::vector<int32_t> rest = tok.encode(std::string_view(g.text).substr(start), false);
    expected.insert(expected.end(), rest.begin(), rest.end());
    EXPECT_EQ(ids, expected) << nlohmann::json(g.text).dump();
    if (!has_special) {
      EXPECT_EQ(ids, g.ids) << nlohmann::json(g.text).dump();
    }
    num_with_special += has_special;
    EXPECT_EQ(*tok.decode(ids), g.text);
  }
  EXPECT_GT(num_with_special, 10u);
}

}  // namespace
}  // namespace hetmoe
