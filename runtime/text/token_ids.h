#pragma once
// Reading token-id files: whitespace-separated decimal ids (the format of `hetmoe eval --ids`).

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe {

/// Reads whitespace-separated token ids from `path`. Each id must be a decimal integer in [0, vocab_size).
/// Errors: kIo if the file cannot be read; kInvalidArgument naming the file, the 0-based index and the text of
/// the first bad entry (not a number, negative, or ≥ vocab_size); kInvalidArgument if the file has no ids.
Expected<std::vector<int32_t>> read_token_ids(const std::string& path, uint32_t vocab_size);

}  // namespace hetmoe
