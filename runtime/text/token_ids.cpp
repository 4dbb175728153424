#include "runtime/text/token_ids.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hetmoe {

Expected<std::vector<int32_t>> read_token_ids(const std::string& path, uint32_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
    if (ec != std::errc() || end != word.data() + word.size() || v < 0 || v >= vocab_size)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("{}: entry {} is '{}', expected a token id in [0, {})", path, ids.size(),
                                    word.substr(0, 40), vocab_size));
    ids.push_back(static_cast<int32_t>(v));
  }
  if (!in.eof()) return make_error(ErrorCode::kIo, fmt::format("{}: read failed", path));
  if (ids.empty()) return make_error(ErrorCode::kInvalidArgument, fmt::format("{}: no token ids in the file", path));
  return ids;
}

}  // namespace hetmoe
