#include "runtime/model/tiktoken_vocab.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

namespace hetmoe::tiktoken {
namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

bool is_printable_latin1(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

struct ByteLevelTables {
  std::array<uint16_t, 256> code_point_of_byte{};  // byte -> code point
  std::array<int16_t, 0x144> byte_of_code_point{};  // code point -> byte, -1 if unmapped
  std::array<uint8_t, 256> order{};                // bytes by increasing code point
  ByteLevelTables() {
    byte_of_code_point.fill(-1);
    uint16_t next_remapped = 0x100;
    for (unsigned b = 0; b < 256; ++b) {
      code_point_of_byte[b] = is_printable_latin1(b) ? static_cast<uint16_t>(b) : next_remapped++;
      byte_of_code_point[code_point_of_byte[b]] = static_cast<int16_t>(b);
    }
    size_t n = 0;
    for (unsigned cp = 0; cp < byte_of_code_point.size(); ++cp)
      if (byte_of_code_point[cp] >= 0) order[n++] = static_cast<uint8_t>(byte_of_code_point[cp]);
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::string line_prefix(std::string_view name, size_t line_no) {
  return std::string(name) + ":" + std::to_string(line_no) + ": ";
}

std::string quoted_token(std::string_view bytes) {
  constexpr size_t kMaxShown = 64;
  std::string text = byte_level_encode(bytes.substr(0, kMaxShown));
  return "'" + text + (bytes.size() > kMaxShown ? "...'" : "'");
}

}  // namespace

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int num_pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=') {
        // '=' only in the last group, only in positions 2 and 3, and only as a suffix.
        if (!last || j < 2) return std::nullopt;
        ++num_pad;
        v[j] = 0;
        continue;
      }
      if (num_pad > 0) return std::nullopt;
      v[j] = base64_value(c);
      if (v[j] < 0) return std::nullopt;
    }
    const uint32_t bits = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<char>(bits >> 16));
    if (num_pad < 2) out.push_back(static_cast<char>((bits >> 8) & 0xFF));
    if (num_pad < 1) out.push_back(static_cast<char>(bits & 0xFF));
  }
  return out;
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& tables = byte_level_tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const uint16_t cp = tables.code_point_of_byte[static_cast<uint8_t>(c)];
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

std::optional<std::string> byte_level_decode(std::string_view text) {
  const auto& tables = byte_level_tables();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto c0 = static_cast<uint8_t>(text[i]);
    uint32_t cp;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() && (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80) {
      cp = (uint32_t(c0 & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
      if (cp < 0x80) return std::nullopt;  // overlong encoding
      i += 2;
    } else {
      return std::nullopt;  // every mapped code point is below U+0800: 1 or 2 bytes
    }
    if (cp >= tables.byte_of_code_point.size() || tables.byte_of_code_point[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(tables.byte_of_code_point[cp]));
  }
  return out;
}

std::span<const uint8_t, 256> byte_level_order() { return byte_level_tables().order; }

Expected<std::vector<std::string>> parse_ranks(std::string_view text, std::string_view name) {
  struct Entry {
    uint32_t rank;
    std::string bytes;
    size_t line_no;
  };
  std::vector<Entry> entries;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos)
      return make_error(ErrorCode::kFormat, line_prefix(name, line_no) + "expected 'BASE64 RANK'");
    const std::string_view b64 = line.substr(0, space);
    const std::string_view rank_text = line.substr(space + 1);
    auto bytes = base64_decode(b64);
    if (!bytes)
      return make_error(ErrorCode::kFormat, line_prefix(name, line_no) + "invalid base64 '" + std::string(b64) + "'");
    if (bytes->empty()) return make_error(ErrorCode::kFormat, line_prefix(name, line_no) + "empty token");
    uint64_t rank = 0;
    bool rank_ok = !rank_text.empty() && rank_text.size() <= 10;
    for (char c : rank_text) {
      if (c < '0' || c > '9') {
        rank_ok = false;
        break;
      }
      rank = rank * 10 + static_cast<uint64_t>(c - '0');
    }
    if (!rank_ok || rank > uint64_t{std::numeric_limits<int32_t>::max()})
      return make_error(ErrorCode::kFormat, line_prefix(name, line_no) + "rank '" + std::string(rank_text) +
                                                "' is not a decimal number below 2^31");
    entries.push_back(Entry{static_cast<uint32_t>(rank), std::move(*bytes), line_no});
  }

  // Ranks must be exactly 0..n-1: place each in-range rank, catching duplicates in file order.
  const size_t n = entries.size();
  std::vector<size_t> entry_of_rank(n, SIZE_MAX);
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries[i];
    if (e.rank >= n) continue;
    if (entry_of_rank[e.rank] != SIZE_MAX)
      return make_error(ErrorCode::kFormat, line_prefix(name, e.line_no) + "duplicate rank " + std::to_string(e.rank) +
                                                " (also on line " +
                                                std::to_string(entries[entry_of_rank[e.rank]].line_no) + ")");
    entry_of_rank[e.rank] = i;
  }
  for (size_t r = 0; r < n; ++r)
    if (entry_of_rank[r] == SIZE_MAX)
      return make_error(ErrorCode::kFormat, std::string(name) + ": rank " + std::to_string(r) +
                                                " is missing (ranks must be 0.." + std::to_string(n - 1) + ")");

  std::vector<std::string> tokens(n);
  std::unordered_map<std::string_view, size_t> line_of_token;
  line_of_token.reserve(n);
  for (const Entry& e : entries) {
    auto [it, inserted] = line_of_token.emplace(e.bytes, e.line_no);
    if (!inserted)
      return make_error(ErrorCode::kFormat, line_prefix(name, e.line_no) + "duplicate token " + quoted_token(e.bytes) +
                                                " (also on line " + std::to_string(it->second) + ")");
  }
  line_of_token.clear();
  for (Entry& e : entries) tokens[e.rank] = std::move(e.bytes);
  return tokens;
}

Expected<std::vector<std::string>> load_ranks(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return make_error(ErrorCode::kIo, path + ": read failed: " + std::strerror(errno));
  return parse_ranks(text, path);
}

RankTable::RankTable(std::span<const std::string> tokens_by_rank) {
  tokens_.reserve(tokens_by_rank.size());
  rank_by_bytes_.reserve(tokens_by_rank.size());
  for (const auto& t : tokens_by_rank) {
    rank_by_bytes_.emplace(t, static_cast<uint32_t>(tokens_.size()));
    tokens_.push_back(t);
  }
}

bool RankTable::add(std::string bytes) {
  auto [it, inserted] = rank_by_bytes_.emplace(bytes, size());
  if (!inserted) return false;
  tokens_.push_back(std::move(bytes));
  return true;
}

std::optional<uint32_t> RankTable::find(std::string_view bytes) const {
  auto it = rank_by_bytes_.find(bytes);
  if (it == rank_by_bytes_.end()) return std::nullopt;
  return it->second;
}

std::vector<uint32_t> RankTable::merge_parts(std::string_view bytes, uint32_t rank_limit) const {
  const size_t n = bytes.size();
  if (n <= 1) return n == 0 ? std::vector<uint32_t>{} : std::vector<uint32_t>{1};
  auto rank_of = [&](size_t begin, size_t end) {
    auto it = rank_by_bytes_.find(bytes.substr(begin, end - begin));
    return it != rank_by_bytes_.end() && it->second < rank_limit ? it->second : kNoRank;
  };
  // starts[i]: where part i begins (the last entry is n); pair_rank[i]: rank of parts i and i+1 merged.
  std::vector<size_t> starts(n + 1);
  std::vector<uint32_t> pair_rank(n + 1, kNoRank);
  for (size_t i = 0; i <= n; ++i) starts[i] = i;
  for (size_t i = 0; i + 2 <= n; ++i) pair_rank[i] = rank_of(i, i + 2);
  while (starts.size() > 2) {
    uint32_t best = kNoRank;
    size_t best_idx = 0;
    for (size_t i = 0; i + 2 < starts.size(); ++i)
      if (pair_rank[i] < best) {
        best = pair_rank[i];
        best_idx = i;
      }
    if (best == kNoRank) break;
    // Parts best_idx and best_idx+1 become one; recompute the two pair ranks that involve it.
    starts.erase(starts.begin() + static_cast<ptrdiff_t>(best_idx) + 1);
    pair_rank.erase(pair_rank.begin() + static_cast<ptrdiff_t>(best_idx) + 1);
    pair_rank[best_idx] = best_idx + 2 < starts.size() ? rank_of(starts[best_idx], starts[best_idx + 2]) : kNoRank;
    if (best_idx > 0) pair_rank[best_idx - 1] = rank_of(starts[best_idx - 1], starts[best_idx + 1]);
  }
  std::vector<uint32_t> lengths(starts.size() - 1);
  for (size_t i = 0; i + 1 < starts.size(); ++i) lengths[i] = static_cast<uint32_t>(starts[i + 1] - starts[i]);
  return lengths;
}

Expected<std::vector<Merge>> derive_merges(std::span<const std::string> tokens_by_rank) {
  const RankTable table(tokens_by_rank);
  std::vector<Merge> merges;
  for (uint32_t r = 0; r < tokens_by_rank.size(); ++r) {
    const std::string_view token = tokens_by_rank[r];
    if (token.size() < 2) continue;
    const std::vector<uint32_t> parts = table.merge_parts(token, r);
    std::optional<uint32_t> left, right;
    if (parts.size() == 2) {
      left = table.find(token.substr(0, parts[0]));
      right = table.find(token.substr(parts[0]));
    }
    if (!left || !right || *left >= r || *right >= r)
      return make_error(ErrorCode::kFormat, "rank " + std::to_string(r) + " token " + quoted_token(token) +
                                                ": byte-level BPE with the lower ranks leaves " +
                                                std::to_string(parts.size()) +
                                                " parts, not two tokens of lower rank; no merge forms it");
    merges.push_back(Merge{*left, *right, r});
  }
  return merges;
}

std::string merge_text(std::span<const std::string> tokens_by_rank, const Merge& merge) {
  return byte_level_encode(tokens_by_rank[merge.left_rank]) + " " + byte_level_encode(tokens_by_rank[merge.right_rank]);
}

}  // namespace hetmoe::tiktoken
