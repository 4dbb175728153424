#pragma once
// tiktoken rank files (`.tiktoken`) and their conversion to GGUF byte-level BPE vocabularies.
//
// A `.tiktoken` file has one line per token: `base64(token bytes) SP rank LF` (e.g. "IQ== 0" is the token "!" with
// rank 0). Ranks are the BPE merge priorities: lower merges first. o200k_base has 199,998 ranks (0..199997).
//
// GGUF (tokenizer.ggml.model = "gpt2") stores token texts through GPT-2's byte->unicode table and merges as
// "A B" strings whose index is the merge rank. tiktoken has no merge list: the merge that forms the token of rank r
// is found by running byte-level BPE on that token's bytes with only the ranks below r; the two parts that remain
// are the merge's sides. Merges are ordered by the rank of the token they form (o200k gives 199,742 merges: one per
// multi-byte token).

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::tiktoken {

/// Reads a `.tiktoken` file. Returns the token byte strings indexed by rank (element r = the token of rank r).
/// Blank lines are skipped and a trailing '\r' is ignored; everything else is validated. Errors: kIo if the file
/// cannot be read; kFormat ("PATH:LINE: ...") for a line that is not "BASE64 RANK", invalid base64 (bad character,
/// length not a multiple of 4, misplaced '='), an empty token, a rank that is not a decimal number below 2^31, a
/// duplicate rank or duplicate token bytes (naming both lines), and ("PATH: rank R is missing") when the ranks are
/// not exactly 0..N-1.
Expected<std::vector<std::string>> load_ranks(const std::string& path);

/// As load_ranks(), from text already in memory; `name` stands for the path in error messages.
Expected<std::vector<std::string>> parse_ranks(std::string_view text, std::string_view name);

/// Strict standard base64 (RFC 4648 alphabet, '=' padding required, no whitespace); nullopt if invalid.
std::optional<std::string> base64_decode(std::string_view text);

/// GPT-2 byte-level text of raw bytes: the 188 printable latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to the
/// code point of the same value, the other 68 bytes in increasing order to U+0100..U+0143 (' ' -> 'Ġ' U+0120,
/// '\n' -> 'Ċ' U+010A); the result is UTF-8.
std::string byte_level_encode(std::string_view bytes);

/// Inverse of byte_level_encode(); nullopt if `text` is not valid UTF-8 made only of the 256 mapped code points.
std::optional<std::string> byte_level_decode(std::string_view text);

/// The 256 byte values in the order of their byte-level code points (printable latin-1 first, then the 68
/// remapped bytes). This is the rank order of the single-byte tokens in o200k_base and cl100k_base.
std::span<const uint8_t, 256> byte_level_order();

/// A growing table of tokens (raw bytes) with ranks 0..size()-1, and tiktoken's byte-level BPE over it.
class RankTable {
 public:
  RankTable() = default;
  /// Tokens of ranks 0..tokens.size()-1. Duplicates keep the lower rank.
  explicit RankTable(std::span<const std::string> tokens_by_rank);

  /// Appends `bytes` with rank size(); returns false (and adds nothing) if it is already present.
  bool add(std::string bytes);
  /// The rank of `bytes`, or nullopt.
  std::optional<uint32_t> find(std::string_view bytes) const;
  uint32_t size() const { return static_cast<uint32_t>(tokens_.size()); }
  /// Bytes of the token of `rank` (rank < size()).
  const std::string& token(uint32_t rank) const { return tokens_[rank]; }

  /// tiktoken's byte-pair merge of `bytes`, using only tokens with rank < rank_limit: start from single bytes and
  /// repeatedly merge the adjacent pair whose concatenation has the lowest rank (leftmost on equal ranks) until no
  /// pair's concatenation is a token below rank_limit. Returns the byte lengths of the final parts, in order
  /// (they sum to bytes.size()). Parts of one byte may have no rank.
  std::vector<uint32_t> merge_parts(std::string_view bytes, uint32_t rank_limit) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> tokens_;  // (size) bytes by rank
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> rank_by_bytes_;
};

/// One merge: the tokens of ranks left_rank and right_rank, concatenated, form the token of merged_rank.
struct Merge {
  uint32_t left_rank = 0;
  uint32_t right_rank = 0;
  uint32_t merged_rank = 0;
};

/// Derives the merge list of a vocabulary given by rank (tokens_by_rank[r] = bytes of rank r): for each token of
/// two or more bytes, in rank order, the two parts that RankTable::merge_parts(token, r) leaves. Errors: kFormat
/// naming the rank and the token (in byte-level text) if that BPE does not end in exactly two ranked parts (a byte
/// with no single-byte token below r, or a token that no single merge of lower-ranked tokens produces).
Expected<std::vector<Merge>> derive_merges(std::span<const std::string> tokens_by_rank);

/// The GGUF merge string "A B" (both sides in byte-level text) for `merge` over tokens_by_rank.
std::string merge_text(std::span<const std::string> tokens_by_rank, const Merge& merge);

}  // namespace hetmoe::tiktoken
