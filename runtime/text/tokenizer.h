#pragma once
// Byte-level BPE tokenizer over a GGUF vocabulary (tokenizer.ggml.model = "gpt2"), as used by gpt-oss (o200k).
//
// GGUF keys read (gpt-oss-spec.md §5):
//   tokenizer.ggml.model       STRING        must be "gpt2" (else kUnsupported)
//   tokenizer.ggml.pre         STRING        optional; kept for information (pre_tokenizer_name())
//   tokenizer.ggml.tokens      STRING[n]     n = vocab size, 256 <= n < 2^31; token text in GPT-2's byte->unicode form
//   tokenizer.ggml.token_type  INT32[n]      TokenType values 0..6, same length as tokens (else kFormat)
//   tokenizer.ggml.merges      STRING[m]     "A B", rank = index; may be empty or absent
//   tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id   UINT32, optional, < n (else kFormat)
//
// Byte mapping: GPT-2's bytes_to_unicode() (openai/gpt-2, src/encoder.py). The 188 printable latin-1 bytes
// ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to the code point of the same value; the other 68 bytes (0x00..0x20,
// 0x7F..0xA0, 0xAD), in increasing order, map to U+0100..U+0143 (so ' ' is 'Ġ' U+0120, '\n' is 'Ċ' U+010A). Every token
// text is decoded back to raw bytes at load time. CONTROL and USER_DEFINED tokens, and any token whose text is not
// valid UTF-8 made only of mapped code points, keep their literal text as their bytes (for `<|start|>` both agree).
//
// Encoding pipeline (encode()), equal to tiktoken's o200k encoder (checked against the npm package gpt-tokenizer on
// a golden corpus, tests/data/tokenizer-golden/):
//   1. special-token split (parse_special only): CONTROL tokens matched by their literal text, longest first;
//   2. pre-split of the ordinary text into pieces with the o200k regex (pre_split(); PCRE2, UTF-8, JIT);
//   3. a piece that is itself an ordinary token becomes that token (as tiktoken does); any other piece goes through
//      byte-level BPE: one token per byte, then repeatedly merge the adjacent pair with the lowest merge rank
//      (leftmost first among equal ranks), O(n log n) in the piece length.
//
// Invalid UTF-8 (this tokenizer's definition; tiktoken takes only valid text): the regex matches valid UTF-8 only
// (PCRE2_MATCH_INVALID_UTF), so every byte that is not part of a valid UTF-8 character is a piece of its own and
// becomes its single-byte token; the valid text between such bytes is split as if they were not there, except that
// no piece crosses them. encode() never fails and decode(encode(s)) == s for every byte string.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"

namespace hetmoe {

/// llama.cpp's token types, as stored in tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens (`<|start|>`, `<|return|>`, reserved ...): matched by parse_special
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

/// An immutable vocabulary plus merge table; encode/decode are const and safe to call from several threads.
/// Move-only (its lookup tables point into its own byte storage).
class Tokenizer {
 public:
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  /// Builds the tokenizer from a GGUF file's tokenizer.ggml.* metadata (keys above). The File may be closed
  /// afterwards: everything needed is copied. Errors:
  ///   kUnsupported  tokenizer.ggml.model is not "gpt2" (the message names the value);
  ///   kMissing      tokens or token_type or model absent;
  ///   kUnsupported  also when the pre-tokenizer regex does not compile (a PCRE2 built without Unicode support);
  ///   kFormat       wrong value types, token_type length != tokens length, a token_type outside 0..6, fewer than
  ///                 256 or 2^31 or more tokens, a byte 0x00..0xFF with no single-byte non-control token, a merge
  ///                 that is not "A B" with A, B and AB all tokens and bytes(A)+bytes(B) == bytes(AB) (the message
  ///                 names the merge index and text), a bos/eos/padding id >= vocab size.
  static Expected<Tokenizer> from_gguf(const gguf::File& file);

  /// Token ids for `text` (arbitrary bytes; need not be valid UTF-8). With parse_special, the literal text of a
  /// CONTROL token becomes that token's id (longest match first at each position); without it, that text is
  /// ordinary text. No BOS is added. decode(encode(s, false)) == s for every byte string s.
  std::vector<int32_t> encode(std::string_view text, bool parse_special) const;

  /// The pre-tokenizer step: splits ordinary text (no special tokens) into the pieces that BPE encodes
  /// independently; the pieces are views into `text` and concatenate to it. The o200k pattern
  /// (gpt-oss-spec.md §5) with the semantics of the JavaScript reference (gpt-tokenizer): `\s` is JavaScript's white
  /// space set (it includes U+FEFF and excludes U+0085, unlike Rust tiktoken's White_Space), and the contraction
  /// suffixes match ASCII letters of either case only ('s, 'S, 'Ll, ...; not U+017F). Unicode properties come from
  /// PCRE2's tables (Unicode 14 for PCRE2 10.42); letters added to Unicode later are punctuation here. Bytes that
  /// are not valid UTF-8 are one piece each. Used by encode(); exposed for tests and tools.
  std::vector<std::string_view> pre_split(std::string_view text) const;

  /// Concatenated raw bytes of `ids` (special tokens give their literal text). Errors: kInvalidArgument naming the
  /// position and the id if an id is < 0 or >= vocab_size(); nothing is returned then.
  Expected<std::string> decode(std::span<const int32_t> ids) const;

  /// Raw bytes of token `id`; an empty view if id is out of range.
  std::string_view token_bytes(int32_t id) const;
  /// Number of tokens (the length of tokenizer.ggml.tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(token_offsets_.size()) - 1; }
  /// Token type of `id` (kUndefined if out of range).
  TokenType token_type(int32_t id) const;
  /// True for CONTROL tokens (the ones parse_special matches); false for out-of-range ids.
  bool is_special(int32_t id) const { return token_type(id) == TokenType::kControl; }
  /// The id of the token whose raw bytes are `bytes` (lowest id if several), or nullopt.
  /// For harmony's special tokens: find_token("<|start|>") is its id in any vocabulary.
  std::optional<int32_t> find_token(std::string_view bytes) const;

  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }
  /// tokenizer.ggml.pre ("gpt-4o" for gpt-oss; empty if absent). For information only: every vocabulary is split
  /// with the o200k pattern (pre_split()), the only one gpt-oss uses.
  const std::string& pre_tokenizer_name() const { return pre_name_; }
  /// Number of merges (rank = index in tokenizer.ggml.merges).
  size_t num_merges() const { return num_merges_; }

  /// Default capacity of the cache of long-piece BPE results (set_piece_cache_capacity()).
  static constexpr size_t kDefaultPieceCacheBytes = size_t{8} << 20;
  /// Bounds the cache that keeps the BPE result of every piece longer than 48 bytes (in bytes of cached pieces;
  /// 0 turns it off) and empties it. The ids never depend on it. Thread-safe.
  void set_piece_cache_capacity(size_t num_bytes);

  /// Ids that end a generated turn: the CONTROL tokens `<|return|>`, `<|call|>`, `<|endoftext|>` present in the
  /// vocabulary, in that order, then eos_id() if set and not already listed. `<|end|>` is not one (it ends a
  /// message, not the turn). May be empty.
  std::vector<int32_t> end_of_generation_ids() const;

 private:
  Tokenizer() = default;

  // Open-addressing hash table (linear probing) from a token pair to (rank, merged id).
  struct MergeSlot {
    uint64_t key = kEmptyKey;  // (uint64(left id) << 32) | right id
    uint32_t rank = 0;
    int32_t merged_id = 0;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  const MergeSlot* find_merge(int32_t left_id, int32_t right_id) const;
  void insert_merge(int32_t left_id, int32_t right_id, uint32_t rank, int32_t merged_id);

  struct BpeScratch;
  template <typename PieceFn>
  void for_each_piece(std::string_view text, BpeScratch* scratch, PieceFn&& on_piece) const;
  void encode_ordinary(std::string_view text, BpeScratch* scratch, std::vector<int32_t>* out) const;
  void encode_piece(std::string_view piece, BpeScratch* scratch, std::vector<int32_t>* out) const;
  // Pieces up to this many bytes take the array-based BPE (no heap); longer ones the O(n log n) heap-based one.
  static constexpr size_t kMaxLinearPiece = 48;
  void encode_short_piece(std::string_view piece, std::vector<int32_t>* out) const;
  void encode_long_piece(std::string_view piece, BpeScratch* scratch, std::vector<int32_t>* out) const;
  // The non-CONTROL token of two or more bytes whose bytes are `bytes`, or -1.
  int32_t find_ordinary_token(std::string_view bytes) const;

  std::vector<char> token_blob_;          // (sum of token byte lengths) raw bytes of all tokens, back to back
  std::vector<uint32_t> token_offsets_;   // (vocab_size + 1) token i is blob[offsets[i], offsets[i + 1])
  std::vector<TokenType> token_types_;    // (vocab_size)
  std::unordered_map<std::string_view, int32_t> id_by_bytes_;  // views into token_blob_; lowest id per bytes
  // Open-addressing table (linear probing) of the non-CONTROL tokens of two or more bytes, lowest id per bytes: a
  // piece found here is encoded as that one token.
  struct OrdinarySlot {
    uint32_t tag = 0;  // high 32 bits of the bytes' hash
    int32_t id = -1;   // -1: empty
  };
  std::vector<OrdinarySlot> ordinary_table_;  // capacity: power of two >= 2 * vocab_size
  std::array<int32_t, 256> byte_token_{};  // single-byte token id for each byte value

  std::vector<MergeSlot> merge_table_;  // capacity: power of two >= 2 * num_merges_ (at least 1)
  size_t num_merges_ = 0;

  // CONTROL tokens by literal text, for parse_special.
  std::unordered_map<std::string_view, int32_t> special_by_text_;  // views into token_blob_
  std::vector<size_t> special_lengths_;   // distinct lengths of CONTROL token texts, longest first
  std::array<bool, 256> special_first_byte_{};  // whether some CONTROL token starts with this byte

  // The o200k pre-tokenizer pattern, compiled (and JIT-compiled where PCRE2 supports it) once; shared read-only by
  // all encode() calls. Opaque here so that users of this header need no PCRE2.
  struct PreSplitRegex;
  struct PreSplitRegexDeleter {
    void operator()(PreSplitRegex* regex) const;
  };
  std::unique_ptr<PreSplitRegex, PreSplitRegexDeleter> regex_;

  // BPE results of pieces longer than kMaxLinearPiece (long white space runs, long words), shared by all calls
  // under a mutex; cleared when full.
  struct PieceCache;
  struct PieceCacheDeleter {
    void operator()(PieceCache* cache) const;
  };
  std::unique_ptr<PieceCache, PieceCacheDeleter> piece_cache_;

  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> pad_id_;
  std::string pre_name_;
};

/// Incremental detokenizer for streaming output: push() ids one at a time and print what it returns. It never
/// returns half of a UTF-8 character: an incomplete multi-byte sequence at the end of the pending bytes is held
/// back until it is completed, or until it becomes provably invalid (a byte that cannot continue it), and then it
/// is emitted as is (invalid bytes are passed through, not replaced). Concatenating every push() result and
/// flush() gives exactly decode(ids). The Tokenizer must outlive the StreamDecoder.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  /// Appends token `id` and returns the bytes that are now safe to emit (possibly empty). Errors:
  /// kInvalidArgument for an id outside the vocabulary (the decoder state is unchanged).
  Expected<std::string> push(int32_t id);
  /// Returns whatever is held back (an incomplete trailing sequence, as is) and clears it.
  std::string flush();
  /// Number of bytes currently held back (0..3).
  size_t num_pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;  // an incomplete UTF-8 sequence held back from the previous push
};

}  // namespace hetmoe
