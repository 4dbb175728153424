#include "runtime/base/byte_size.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

namespace hetmoe {

Expected<uint64_t> parse_byte_size(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("byte size '{}' {} (expected a number with an optional unit: B, K/KiB, M/MiB, G/GiB, "
                                  "T/TiB, KB, MB, GB, TB; e.g. 6GiB)",
                                  text, why));
  };
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) return bad("is empty");
  size_t num_end = 0;
  while (num_end < s.size() && (std::isdigit(static_cast<unsigned char>(s[num_end])) || s[num_end] == '.')) ++num_end;
  if (num_end == 0) return bad(s.front() == '-' ? "is negative" : "has no number");
  const std::string_view number = s.substr(0, num_end);
  if (number.back() == '.' || number.front() == '.') return bad("has a malformed number");
  double value = 0;
  const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc() || ptr != number.data() + number.size()) return bad("has a malformed number");
  std::string unit;
  for (char c : s.substr(num_end))
    if (!std::isspace(static_cast<unsigned char>(c))) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kib") scale = 0x1p10;
  else if (unit == "m" || unit == "mib") scale = 0x1p20;
  else if (unit == "g" || unit == "gib") scale = 0x1p30;
  else if (unit == "t" || unit == "tib") scale = 0x1p40;
  else if (unit == "kb") scale = 1e3;
  else if (unit == "mb") scale = 1e6;
  else if (unit == "gb") scale = 1e9;
  else if (unit == "tb") scale = 1e12;
  else return bad("has an unknown unit");
  if (scale == 1 && number.find('.') != std::string_view::npos) return bad("is a fraction of a byte");
  const double bytes = std::floor(value * scale);
  if (!(bytes <= 0x1p60)) return bad("is above 2^60 bytes");
  return static_cast<uint64_t>(bytes);
}

}  // namespace hetmoe
