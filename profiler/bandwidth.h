#pragma once
// A STREAM-like memory read bandwidth measurement, run in the same process as the benchmark it qualifies.

#include <cstdint>

namespace hetmoe::profiler {

/// Reads a buffer of `num_bytes` (touched once before timing) with `num_threads` threads, `num_reps` times, and
/// returns the best read bandwidth in bytes per second. The buffer should be several times the last-level cache.
/// Uses the widest loads the CPU has (chosen at run time): 512-bit with AVX-512F, 256-bit with AVX2, else 128-bit.
/// The buffer is freed on return (its pages stay in the process's RSS high-water mark: profiler/memory.h).
double measure_read_bandwidth(uint64_t num_bytes, int num_threads, int num_reps = 3);

/// Resident anonymous memory of this process in bytes (RssAnon in /proc/self/status): what is resident beyond
/// file-backed pages such as the memory-mapped weights. 0 if unavailable.
uint64_t rss_anon_bytes();

/// MemAvailable from /proc/meminfo in bytes; 0 if unavailable.
uint64_t mem_available_bytes();

}  // namespace hetmoe::profiler
