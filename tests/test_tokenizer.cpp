// Tokenizer tests: load-time validation, byte mapping, the o200k pre-split, BPE ids against a plain tiktoken-style
// reference encoder over tests/data/o200k_base.tiktoken, invalid UTF-8, round trips, special-token parsing,
// streaming decode, and a throughput print. The full comparison with the reference encoder on a 3,588-string corpus
// is test_tokenizer_golden.cpp.

#include "runtime/model/tiktoken_vocab.h"
#include "runtime/text/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace hetmoe {
namespace {

const std::string kDataDir = HETMOE_TEST_DATA_DIR;

// ---------------------------------------------------------------------------------------------------------------
// Independent helpers (written for the tests, not shared with the implementation).

// GPT-2 bytes_to_unicode(): byte -> UTF-8 text of its code point.
std::string mapped_byte(uint8_t b) {
  std::vector<int> printable;
  for (int c = '!'; c <= '~'; ++c) printable.push_back(c);
  for (int c = 0xA1; c <= 0xAC; ++c) printable.push_back(c);
  for (int c = 0xAE; c <= 0xFF; ++c) printable.push_back(c);
  uint32_t code_point = b;
  if (std::find(printable.begin(), printable.end(), b) == printable.end()) {
    uint32_t num_before = 0;
    for (int c = 0; c < b; ++c) {
      if (std::find(printable.begin(), printable.end(), c) == printable.end()) ++num_before;
    }
    code_point = 0x100 + num_before;
  }
  std::string s;
  if (code_point < 0x80) {
    s += static_cast<char>(code_point);
  } else {
    s += static_cast<char>(0xC0 | (code_point >> 6));
    s += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return s;
}

std::string mapped_text(std::string_view bytes) {
  std::string s;
  for (char c : bytes) s += mapped_byte(static_cast<uint8_t>(c));
  return s;
}

// o200k_base.tiktoken: "base64(token) rank" per line.
struct TiktokenRanks {
  std::unordered_map<std::string, int32_t> rank_by_bytes;
  std::vector<std::string> bytes_by_rank;
};

std::unique_ptr<TiktokenRanks> load_tiktoken(const std::string& path) {
  auto by_rank = tiktoken::load_ranks(path);  // runtime/model/tiktoken_vocab.h: strict parser, rank == index
  if (!by_rank) return nullptr;
  auto ranks = std::make_unique<TiktokenRanks>();
  ranks->bytes_by_rank = std::move(*by_rank);
  for (size_t rank = 0; rank < ranks->bytes_by_rank.size(); ++rank)
    ranks->rank_by_bytes.emplace(ranks->bytes_by_rank[rank], static_cast<int32_t>(rank));
  return ranks;
}

// tiktoken's byte_pair_merge, written plainly (O(n^2)): repeatedly merge the adjacent pair whose concatenation has
// the lowest rank (leftmost on ties), considering only ranks below max_rank. Returns the ranks of the parts.
std::vector<int32_t> reference_bpe(const TiktokenRanks& ranks, std::string_view piece, int32_t max_rank) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  auto rank_of = [&](const std::string& s) -> int32_t {
    const auto it = ranks.rank_by_bytes.find(s);
    return it == ranks.rank_by_bytes.end() || it->second >= max_rank ? std::numeric_limits<int32_t>::max()
                                                                      : it->second;
  };
  while (parts.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best_idx = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const int32_t r = rank_of(parts[i] + parts[i + 1]);
      if (r < best_rank) {
        best_rank = r;
        best_idx = i;
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    parts[best_idx] += parts[best_idx + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
  }
  std::vector<int32_t> ids;
  for (const std::string& p : parts) ids.push_back(rank_of(p));
  return ids;
}

// True if `s` is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t length = 0;
    uint32_t cp = 0;
    if (b < 0x80) { length = 1; cp = b; }
    else if ((b & 0xE0) == 0xC0) { length = 2; cp = b & 0x1F; }
    else if ((b & 0xF0) == 0xE0) { length = 3; cp = b & 0x0F; }
    else if ((b & 0xF8) == 0xF0) { length = 4; cp = b & 0x07; }
    else return false;
    if (i + length > s.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Shared fixtures: the two vocabularies and the tiktoken ranks, loaded once.

struct Loaded {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string error;
};

Loaded load_vocab(const std::string& name) {
  Loaded loaded;
  Expected<gguf::File> file = gguf::File::open(kDataDir + "/" + name);
  if (!file) {
    loaded.error = file.error().to_string();
    return loaded;
  }
  loaded.file = std::make_unique<gguf::File>(std::move(*file));
  Expected<Tokenizer> tok = Tokenizer::from_gguf(*loaded.file);
  if (!tok) {
    loaded.error = tok.error().to_string();
    return loaded;
  }
  loaded.tokenizer = std::make_unique<Tokenizer>(std::move(*tok));
  return loaded;
}

Loaded& o200k() {
  static Loaded loaded = load_vocab("o200k-harmony-vocab.gguf");
  return loaded;
}
const Loaded& tiny() {
  static const Loaded loaded = load_vocab("gpt-oss-tiny.gguf");
  return loaded;
}
const TiktokenRanks* tiktoken() {
  static const std::unique_ptr<TiktokenRanks> ranks = load_tiktoken(kDataDir + "/o200k_base.tiktoken");
  return ranks.get();
}

#define REQUIRE_LOADED(loaded)                      \
  ASSERT_NE((loaded).tokenizer, nullptr) << (loaded).error

std::vector<std::string> round_trip_samples() {
  std::vector<std::string> samples = {
      "",
      "a",
      "hello world",
      "The quick brown fox jumps over the lazy dog.\nSecond line,\twith a tab.\r\n",
      "def f(x):\n    return x ** 2  # square\n\n\n",
      "你好，世界！日本語のテキストと한국어 텍스트.",
      // man ZWJ woman ZWJ girl ZWJ boy
      "family: \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
      "\xF0\x9F\x91\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6 end",
      "flag \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 and skin tone \xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD",
      "invalid \xFF\xFE \x80\x80 \xC3 \xE2\x82 \xF0\x9F\x98 \xED\xA0\x80 tail \xC3",
      std::string(1, '\0') + "nul and control \x01\x02\x1B[0m",
      "   leading spaces",
      "trailing spaces    ",
      std::string(10000, ' ') + "x" + std::string(5000, '\n') + std::string(3000, '\t') + " \r\n \r\n",
      "12345678901234567890 3.14159 1e-10 0xDEADBEEF",
      "<|start|>user<|message|>hi<|end|>",
  };
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
  samples.push_back(all_bytes);
  std::mt19937 rng(1234);
  std::string random_bytes;
  for (int i = 0; i < 4096; ++i) random_bytes += static_cast<char>(rng() & 0xFF);
  samples.push_back(random_bytes);
  return samples;
}

void expect_round_trips(const Tokenizer& tok) {
  for (const std::string& s : round_trip_samples()) {
    for (bool parse_special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(s, parse_special);
      Expected<std::string> back = tok.decode(ids);
      ASSERT_TRUE(back) << back.error().to_string();
      EXPECT_EQ(*back, s) << "parse_special=" << parse_special << " sample of " << s.size() << " bytes";
      if (!parse_special) {
        for (int32_t id : ids) EXPECT_FALSE(tok.is_special(id)) << id;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The real vocabularies.

TEST(TokenizerO200k, LoadsMetadata) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  EXPECT_EQ(tok.vocab_size(), 201088);
  EXPECT_EQ(tok.num_merges(), 199742u);
  EXPECT_EQ(tok.bos_id(), 199998);
  EXPECT_EQ(tok.eos_id(), 200002);
  EXPECT_EQ(tok.pad_id(), 199999);
  EXPECT_EQ(tok.pre_tokenizer_name(), "gpt-4o");
  EXPECT_EQ(tok.find_token("<|start|>"), 200006);
  EXPECT_EQ(tok.find_token("<|message|>"), 200008);
  EXPECT_EQ(tok.find_token("<|endofprompt|>"), 200018);
  EXPECT_EQ(tok.find_token("<|reserved_201087|>"), 201087);
  EXPECT_TRUE(tok.is_special(199998));
  EXPECT_TRUE(tok.is_special(201087));
  EXPECT_FALSE(tok.is_special(199997));
  EXPECT_FALSE(tok.is_special(-1));
  EXPECT_FALSE(tok.is_special(201088));
  EXPECT_EQ(tok.token_bytes(201088), "");
  EXPECT_EQ(tok.find_token("no such token \x01\x02"), std::nullopt);
  EXPECT_EQ(tok.end_of_generation_ids(), (std::vector<int32_t>{200002, 200012, 199999}));
}

// Every ordinary token's raw bytes equal the tiktoken bytes of the same rank: checks the byte mapping end to end.
TEST(TokenizerO200k, TokenBytesMatchTiktokenRanks) {
  REQUIRE_LOADED(o200k());
  const TiktokenRanks* ranks = tiktoken();
  ASSERT_NE(ranks, nullptr);
  ASSERT_EQ(ranks->bytes_by_rank.size(), 199998u);
  const Tokenizer& tok = *o200k().tokenizer;
  size_t num_mismatches = 0;
  for (int32_t id = 0; id < 199998; ++id) {
    if (tok.token_bytes(id) != ranks->bytes_by_rank[id] && ++num_mismatches <= 5) {
      ADD_FAILURE() << "token " << id << " bytes differ from the tiktoken rank";
    }
  }
  EXPECT_EQ(num_mismatches, 0u);
  EXPECT_EQ(tok.token_bytes(*tok.find_token(" ")), " ");
  EXPECT_EQ(tok.find_token("\n"), ranks->rank_by_bytes.at("\n"));
}

TEST(TokenizerO200k, KnownIds) {
  REQUIRE_LOADED(o200k());
  const TiktokenRanks* ranks = tiktoken();
  ASSERT_NE(ranks, nullptr);
  const Tokenizer& tok = *o200k().tokenizer;
  const int32_t hello = ranks->rank_by_bytes.at("hello");
  const int32_t world = ranks->rank_by_bytes.at(" world");
  EXPECT_EQ(tok.encode("hello", false), std::vector<int32_t>{hello});
  EXPECT_EQ(tok.encode(" world", false), std::vector<int32_t>{world});
  EXPECT_EQ(tok.encode("hello world", false), (std::vector<int32_t>{hello, world}));
}

// On single regex pieces (letter runs with an optional leading space), the BPE over the GGUF merges gives the ids of
// tiktoken's algorithm run directly on the ranks file.
TEST(TokenizerO200k, MatchesReferenceBpeOnWordPieces) {
  REQUIRE_LOADED(o200k());
  const TiktokenRanks* ranks = tiktoken();
  ASSERT_NE(ranks, nullptr);
  const Tokenizer& tok = *o200k().tokenizer;
  const std::vector<std::string> pieces = {
      "hello", " world", " the", "The", " tokenizer", " antidisestablishmentarianism", " Übersetzung",
      " naïve", " Straße", "你好世界", " 日本語", " Привет", " supercalifragilisticexpialidocious", " a", "a",
      " zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", " ελληνικά", " mixedCaseIdentifierName",
  };
  for (const std::string& piece : pieces) {
    EXPECT_EQ(tok.encode(piece, false), reference_bpe(*ranks, piece, 199998)) << piece;
  }
  std::string sentence;
  std::vector<int32_t> expected;
  for (std::string_view word : {"the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog"}) {
    sentence += word;
    const std::vector<int32_t> ids = reference_bpe(*ranks, word, 199998);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(tok.encode(sentence, false), expected);
}

TEST(TokenizerO200k, RoundTrips) {
  REQUIRE_LOADED(o200k());
  expect_round_trips(*o200k().tokenizer);
}

TEST(TokenizerO200k, ParseSpecial) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::string text = "<|start|>user<|message|>hi<|end|>";
  std::vector<int32_t> expected = {200006};
  for (int32_t id : tok.encode("user", false)) expected.push_back(id);
  expected.push_back(200008);
  for (int32_t id : tok.encode("hi", false)) expected.push_back(id);
  expected.push_back(200007);
  EXPECT_EQ(tok.encode(text, true), expected);

  const std::vector<int32_t> plain = tok.encode(text, false);
  for (int32_t id : plain) EXPECT_LT(id, 199998) << "special id without parse_special";
  EXPECT_GT(plain.size(), expected.size());
  EXPECT_EQ(*tok.decode(plain), text);

  // Partial and adjacent markers.
  const std::vector<int32_t> adjacent = tok.encode("<|end|><|start|><|end", true);
  ASSERT_GE(adjacent.size(), 3u);
  EXPECT_EQ(adjacent[0], 200007);
  EXPECT_EQ(adjacent[1], 200006);
  for (size_t i = 2; i < adjacent.size(); ++i) EXPECT_LT(adjacent[i], 199998);
  EXPECT_EQ(*tok.decode(adjacent), "<|end|><|start|><|end");
}

TEST(TokenizerO200k, DecodeRejectsOutOfRangeIds) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  for (int32_t bad : {-1, 201088, std::numeric_limits<int32_t>::max()}) {
    const std::vector<int32_t> ids = {0, bad};
    Expected<std::string> text = tok.decode(ids);
    ASSERT_FALSE(text);
    EXPECT_EQ(text.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(text.error().message.find(std::to_string(bad)), std::string::npos) << text.error().message;
  }
  EXPECT_EQ(*tok.decode(std::vector<int32_t>{}), "");
}

TEST(TokenizerO200k, EncodeThroughput) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::string unit =
      "The model reads a GGUF file, maps its tensors and runs the experts on whichever device holds them. "
      "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // 1024 tokens, 3.5 GB/s\n"
      "混合专家模型把每个词元路由到少数几个专家。 Émoji: \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD "
      "Привет, мир! Γειά σου κόσμε.\n\n    indented line\twith\ttabs\n";
  std::string text;
  while (text.size() < (1u << 20)) text += unit;
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.encode(text, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ perf     ] encode %.2f MB of mixed text -> %zu tokens in %.3f s: %.1f MB/s\n", text.size() / 1e6,
              ids.size(), seconds, text.size() / 1e6 / seconds);
  EXPECT_EQ(*tok.decode(ids), text);

  // One long piece with no split points at all (BPE cost must stay O(n log n)).
  const std::string one_piece(100000, 'a');
  const auto start_piece = std::chrono::steady_clock::now();
  const std::vector<int32_t> piece_ids = tok.encode(one_piece, false);
  const double piece_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_piece).count();
  std::printf("[ perf     ] encode 100 KB of 'a' (a single piece) -> %zu tokens in %.3f s\n", piece_ids.size(),
              piece_seconds);
  EXPECT_EQ(*tok.decode(piece_ids), one_piece);
}

TEST(TokenizerTiny, LoadsMetadata) {
  REQUIRE_LOADED(tiny());
  const Tokenizer& tok = *tiny().tokenizer;
  EXPECT_EQ(tok.vocab_size(), 4106);
  EXPECT_EQ(tok.bos_id(), 4096);
  EXPECT_EQ(tok.eos_id(), 4098);
  EXPECT_EQ(tok.pad_id(), 4097);
  EXPECT_EQ(tok.find_token("<|startoftext|>"), 4096);
  EXPECT_EQ(tok.find_token("<|endofprompt|>"), 4105);
  for (int32_t id = 4096; id < 4106; ++id) EXPECT_TRUE(tok.is_special(id)) << id;
  EXPECT_FALSE(tok.is_special(4095));
  EXPECT_EQ(tok.end_of_generation_ids(), (std::vector<int32_t>{4098, 4104, 4097}));
}

// The tiny vocabulary is the 4096 lowest o200k ranks, so its BPE equals tiktoken's restricted to those ranks.
TEST(TokenizerTiny, MatchesReferenceBpeOnWordPieces) {
  REQUIRE_LOADED(tiny());
  const TiktokenRanks* ranks = tiktoken();
  ASSERT_NE(ranks, nullptr);
  const Tokenizer& tok = *tiny().tokenizer;
  for (int32_t id = 0; id < 4096; ++id) EXPECT_EQ(tok.token_bytes(id), ranks->bytes_by_rank[id]) << id;
  for (std::string piece : {"hello", " world", " tokenizer", " antidisestablishmentarianism", "你好世界", " Привет"}) {
    EXPECT_EQ(tok.encode(piece, false), reference_bpe(*ranks, piece, 4096)) << piece;
  }
}

TEST(TokenizerTiny, RoundTrips) {
  REQUIRE_LOADED(tiny());
  expect_round_trips(*tiny().tokenizer);
}

TEST(TokenizerTiny, ParseSpecial) {
  REQUIRE_LOADED(tiny());
  const Tokenizer& tok = *tiny().tokenizer;
  const std::vector<int32_t> ids = tok.encode("<|start|>user<|message|>hi<|end|>", true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 4101);
  EXPECT_EQ(ids.back(), 4102);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 4103), ids.end());
  for (int32_t id : tok.encode("<|start|>user<|message|>hi<|end|>", false)) EXPECT_LT(id, 4096);
}

// ---------------------------------------------------------------------------------------------------------------
// StreamDecoder.

TEST(StreamDecoder, HoldsBackSplitEmoji) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::string emoji = "\xF0\x9F\x99\x82";  // U+1F642, 4 bytes
  std::vector<int32_t> byte_ids;
  for (char c : emoji) byte_ids.push_back(*tok.find_token(std::string(1, c)));
  StreamDecoder stream(tok);
  for (size_t i = 0; i < 3; ++i) {
    Expected<std::string> out = stream.push(byte_ids[i]);
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, "") << i;
    EXPECT_EQ(stream.num_pending_bytes(), i + 1);
  }
  Expected<std::string> out = stream.push(byte_ids[3]);
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, emoji);
  EXPECT_EQ(stream.flush(), "");

  // Split after the first two bytes, then ASCII text in the same token as the tail.
  const std::vector<int32_t> head = {byte_ids[0], byte_ids[1]};
  const std::vector<int32_t> tail = tok.encode("\x99\x82 ok", false);
  ASSERT_EQ(*stream.push(head[0]), "");
  ASSERT_EQ(*stream.push(head[1]), "");
  std::string rest;
  for (int32_t id : tail) rest += *stream.push(id);
  EXPECT_EQ(rest, emoji + " ok");
  EXPECT_EQ(stream.num_pending_bytes(), 0u);
}

TEST(StreamDecoder, InvalidSequencesAreEmittedAsIs) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  auto byte_id = [&](uint8_t b) { return *tok.find_token(std::string(1, static_cast<char>(b))); };
  StreamDecoder stream(tok);
  EXPECT_EQ(*stream.push(byte_id(0xF0)), "");
  EXPECT_EQ(*stream.push(byte_id(0x9F)), "");
  EXPECT_EQ(*stream.push(byte_id('a')), "\xF0\x9F" "a");  // 'a' cannot continue the sequence
  EXPECT_EQ(*stream.push(byte_id(0xE0)), "");
  EXPECT_EQ(*stream.push(byte_id(0x80)), "\xE0\x80");  // overlong: E0 needs A0..BF next
  EXPECT_EQ(*stream.push(byte_id(0xFF)), "\xFF");      // never valid
  EXPECT_EQ(*stream.push(byte_id(0x80)), "\x80");      // stray continuation
  EXPECT_EQ(*stream.push(byte_id(0xC3)), "");
  EXPECT_EQ(stream.flush(), "\xC3");  // held bytes come out on flush
  EXPECT_EQ(stream.flush(), "");

  Expected<std::string> bad = stream.push(tok.vocab_size());
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

// Streaming every sample token by token reproduces decode() and never splits a valid character.
TEST(StreamDecoder, MatchesDecodeAndKeepsCharactersWhole) {
  for (const Loaded* loaded : {static_cast<const Loaded*>(&o200k()), &tiny()}) {
    REQUIRE_LOADED(*loaded);
    const Tokenizer& tok = *loaded->tokenizer;
    for (const std::string& s : round_trip_samples()) {
      StreamDecoder stream(tok);
      std::string streamed;
      for (int32_t id : tok.encode(s, true)) {
        Expected<std::string> out = stream.push(id);
        ASSERT_TRUE(out);
        if (valid_utf8(s)) {
          EXPECT_TRUE(valid_utf8(*out)) << "a chunk splits a character";
        }
        streamed += *out;
      }
      streamed += stream.flush();
      EXPECT_EQ(streamed, s);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Load-time validation on small vocabularies built in memory.

struct VocabSpec {
  std::optional<std::string> model = "gpt2";
  std::optional<std::vector<std::string>> tokens;  // mapped text
  std::optional<std::vector<int32_t>> token_types;
  std::optional<std::vector<std::string>> merges;
  std::optional<uint32_t> bos;
  std::optional<uint32_t> eos;

  // 256 byte tokens in mapped form, then "ab", "abc" (merges "a b", "ab c"), then CONTROL "<|x" and "<|xy|>".
  static VocabSpec basic() {
    VocabSpec spec;
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.push_back(mapped_byte(static_cast<uint8_t>(b)));
    tokens.push_back("ab");
    tokens.push_back("abc");
    tokens.push_back(mapped_text(" a"));
    tokens.push_back("<|x");
    tokens.push_back("<|xy|>");
    std::vector<int32_t> types(tokens.size(), static_cast<int32_t>(TokenType::kNormal));
    types[tokens.size() - 2] = static_cast<int32_t>(TokenType::kControl);
    types[tokens.size() - 1] = static_cast<int32_t>(TokenType::kControl);
    spec.tokens = tokens;
    spec.token_types = types;
    spec.merges = std::vector<std::string>{"a b", "ab c", mapped_text(" ") + " a"};
    spec.bos = 259;
    spec.eos = 260;
    return spec;
  }
};

// Serializes the spec; `buffer` must outlive the returned File.
Expected<gguf::File> build_gguf(const VocabSpec& spec, std::vector<uint8_t>* buffer) {
  gguf::Writer writer;
  writer.add_string("general.architecture", "gpt-oss");
  if (spec.model) writer.add_string("tokenizer.ggml.model", *spec.model);
  if (spec.tokens) writer.add_string_array("tokenizer.ggml.tokens", *spec.tokens);
  if (spec.token_types) writer.add_i32_array("tokenizer.ggml.token_type", *spec.token_types);
  if (spec.merges) writer.add_string_array("tokenizer.ggml.merges", *spec.merges);
  if (spec.bos) writer.add_u32("tokenizer.ggml.bos_token_id", *spec.bos);
  if (spec.eos) writer.add_u32("tokenizer.ggml.eos_token_id", *spec.eos);
  writer.open_memory(buffer);
  Status header = writer.write_header();
  if (!header) return header.error();
  Status done = writer.finish();
  if (!done) return done.error();
  return gguf::File::from_memory(*buffer, "vocab.gguf");
}

Expected<Tokenizer> build_tokenizer(const VocabSpec& spec) {
  std::vector<uint8_t> buffer;
  Expected<gguf::File> file = build_gguf(spec, &buffer);
  if (!file) return file.error();
  return Tokenizer::from_gguf(*file);
}

void expect_load_error(const VocabSpec& spec, ErrorCode code, const std::vector<std::string>& message_parts) {
  Expected<Tokenizer> tok = build_tokenizer(spec);
  ASSERT_FALSE(tok) << "expected an error";
  EXPECT_EQ(tok.error().code, code) << tok.error().to_string();
  for (const std::string& part : message_parts) {
    EXPECT_NE(tok.error().message.find(part), std::string::npos)
        << "message lacks '" << part << "': " << tok.error().to_string();
  }
}

TEST(TokenizerSynthetic, BasicVocabulary) {
  Expected<Tokenizer> loaded = build_tokenizer(VocabSpec::basic());
  ASSERT_TRUE(loaded) << loaded.error().to_string();
  const Tokenizer& tok = *loaded;
  EXPECT_EQ(tok.vocab_size(), 261);
  EXPECT_EQ(tok.num_merges(), 3u);
  EXPECT_EQ(tok.bos_id(), 259);
  EXPECT_EQ(tok.eos_id(), 260);
  EXPECT_EQ(tok.pad_id(), std::nullopt);
  EXPECT_EQ(tok.pre_tokenizer_name(), "");
  EXPECT_EQ(tok.token_bytes(' '), " ");         // 'Ġ' decodes to a space
  EXPECT_EQ(tok.token_bytes('\n'), "\n");       // 'Ċ'
  EXPECT_EQ(tok.token_bytes(0xAD), "\xAD");     // soft hyphen, the last shifted byte (U+0143)
  EXPECT_EQ(tok.token_bytes(258), " a");
  EXPECT_EQ(tok.find_token("abc"), 257);
  EXPECT_EQ(tok.encode("abc", false), std::vector<int32_t>{257});
  EXPECT_EQ(tok.encode("abcab", false), (std::vector<int32_t>{257, 256}));
  EXPECT_EQ(tok.encode("cab", false), (std::vector<int32_t>{'c', 256}));
  EXPECT_EQ(tok.encode("x a", false), (std::vector<int32_t>{'x', 258}));
  // Longest special first: "<|xy|>" wins over its prefix "<|x".
  EXPECT_EQ(tok.encode("<|xy|>", true), std::vector<int32_t>{260});
  EXPECT_EQ(tok.encode("<|xz", true), (std::vector<int32_t>{259, 'z'}));
  EXPECT_EQ(tok.encode("<|xy|>", false).size(), 6u);
  EXPECT_TRUE(tok.end_of_generation_ids() == std::vector<int32_t>{260});  // only eos: no harmony tokens here
  expect_round_trips(tok);
}

// The o200k split; expected pieces from the reference regex (gpt-tokenizer's O200K_TOKEN_SPLIT_REGEX in node).
TEST(TokenizerSynthetic, PreSplitPieces) {
  Expected<Tokenizer> tok = build_tokenizer(VocabSpec::basic());
  ASSERT_TRUE(tok) << tok.error().to_string();
  auto pieces = [&](std::string_view text) {
    std::vector<std::string> out;
    for (std::string_view p : tok->pre_split(text)) out.emplace_back(p);
    return out;
  };
  using Pieces = std::vector<std::string>;
  EXPECT_EQ(pieces(""), Pieces{});
  EXPECT_EQ(pieces("hello world"), (Pieces{"hello", " world"}));
  EXPECT_EQ(pieces("a   b "), (Pieces{"a", "  ", " b", " "}));
  EXPECT_EQ(pieces("  x"), (Pieces{" ", " x"}));
  EXPECT_EQ(pieces("one\n\ntwo\r\n three"), (Pieces{"one", "\n\n", "two", "\r\n", " three"}));
  EXPECT_EQ(pieces("I'M don'T we'Ll"), (Pieces{"I'M", " don'T", " we'Ll"}));
  EXPECT_EQ(pieces("12345 3.14"), (Pieces{"123", "45", " ", "3", ".", "14"}));
  EXPECT_EQ(pieces("foo(bar) // x\n\t\ty"), (Pieces{"foo", "(bar", ")", " //", " x", "\n", "\t", "\ty"}));
  EXPECT_EQ(pieces("\xC3\x9C" "berCamelCase HTTPServer"), (Pieces{"\xC3\x9C" "ber", "Camel", "Case", " HTTPServer"}));
  EXPECT_EQ(pieces("  \n  \n x"), (Pieces{"  \n  \n", " x"}));
}

// Invalid UTF-8 (our definition, see tokenizer.h): each byte that is not part of a valid character is a piece of its
// own; the valid text around it is split as usual, no piece crosses it.
TEST(TokenizerSynthetic, InvalidUtf8BytesArePiecesOfTheirOwn) {
  Expected<Tokenizer> tok = build_tokenizer(VocabSpec::basic());
  ASSERT_TRUE(tok) << tok.error().to_string();
  auto pieces = [&](std::string_view text) {
    std::vector<std::string> out;
    for (std::string_view p : tok->pre_split(text)) out.emplace_back(p);
    return out;
  };
  using Pieces = std::vector<std::string>;
  EXPECT_EQ(pieces("ab\xFF" "cd"), (Pieces{"ab", "\xFF", "cd"}));
  EXPECT_EQ(pieces("x \xC3 y"), (Pieces{"x", " ", "\xC3", " y"}));
  EXPECT_EQ(pieces("\xE2\x82" "A"), (Pieces{"\xE2", "\x82", "A"}));           // truncated 3-byte sequence
  EXPECT_EQ(pieces("\xED\xA0\x80"), (Pieces{"\xED", "\xA0", "\x80"}));        // a surrogate
  EXPECT_EQ(pieces("\xC0\xAF"), (Pieces{"\xC0", "\xAF"}));                    // overlong '/'
  EXPECT_EQ(pieces("ok\xF0\x9F\x98"), (Pieces{"ok", "\xF0", "\x9F", "\x98"}));  // emoji cut short at the end
  EXPECT_EQ(tok->encode("\xFF", false), std::vector<int32_t>{0xFF});
}

TEST(TokenizerO200k, InvalidUtf8NeverFailsAndRoundTrips) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes;
    const size_t length = rng() % 300;
    for (size_t i = 0; i < length; ++i) {
      // Mostly ASCII and UTF-8 lead/continuation bytes, so valid and invalid runs interleave.
      const uint32_t r = rng() % 4;
      bytes += static_cast<char>(r == 0 ? 0x20 + rng() % 0x5F : r == 1 ? 0x80 + rng() % 0x40 : rng() & 0xFF);
    }
    for (bool parse_special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(bytes, parse_special);
      EXPECT_EQ(*tok.decode(ids), bytes);
    }
    size_t total = 0;
    for (std::string_view piece : tok.pre_split(bytes)) total += piece.size();
    EXPECT_EQ(total, bytes.size());
  }
  // An invalid byte between two words: the words encode as they would alone.
  const std::vector<int32_t> left = tok.encode("hello", false);
  const std::vector<int32_t> right = tok.encode("world", false);
  std::vector<int32_t> expected = left;
  expected.push_back(*tok.find_token("\xFF"));
  expected.insert(expected.end(), right.begin(), right.end());
  EXPECT_EQ(tok.encode("hello\xFFworld", false), expected);
}

// Very long pieces (a megabyte of spaces, of one letter) go through the heap BPE and the PCRE2 JIT stack fallback.
TEST(TokenizerO200k, VeryLongPieces) {
  REQUIRE_LOADED(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  for (const std::string& text : {std::string(1 << 20, ' '), std::string(1 << 20, 'a'), std::string(1 << 18, '\n') +
                                                                                             std::string(1 << 18, '\t')}) {
    const std::vector<int32_t> ids = tok.encode(text, false);
    EXPECT_LT(ids.size(), text.size() / 2);
    EXPECT_EQ(*tok.decode(ids), text);
  }
}

// The cache of long-piece results never changes the ids, and encode() is safe from several threads at once.
TEST(TokenizerO200k, PieceCacheAndThreadsDoNotChangeIds) {
  REQUIRE_LOADED(o200k());
  Tokenizer& tok = *o200k().tokenizer;
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) {
    texts.push_back(std::string(60 + i * 7, ' ') + "word" + std::string(100 + i, '\n') + "x" +
                    std::string(50 + i, 'z') + " antidisestablishmentarianismantidisestablishmentarianism");
  }
  tok.set_piece_cache_capacity(0);
  std::vector<std::vector<int32_t>> uncached;
  for (const std::string& t : texts) uncached.push_back(tok.encode(t, false));
  tok.set_piece_cache_capacity(Tokenizer::kDefaultPieceCacheBytes);
  std::vector<std::thread> threads;
  std::atomic<int> num_differences{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int pass = 0; pass < 3; ++pass) {
        for (size_t i = 0; i < texts.size(); ++i) num_differences += tok.encode(texts[i], false) != uncached[i];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(num_differences.load(), 0);
  tok.set_piece_cache_capacity(1000);  // smaller than most pieces: nothing cached, same ids
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(tok.encode(texts[i], false), uncached[i]);
  tok.set_piece_cache_capacity(Tokenizer::kDefaultPieceCacheBytes);
}

// Without merges, BPE leaves bytes; a piece that is itself a token still becomes that token (as in tiktoken).
TEST(TokenizerSynthetic, EmptyOrAbsentMergesGiveByteTokens) {
  VocabSpec spec = VocabSpec::basic();
  spec.merges = std::vector<std::string>{};
  Expected<Tokenizer> tok = build_tokenizer(spec);
  ASSERT_TRUE(tok) << tok.error().to_string();
  EXPECT_EQ(tok->encode("abcab", false), (std::vector<int32_t>{'a', 'b', 'c', 'a', 'b'}));
  EXPECT_EQ(tok->encode("abc", false), std::vector<int32_t>{257});
  spec.merges.reset();
  Expected<Tokenizer> no_merges = build_tokenizer(spec);
  ASSERT_TRUE(no_merges) << no_merges.error().to_string();
  EXPECT_EQ(no_merges->num_merges(), 0u);
}

TEST(TokenizerSynthetic, RejectsUnsupportedModel) {
  VocabSpec spec = VocabSpec::basic();
  spec.model = "llama";
  expect_load_error(spec, ErrorCode::kUnsupported, {"llama", "tokenizer.ggml.model"});
}

TEST(TokenizerSynthetic, RejectsMissingKeys) {
  VocabSpec no_model = VocabSpec::basic();
  no_model.model.reset();
  expect_load_error(no_model, ErrorCode::kMissing, {});
  VocabSpec no_tokens = VocabSpec::basic();
  no_tokens.tokens.reset();
  expect_load_error(no_tokens, ErrorCode::kMissing, {});
  VocabSpec no_types = VocabSpec::basic();
  no_types.token_types.reset();
  expect_load_error(no_types, ErrorCode::kMissing, {});
}

TEST(TokenizerSynthetic, RejectsTokenTypeLengthMismatch) {
  VocabSpec spec = VocabSpec::basic();
  spec.token_types->pop_back();
  expect_load_error(spec, ErrorCode::kFormat, {"tokenizer.ggml.token_type", "260", "261"});
}

TEST(TokenizerSynthetic, RejectsBadTokenTypeValue) {
  VocabSpec spec = VocabSpec::basic();
  (*spec.token_types)[7] = 9;
  expect_load_error(spec, ErrorCode::kFormat, {"token 7", "type 9"});
}

TEST(TokenizerSynthetic, RejectsMergeWithMissingToken) {
  VocabSpec spec = VocabSpec::basic();
  spec.merges->push_back("a zz");
  expect_load_error(spec, ErrorCode::kFormat, {"merge 3", "\"a zz\"", "\"zz\" is not a token"});
}

TEST(TokenizerSynthetic, RejectsMergeWhoseResultIsNotAToken) {
  VocabSpec spec = VocabSpec::basic();
  spec.merges->insert(spec.merges->begin(), "b a");
  expect_load_error(spec, ErrorCode::kFormat, {"merge 0", "\"ba\" is not a token"});
}

TEST(TokenizerSynthetic, RejectsMalformedMerge) {
  for (std::string bad : {"ab", "a ", " a", ""}) {
    VocabSpec spec = VocabSpec::basic();
    spec.merges->push_back(bad);
    expect_load_error(spec, ErrorCode::kFormat, {"merge 3"});
  }
}

TEST(TokenizerSynthetic, RejectsMissingByteToken) {
  VocabSpec spec = VocabSpec::basic();
  (*spec.tokens)[0x41] = "A-is-gone";  // no token for byte 'A' any more
  expect_load_error(spec, ErrorCode::kFormat, {"byte 0x41"});
}

TEST(TokenizerSynthetic, RejectsOutOfRangeSpecialIds) {
  VocabSpec spec = VocabSpec::basic();
  spec.bos = 261;
  expect_load_error(spec, ErrorCode::kFormat, {"tokenizer.ggml.bos_token_id", "261"});
  spec = VocabSpec::basic();
  spec.eos = 1000000;
  expect_load_error(spec, ErrorCode::kFormat, {"tokenizer.ggml.eos_token_id"});
}

TEST(TokenizerSynthetic, RejectsTooFewTokens) {
  VocabSpec spec = VocabSpec::basic();
  spec.tokens->resize(100);
  spec.token_types->resize(100);
  spec.merges = std::vector<std::string>{};
  spec.bos.reset();
  spec.eos.reset();
  expect_load_error(spec, ErrorCode::kFormat, {"100 tokens"});
}

}  // namespace
}  // namespace hetmoe
