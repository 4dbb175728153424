#include "runtime/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <utility>

namespace hetmoe {
namespace {

constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kKeyTokenType = "tokenizer.ggml.token_type";
constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";
constexpr std::string_view kKeyBos = "tokenizer.ggml.bos_token_id";
constexpr std::string_view kKeyEos = "tokenizer.ggml.eos_token_id";
constexpr std::string_view kKeyPad = "tokenizer.ggml.padding_token_id";

constexpr int32_t kMaxTokenType = static_cast<int32_t>(TokenType::kByte);
constexpr uint32_t kNumMappedCodePoints = 0x144;  // GPT-2's mapping uses U+0000..U+0143

// The o200k pre-tokenizer (gpt-oss-spec.md §5) in PCRE2 syntax, with JavaScript's meaning of \s spelled out as the
// class S below (ECMAScript WhiteSpace + LineTerminator: it has U+FEFF and lacks U+0085), as in the reference
// encoder gpt-tokenizer. Alternatives, tried in order at each position:
//   1. an optional non-letter/non-digit/non-newline, then upper/title/modifier/other letters or marks, then at least
//      one lower/modifier/other letter or mark, then an optional contraction ('s 't 're 've 'm 'll 'd, any case);
//   2. the same with the upper-case run required and the lower-case run optional (ALL-CAPS words);
//   3. one to three digits;
//   4. an optional space, a run of characters that are not S, letters or digits, then any \r, \n or '/';
//   5. white space ending in a run of newlines;  6. white space not followed by a non-space;  7. any white space.
std::string pre_split_pattern() {
  const std::string space =
      "\\t\\n\\x0B\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";
  const std::string contraction = "(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?";
  const std::string upper = "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]";
  const std::string lower = "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]";
  const std::string lead = "[^\\r\\n\\p{L}\\p{N}]?";
  return lead + upper + "*" + lower + "+" + contraction +        // 1
         "|" + lead + upper + "+" + lower + "*" + contraction +  // 2
         "|\\p{N}{1,3}" +                                        // 3
         "| ?[^" + space + "\\p{L}\\p{N}]+[\\r\\n/]*" +          // 4
         "|[" + space + "]*[\\r\\n]+" +                          // 5
         "|[" + space + "]+(?![^" + space + "])" +               // 6
         "|[" + space + "]+";                                    // 7
}

// GPT-2 bytes_to_unicode() inverted: code point (< 0x144) -> byte, or -1 where the code point is not an image.
struct ByteMapping {
  std::array<int16_t, kNumMappedCodePoints> byte_of_code_point{};

  ByteMapping() {
    byte_of_code_point.fill(-1);
    uint32_t num_shifted = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t code_point = printable ? b : 0x100 + num_shifted++;
      byte_of_code_point[code_point] = static_cast<int16_t>(b);
    }
  }
};

const ByteMapping& byte_mapping() {
  static const ByteMapping mapping;
  return mapping;
}

// Decodes GPT-2-mapped token text into raw bytes; false if the text is not valid UTF-8 made only of mapped code
// points (then `out` is unspecified). Mapped code points are below U+0144, so only 1- and 2-byte sequences occur.
bool unmap_token_text(std::string_view text, std::string* out) {
  const ByteMapping& mapping = byte_mapping();
  out->clear();
  for (size_t i = 0; i < text.size();) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    uint32_t code_point = 0;
    if (b0 < 0x80) {
      code_point = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < text.size() && (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80) {
      code_point = ((b0 & 0x1Fu) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu);
      if (code_point < 0x80) return false;  // overlong
      i += 2;
    } else {
      return false;
    }
    if (code_point >= kNumMappedCodePoints || mapping.byte_of_code_point[code_point] < 0) return false;
    out->push_back(static_cast<char>(mapping.byte_of_code_point[code_point]));
  }
  return true;
}

// `text` in double quotes for error messages, control bytes, '"' and '\' escaped; at most 64 bytes shown.
std::string quoted(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "\"";
  for (size_t i = 0; i < std::min(text.size(), kMaxShown); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    if (b < 0x20 || b == 0x7F || b == '"' || b == '\\') {
      s += "\\x";
      s += kHex[b >> 4];
      s += kHex[b & 0xF];
    } else {
      s += static_cast<char>(b);
    }
  }
  if (text.size() > kMaxShown) s += "...";
  s += '"';
  return s;
}

Error key_error(const gguf::File& file, ErrorCode code, std::string_view key, const std::string& what) {
  const gguf::KeyValue* kv = file.find(key);
  std::optional<uint64_t> offset;
  if (kv != nullptr) offset = kv->file_offset;
  return make_error(code, file.path() + ": " + std::string(key) + ": " + what, offset);
}

// An optional token id key: nullopt if absent; kFormat if present but not an id below num_tokens.
Expected<std::optional<int32_t>> read_optional_id(const gguf::File& file, std::string_view key, size_t num_tokens) {
  if (file.find(key) == nullptr) return std::optional<int32_t>{};
  Expected<uint32_t> id = file.get_u32(key);
  if (!id) return id.error();
  if (*id >= num_tokens) {
    return key_error(file, ErrorCode::kFormat, key,
                     "id " + std::to_string(*id) + " is not below the vocabulary size " + std::to_string(num_tokens));
  }
  return std::optional<int32_t>{static_cast<int32_t>(*id)};
}

// Expected length of a UTF-8 sequence from its lead byte; 0 for a byte that cannot start a multi-byte sequence.
size_t utf8_sequence_length(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `second` may follow `lead` in a valid sequence (excludes overlongs, surrogates and > U+10FFFF).
bool utf8_second_byte_ok(uint8_t lead, uint8_t second) {
  switch (lead) {
    case 0xE0: return second >= 0xA0 && second <= 0xBF;
    case 0xED: return second >= 0x80 && second <= 0x9F;
    case 0xF0: return second >= 0x90 && second <= 0xBF;
    case 0xF4: return second >= 0x80 && second <= 0x8F;
    default: return second >= 0x80 && second <= 0xBF;
  }
}

// Start of an incomplete but so-far valid UTF-8 sequence at the end of `bytes`, or bytes.size() if there is none.
size_t incomplete_tail_start(std::string_view bytes) {
  const size_t n = bytes.size();
  for (size_t k = 1; k <= std::min<size_t>(3, n); ++k) {
    const auto b = static_cast<uint8_t>(bytes[n - k]);
    if ((b & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    const size_t length = utf8_sequence_length(b);
    if (length == 0 || k >= length) return n;  // ASCII, an invalid lead, or complete (or overlong run)
    if (k >= 2 && !utf8_second_byte_ok(b, static_cast<uint8_t>(bytes[n - k + 1]))) return n;
    return n - k;
  }
  return n;
}

uint64_t pair_key(int32_t left_id, int32_t right_id) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left_id)) << 32) | static_cast<uint32_t>(right_id);
}

size_t pair_hash(uint64_t key, size_t mask) {
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

// 64-bit hash of a byte string, 8 bytes per step (multiply-xorshift mixing).
uint64_t bytes_hash(std::string_view bytes) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ bytes.size();
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = (h ^ word) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  if (i < bytes.size()) {
    uint64_t word = 0;
    std::memcpy(&word, bytes.data() + i, bytes.size() - i);
    h = (h ^ word) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  h *= 0x94D049BB133111EBull;
  return h ^ (h >> 29);
}

}  // namespace

struct Tokenizer::PieceCache {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view bytes) const { return static_cast<size_t>(bytes_hash(bytes)); }
  };
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> ids_by_piece;
  size_t num_bytes = 0;  // sum of the cached pieces' lengths
  size_t capacity_bytes = kDefaultPieceCacheBytes;
};

void Tokenizer::PieceCacheDeleter::operator()(PieceCache* cache) const { delete cache; }

struct Tokenizer::PreSplitRegex {
  pcre2_code* code = nullptr;
  bool jit = false;  // JIT-compiled (pcre2_jit_match may be used)
};

void Tokenizer::PreSplitRegexDeleter::operator()(PreSplitRegex* regex) const {
  if (regex == nullptr) return;
  pcre2_code_free(regex->code);
  delete regex;
}

// Reused buffers of one encode() call.
struct Tokenizer::BpeScratch {
  struct Symbol {
    int32_t id;         // current token; -1 once merged into its left neighbour
    int32_t prev;       // index of the previous live symbol, -1 at the start
    int32_t next;       // index of the next live symbol, -1 at the end
    uint32_t rank;      // merge rank of (this, next), kNoMerge if none: a queued entry with another rank is stale
    int32_t merged_id;  // the token (this, next) merges into
  };
  static constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
  // Queue entry: (rank << 32) | left symbol index, so the smallest key is the lowest rank, leftmost on ties.
  static uint64_t entry(uint32_t rank, int32_t left_idx) {
    return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(left_idx);
  }

  std::vector<Symbol> symbols;  // (piece length)
  std::vector<uint64_t> heap;   // min-heap of entries

  // PCRE2 match state of this call (one ovector pair); the JIT stack only if the default one was too small.
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* match_context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  BpeScratch() = default;
  BpeScratch(const BpeScratch&) = delete;
  BpeScratch& operator=(const BpeScratch&) = delete;
  ~BpeScratch() {
    pcre2_match_data_free(match_data);
    pcre2_match_context_free(match_context);
    pcre2_jit_stack_free(jit_stack);
  }
};

Expected<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  Expected<std::string_view> model = file.get_string(kKeyModel);
  if (!model) return model.error();
  if (*model != "gpt2") {
    return key_error(file, ErrorCode::kUnsupported, kKeyModel,
                     "tokenizer model " + quoted(*model) + " is not supported (only \"gpt2\", byte-level BPE)");
  }

  Tokenizer tok;
  tok.piece_cache_.reset(new PieceCache);
  if (file.find(kKeyPre) != nullptr) {
    Expected<std::string_view> pre = file.get_string(kKeyPre);
    if (!pre) return pre.error();
    tok.pre_name_ = std::string(*pre);
  }

  {
    const std::string pattern = pre_split_pattern();
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error_code, message.data(), message.size());
      return make_error(ErrorCode::kUnsupported, "the o200k pre-tokenizer regex does not compile with this PCRE2 (" +
                                                     std::string(reinterpret_cast<const char*>(message.data())) +
                                                     " at offset " + std::to_string(error_offset) + ")");
    }
    tok.regex_.reset(new PreSplitRegex{code, pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0});
  }

  Expected<std::span<const std::string_view>> tokens = file.get_string_array(kKeyTokens);
  if (!tokens) return tokens.error();
  const size_t num_tokens = tokens->size();
  if (num_tokens < 256 || num_tokens >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return key_error(file, ErrorCode::kFormat, kKeyTokens,
                     std::to_string(num_tokens) + " tokens; expected 256 .. 2^31-2 (every byte needs a token)");
  }

  Expected<std::vector<int32_t>> types = file.get_i32_array(kKeyTokenType);
  if (!types) return types.error();
  if (types->size() != num_tokens) {
    return key_error(file, ErrorCode::kFormat, kKeyTokenType,
                     std::to_string(types->size()) + " entries; expected one per token (" +
                         std::to_string(num_tokens) + ")");
  }
  tok.token_types_.resize(num_tokens);
  for (size_t i = 0; i < num_tokens; ++i) {
    const int32_t t = (*types)[i];
    if (t < 0 || t > kMaxTokenType) {
      return key_error(file, ErrorCode::kFormat, kKeyTokenType,
                       "token " + std::to_string(i) + " has type " + std::to_string(t) + "; expected 0..6");
    }
    tok.token_types_[i] = static_cast<TokenType>(t);
  }

  // Raw bytes of every token.
  tok.token_offsets_.reserve(num_tokens + 1);
  tok.token_offsets_.push_back(0);
  std::string bytes;
  for (size_t i = 0; i < num_tokens; ++i) {
    const std::string_view text = (*tokens)[i];
    const TokenType type = tok.token_types_[i];
    const bool literal = type == TokenType::kControl || type == TokenType::kUserDefined;
    if (literal || !unmap_token_text(text, &bytes)) bytes.assign(text);
    if (tok.token_blob_.size() + bytes.size() > std::numeric_limits<uint32_t>::max()) {
      return key_error(file, ErrorCode::kFormat, kKeyTokens, "token texts exceed 4 GiB in total");
    }
    tok.token_blob_.insert(tok.token_blob_.end(), bytes.begin(), bytes.end());
    tok.token_offsets_.push_back(static_cast<uint32_t>(tok.token_blob_.size()));
  }
  tok.id_by_bytes_.reserve(num_tokens);
  tok.byte_token_.fill(-1);
  for (size_t i = 0; i < num_tokens; ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string_view b = tok.token_bytes(id);
    tok.id_by_bytes_.emplace(b, id);
    if (b.size() == 1 && tok.token_types_[i] != TokenType::kControl) {
      int32_t& slot = tok.byte_token_[static_cast<uint8_t>(b[0])];
      if (slot < 0) slot = id;
    }
    if (tok.token_types_[i] == TokenType::kControl && !b.empty()) {
      tok.special_by_text_.emplace(b, id);
      tok.special_first_byte_[static_cast<uint8_t>(b[0])] = true;
      if (std::find(tok.special_lengths_.begin(), tok.special_lengths_.end(), b.size()) == tok.special_lengths_.end()) {
        tok.special_lengths_.push_back(b.size());
      }
    }
  }
  std::sort(tok.special_lengths_.begin(), tok.special_lengths_.end(), std::greater<>());
  tok.ordinary_table_.assign(std::bit_ceil(2 * num_tokens), OrdinarySlot{});
  for (size_t i = 0; i < num_tokens; ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string_view b = tok.token_bytes(id);
    if (tok.token_types_[i] == TokenType::kControl || b.size() < 2 || tok.find_ordinary_token(b) >= 0) continue;
    const uint64_t hash = bytes_hash(b);
    const size_t mask = tok.ordinary_table_.size() - 1;
    size_t slot_idx = static_cast<size_t>(hash) & mask;
    while (tok.ordinary_table_[slot_idx].id >= 0) slot_idx = (slot_idx + 1) & mask;
    tok.ordinary_table_[slot_idx] = OrdinarySlot{static_cast<uint32_t>(hash >> 32), id};
  }
  for (uint32_t b = 0; b < 256; ++b) {
    if (tok.byte_token_[b] < 0) {
      return key_error(file, ErrorCode::kFormat, kKeyTokens,
                       "byte 0x" + std::string(1, "0123456789abcdef"[b >> 4]) + "0123456789abcdef"[b & 0xF] +
                           " has no single-byte token; byte-level BPE needs all 256");
    }
  }

  // Merges: "A B" in mapped text, rank = index.
  std::span<const std::string_view> merges;
  if (file.find(kKeyMerges) != nullptr) {
    Expected<std::span<const std::string_view>> m = file.get_string_array(kKeyMerges);
    if (!m) return m.error();
    merges = *m;
  }
  if (merges.size() >= std::numeric_limits<uint32_t>::max() / 4) {
    return key_error(file, ErrorCode::kFormat, kKeyMerges, std::to_string(merges.size()) + " merges is too many");
  }
  std::unordered_map<std::string_view, int32_t> id_by_text;  // views into the GGUF mapping
  id_by_text.reserve(num_tokens);
  for (size_t i = 0; i < num_tokens; ++i) id_by_text.emplace((*tokens)[i], static_cast<int32_t>(i));
  const size_t table_size = std::bit_ceil(std::max<size_t>(1, 2 * merges.size()));
  tok.merge_table_.assign(table_size, MergeSlot{});
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string_view merge = merges[rank];
    auto merge_error = [&](const std::string& what) {
      return key_error(file, ErrorCode::kFormat, kKeyMerges,
                       "merge " + std::to_string(rank) + " " + quoted(merge) + ": " + what);
    };
    const size_t space = merge.find(' ', 1);
    if (space == std::string_view::npos || space + 1 >= merge.size()) {
      return merge_error("expected two token texts separated by a space");
    }
    const std::string_view left = merge.substr(0, space);
    const std::string_view right = merge.substr(space + 1);
    const auto left_it = id_by_text.find(left);
    if (left_it == id_by_text.end()) return merge_error("left side " + quoted(left) + " is not a token");
    const auto right_it = id_by_text.find(right);
    if (right_it == id_by_text.end()) return merge_error("right side " + quoted(right) + " is not a token");
    joined.assign(left);
    joined.append(right);
    const auto merged_it = id_by_text.find(joined);
    if (merged_it == id_by_text.end()) return merge_error("the merged text " + quoted(joined) + " is not a token");
    const std::string_view left_bytes = tok.token_bytes(left_it->second);
    const std::string_view right_bytes = tok.token_bytes(right_it->second);
    const std::string_view merged_bytes = tok.token_bytes(merged_it->second);
    if (merged_bytes.size() != left_bytes.size() + right_bytes.size() || !merged_bytes.starts_with(left_bytes) ||
        !merged_bytes.ends_with(right_bytes)) {
      return merge_error("the merged token's bytes are not the concatenation of the two sides' bytes");
    }
    tok.insert_merge(left_it->second, right_it->second, static_cast<uint32_t>(rank), merged_it->second);
  }

  Expected<std::optional<int32_t>> bos = read_optional_id(file, kKeyBos, num_tokens);
  if (!bos) return bos.error();
  Expected<std::optional<int32_t>> eos = read_optional_id(file, kKeyEos, num_tokens);
  if (!eos) return eos.error();
  Expected<std::optional<int32_t>> pad = read_optional_id(file, kKeyPad, num_tokens);
  if (!pad) return pad.error();
  tok.bos_id_ = *bos;
  tok.eos_id_ = *eos;
  tok.pad_id_ = *pad;
  return tok;
}

void Tokenizer::insert_merge(int32_t left_id, int32_t right_id, uint32_t rank, int32_t merged_id) {
  const uint64_t key = pair_key(left_id, right_id);
  const size_t mask = merge_table_.size() - 1;
  for (size_t slot_idx = pair_hash(key, mask);; slot_idx = (slot_idx + 1) & mask) {
    MergeSlot& slot = merge_table_[slot_idx];
    if (slot.key == key) return;  // a repeated pair keeps its first (lowest) rank
    if (slot.key == kEmptyKey) {
      slot = MergeSlot{key, rank, merged_id};
      ++num_merges_;
      return;
    }
  }
}

const Tokenizer::MergeSlot* Tokenizer::find_merge(int32_t left_id, int32_t right_id) const {
  const uint64_t key = pair_key(left_id, right_id);
  const size_t mask = merge_table_.size() - 1;
  for (size_t slot_idx = pair_hash(key, mask);; slot_idx = (slot_idx + 1) & mask) {
    const MergeSlot& slot = merge_table_[slot_idx];
    if (slot.key == key) return &slot;
    if (slot.key == kEmptyKey) return nullptr;
  }
}

int32_t Tokenizer::find_ordinary_token(std::string_view bytes) const {
  const uint64_t hash = bytes_hash(bytes);
  const auto tag = static_cast<uint32_t>(hash >> 32);
  const size_t mask = ordinary_table_.size() - 1;
  for (size_t slot_idx = static_cast<size_t>(hash) & mask;; slot_idx = (slot_idx + 1) & mask) {
    const OrdinarySlot& slot = ordinary_table_[slot_idx];
    if (slot.id < 0) return -1;
    if (slot.tag == tag && token_bytes(slot.id) == bytes) return slot.id;
  }
}

template <typename PieceFn>
void Tokenizer::for_each_piece(std::string_view text, BpeScratch* scratch, PieceFn&& on_piece) const {
  if (text.empty()) return;
  if (scratch->match_data == nullptr) scratch->match_data = pcre2_match_data_create(1, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;  // everything before pos has been passed to on_piece
  while (pos < text.size()) {
    int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, text.size(), pos, 0, scratch->match_data,
                                           scratch->match_context)
                         : pcre2_match(regex_->code, subject, text.size(), pos, 0, scratch->match_data,
                                       scratch->match_context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && scratch->jit_stack == nullptr) {
      // A pathological subject outgrew the default 32 KiB JIT stack: retry once with a 64 MiB one.
      scratch->jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
      scratch->match_context = pcre2_match_context_create(nullptr);
      pcre2_jit_stack_assign(scratch->match_context, nullptr, scratch->jit_stack);
      continue;
    }
    size_t match_begin = text.size();
    size_t match_end = text.size();
    if (rc > 0) {
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch->match_data);
      match_begin = ovector[0];
      match_end = ovector[1];
    }
    // Bytes the regex skipped (invalid UTF-8, or the rest after a matching error): one piece per byte.
    for (; pos < match_begin; ++pos) on_piece(text.substr(pos, 1));
    if (match_end > match_begin) on_piece(text.substr(match_begin, match_end - match_begin));
    pos = std::max(match_end, match_begin);
  }
}

std::vector<std::string_view> Tokenizer::pre_split(std::string_view text) const {
  std::vector<std::string_view> pieces;
  BpeScratch scratch;
  for_each_piece(text, &scratch, [&](std::string_view piece) { pieces.push_back(piece); });
  return pieces;
}

void Tokenizer::encode_piece(std::string_view piece, BpeScratch* scratch, std::vector<int32_t>* out) const {
  const size_t n = piece.size();
  if (n == 0) return;
  if (n == 1) {
    out->push_back(byte_token_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (n <= kMaxLinearPiece) {
    encode_short_piece(piece, out);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(piece_cache_->mutex);
    const auto it = piece_cache_->ids_by_piece.find(piece);
    if (it != piece_cache_->ids_by_piece.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t num_before = out->size();
  encode_long_piece(piece, scratch, out);
  std::lock_guard<std::mutex> lock(piece_cache_->mutex);
  PieceCache& cache = *piece_cache_;
  if (n > cache.capacity_bytes) return;
  if (cache.num_bytes + n > cache.capacity_bytes) {
    cache.ids_by_piece.clear();
    cache.num_bytes = 0;
  }
  if (cache.ids_by_piece.try_emplace(std::string(piece), out->begin() + static_cast<std::ptrdiff_t>(num_before),
                                     out->end()).second) {
    cache.num_bytes += n;
  }
}

void Tokenizer::set_piece_cache_capacity(size_t num_bytes) {
  std::lock_guard<std::mutex> lock(piece_cache_->mutex);
  piece_cache_->capacity_bytes = num_bytes;
  piece_cache_->ids_by_piece.clear();
  piece_cache_->num_bytes = 0;
}

void Tokenizer::encode_long_piece(std::string_view piece, BpeScratch* scratch, std::vector<int32_t>* out) const {
  const size_t n = piece.size();
  // Heap-based BPE over a linked list of symbols. A pair's (rank, position) is queued whenever it appears; each
  // symbol remembers the rank of its current pair, so an entry whose rank no longer matches is stale and skipped
  // (a pair never reappears at the same position: both sides only grow).
  using Symbol = BpeScratch::Symbol;
  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  symbols.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    symbols[i] = Symbol{byte_token_[static_cast<uint8_t>(piece[i])], static_cast<int32_t>(i) - 1,
                        i + 1 < n ? static_cast<int32_t>(i + 1) : -1, BpeScratch::kNoMerge, -1};
  }
  auto update = [&](int32_t left_idx) -> bool {  // recomputes the pair at left_idx; true if it can merge
    Symbol& left = symbols[left_idx];
    const MergeSlot* merge = left.next >= 0 ? find_merge(left.id, symbols[left.next].id) : nullptr;
    left.rank = merge != nullptr ? merge->rank : BpeScratch::kNoMerge;
    left.merged_id = merge != nullptr ? merge->merged_id : -1;
    return merge != nullptr;
  };
  for (size_t i = 0; i + 1 < n; ++i) {
    const auto idx = static_cast<int32_t>(i);
    if (update(idx)) heap.push_back(BpeScratch::entry(symbols[idx].rank, idx));
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  auto requeue = [&](int32_t left_idx) {
    if (left_idx < 0 || !update(left_idx)) return;
    heap.push_back(BpeScratch::entry(symbols[left_idx].rank, left_idx));
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto left_idx = static_cast<int32_t>(top & 0xFFFFFFFFu);
    Symbol& left = symbols[left_idx];
    if (left.id < 0 || left.rank != static_cast<uint32_t>(top >> 32)) continue;  // stale
    Symbol& right = symbols[left.next];
    left.id = left.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = left_idx;
    right.id = -1;
    requeue(left.prev);
    requeue(left_idx);
  }
  for (int32_t idx = 0; idx >= 0; idx = symbols[idx].next) out->push_back(symbols[idx].id);
}

void Tokenizer::encode_short_piece(std::string_view piece, std::vector<int32_t>* out) const {
  // tiktoken's loop on arrays: rank[i] is the merge rank of parts i and i+1 (kNoMerge if none); merge the lowest
  // (leftmost on ties), then recompute the two ranks around it. O(n^2) for n <= kMaxLinearPiece, no allocation.
  constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
  std::array<int32_t, kMaxLinearPiece> ids;
  std::array<int32_t, kMaxLinearPiece> merged;  // merged[i]: the token that parts i and i+1 merge into
  std::array<uint32_t, kMaxLinearPiece> ranks;
  size_t num_parts = piece.size();
  for (size_t i = 0; i < num_parts; ++i) ids[i] = byte_token_[static_cast<uint8_t>(piece[i])];
  auto update = [&](size_t i) {
    const MergeSlot* merge = find_merge(ids[i], ids[i + 1]);
    ranks[i] = merge != nullptr ? merge->rank : kNoMerge;
    merged[i] = merge != nullptr ? merge->merged_id : -1;
  };
  for (size_t i = 0; i + 1 < num_parts; ++i) update(i);
  while (num_parts > 1) {
    size_t best_idx = 0;
    for (size_t i = 1; i + 1 < num_parts; ++i) {
      if (ranks[i] < ranks[best_idx]) best_idx = i;
    }
    if (ranks[best_idx] == kNoMerge) break;
    ids[best_idx] = merged[best_idx];
    for (size_t i = best_idx + 1; i + 1 < num_parts; ++i) {
      ids[i] = ids[i + 1];
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --num_parts;
    if (best_idx > 0) update(best_idx - 1);
    if (best_idx + 1 < num_parts) {
      update(best_idx);
    } else {
      ranks[best_idx] = kNoMerge;
    }
  }
  out->insert(out->end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(num_parts));
}

void Tokenizer::encode_ordinary(std::string_view text, BpeScratch* scratch, std::vector<int32_t>* out) const {
  for_each_piece(text, scratch, [&](std::string_view piece) {
    if (piece.size() > 1) {
      const int32_t id = find_ordinary_token(piece);
      if (id >= 0) {
        out->push_back(id);
        return;
      }
    }
    encode_piece(piece, scratch, out);
  });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 1);
  BpeScratch scratch;
  if (!parse_special || special_lengths_.empty()) {
    encode_ordinary(text, &scratch, &out);
    return out;
  }
  size_t start = 0;  // start of the ordinary text not yet encoded
  size_t pos = 0;
  while (pos < text.size()) {
    if (special_first_byte_[static_cast<uint8_t>(text[pos])]) {
      bool matched = false;
      for (size_t length : special_lengths_) {
        if (length > text.size() - pos) continue;
        const auto it = special_by_text_.find(text.substr(pos, length));
        if (it == special_by_text_.end()) continue;
        encode_ordinary(text.substr(start, pos - start), &scratch, &out);
        out.push_back(it->second);
        pos += length;
        start = pos;
        matched = true;
        break;
      }
      if (matched) continue;
    }
    ++pos;
  }
  encode_ordinary(text.substr(start), &scratch, &out);
  return out;
}

Expected<std::string> Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      return make_error(ErrorCode::kInvalidArgument, "decode: id " + std::to_string(ids[i]) + " at position " +
                                                         std::to_string(i) + " is outside the vocabulary (0.." +
                                                         std::to_string(vocab_size() - 1) + ")");
    }
    text += token_bytes(ids[i]);
  }
  return text;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  const uint32_t begin = token_offsets_[id];
  return std::string_view(token_blob_.data() + begin, token_offsets_[id + 1] - begin);
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return token_types_[id];
}

std::optional<int32_t> Tokenizer::find_token(std::string_view bytes) const {
  const auto it = id_by_bytes_.find(bytes);
  if (it == id_by_bytes_.end()) return std::nullopt;
  return it->second;
}

std::vector<int32_t> Tokenizer::end_of_generation_ids() const {
  std::vector<int32_t> ids;
  for (std::string_view text : {"<|return|>", "<|call|>", "<|endoftext|>"}) {
    const auto it = special_by_text_.find(text);
    if (it != special_by_text_.end()) ids.push_back(it->second);
  }
  if (eos_id_ && std::find(ids.begin(), ids.end(), *eos_id_) == ids.end()) ids.push_back(*eos_id_);
  return ids;
}

Expected<std::string> StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tokenizer_->vocab_size()) {
    return make_error(ErrorCode::kInvalidArgument, "StreamDecoder::push: id " + std::to_string(id) +
                                                       " is outside the vocabulary (0.." +
                                                       std::to_string(tokenizer_->vocab_size() - 1) + ")");
  }
  pending_ += tokenizer_->token_bytes(id);
  const size_t ready = incomplete_tail_start(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace hetmoe
