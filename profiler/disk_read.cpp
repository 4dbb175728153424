#include "profiler/disk_read.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>

namespace hetmoe::profiler {

Expected<DiskReadResult> measure_disk_read(const std::string& path, uint64_t block_bytes, uint32_t num_blocks) {
  if (block_bytes == 0 || num_blocks == 0)
    return make_error(ErrorCode::kInvalidArgument, "disk read probe: block size and count must be > 0");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return make_error(ErrorCode::kInvalidArgument, fmt::format("{}: empty or unreadable file: nothing to time", path));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  DiskReadResult r;
  r.block_bytes = std::min(block_bytes, size);
  const uint64_t num_slots = size / r.block_bytes;
  if (num_slots == 1) num_blocks = 1;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[r.block_bytes]);
  std::mt19937_64 rng(20261205);
  std::uniform_int_distribution<uint64_t> slot(0, num_slots - 1);
  double seconds = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < num_blocks; ++i) {
    const uint64_t offset = slot(rng) * r.block_bytes;
    if (::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(r.block_bytes), POSIX_FADV_DONTNEED) != 0)
      r.cache_dropped = false;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t done = 0; done < r.block_bytes;) {
      const ssize_t got = ::pread(fd, buf.get() + done, r.block_bytes - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        const int err = errno;
        ::close(fd);
        return make_error(ErrorCode::kIo, fmt::format("{}: read failed at offset {}: {}", path, offset + done,
                                                      got == 0 ? "unexpected end of file" : std::strerror(err)));
      }
      done += static_cast<uint64_t>(got);
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bytes += r.block_bytes;
    ++r.num_blocks;
    // Leave the page cache as it was found for these blocks (the probe should not warm the file for a run).
    ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(r.block_bytes), POSIX_FADV_DONTNEED);
  }
  ::close(fd);
  r.bytes_per_s = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
  return r;
}

}  // namespace hetmoe::profiler
