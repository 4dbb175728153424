#pragma once
// Process memory and wall-clock helpers for the figures hetmoe prints (load time, tok/s, peak RSS).

#include <chrono>
#include <cstdint>

namespace hetmoe::profiler {

/// Peak resident set size of this process so far, in bytes (getrusage ru_maxrss). 0 if unavailable.
uint64_t peak_rss_bytes();

/// Current resident set size in bytes (/proc/self/statm). 0 if unavailable.
uint64_t current_rss_bytes();

/// Monotonic seconds since an arbitrary epoch.
inline double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

}  // namespace hetmoe::profiler
