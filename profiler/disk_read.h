#pragma once
// Random-read speed of the disk a file lives on, as the RAM tier pages experts from it: blocks of a few MiB at random
// block-aligned offsets, each dropped from the page cache first (posix_fadvise DONTNEED), so the figure is the
// disk's and not the page cache's.

#include <cstdint>
#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::profiler {

struct DiskReadResult {
  double bytes_per_s = 0;      // bytes read / seconds spent in pread
  uint64_t block_bytes = 0;    // per read
  uint32_t num_blocks = 0;     // reads made
  bool cache_dropped = true;   // false when the kernel refused DONTNEED (the figure may be the page cache's)
};

/// Reads `num_blocks` blocks of `block_bytes` (a file shorter than one block: the whole file, once) at offsets
/// drawn with a fixed seed. Errors: kIo naming the file (open, read), kInvalidArgument for an empty file or zero
/// block size.
Expected<DiskReadResult> measure_disk_read(const std::string& path, uint64_t block_bytes = 4ull << 20,
                                           uint32_t num_blocks = 32);

}  // namespace hetmoe::profiler
