#pragma once
// Byte sizes as users write them on the command line and in the config file: "6GiB", "512 MiB", "1.5G", "12GB".

#include <cstdint>
#include <string_view>

#include "runtime/base/expected.h"

namespace hetmoe {

/// Parses a byte size: a number (a fraction only with a unit) and an optional unit, case-insensitive, spaces
/// allowed: B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000); a plain number is
/// bytes. Errors: kInvalidArgument naming the text in quotes and why (empty, no number, a malformed number, a
/// fraction of a byte, an unknown unit, or above 2^60 bytes).
Expected<uint64_t> parse_byte_size(std::string_view text);

}  // namespace hetmoe
