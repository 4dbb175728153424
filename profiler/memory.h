#pragma once
// Process memory and wall-clock helpers for the figures hetmoe prints (load time, tok/s, peak RSS).

#include <chrono>
#include <cstdint>

namespace hetmoe::profiler {

/// Peak resident set size of this process so far, in bytes (getrusage ru_maxrss). 0 if unavailable.
uint64_t peak_rss_bytes();

/// The resident set's high-water mark (VmHWM in /proc/self/status) in bytes: like peak_rss_bytes, but reset by
/// reset_rss_high_water(). 0 if unavailable.
uint64_t rss_high_water_bytes();

/// Resets the high-water mark to the current RSS (writes 5 to /proc/self/clear_refs, Linux 4.0+), so a buffer that
/// was freed (a bandwidth probe's) leaves the later peak. False when the kernel refused.
bool reset_rss_high_water();

/// Current resident set size in bytes (/proc/self/statm). 0 if unavailable.
uint64_t current_rss_bytes();

/// Monotonic seconds since an arbitrary epoch.
inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

}  // namespace hetmoe::profiler
