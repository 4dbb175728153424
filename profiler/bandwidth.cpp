#include "profiler/bandwidth.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/base/huge_pages.h"

namespace hetmoe::profiler {
namespace {

__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, uint64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (uint64_t i = 0; i + 128 <= n; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  return static_cast<uint64_t>(_mm256_extract_epi64(a, 0) ^ _mm256_extract_epi64(a, 3));
}

__attribute__((target("avx512f"))) uint64_t read_avx512(const uint8_t* p, uint64_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (uint64_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(reinterpret_cast<const void*>(p + i)));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(reinterpret_cast<const void*>(p + i + 64)));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(reinterpret_cast<const void*>(p + i + 128)));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(reinterpret_cast<const void*>(p + i + 192)));
  }
  const __m512i a = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  // Lanes folded by hand: GCC 12's _mm512_reduce_add_epi64 trips -Wuninitialized in its own header (bug 105593).
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(reinterpret_cast<void*>(lanes), a);
  uint64_t folded = 0;
  for (uint64_t lane : lanes) folded ^= lane;
  return folded;
}

uint64_t read_sse2(const uint8_t* p, uint64_t n) {
  __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
  for (uint64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm_xor_si128(a0, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_xor_si128(a1, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 16)));
    a2 = _mm_xor_si128(a2, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 32)));
    a3 = _mm_xor_si128(a3, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 48)));
  }
  const __m128i a = _mm_xor_si128(_mm_xor_si128(a0, a1), _mm_xor_si128(a2, a3));
  return static_cast<uint64_t>(_mm_cvtsi128_si64(a));
}

uint64_t read_status_kib(const char* file, const char* field) {
  std::FILE* f = std::fopen(file, "r");
  if (!f) return 0;
  char line[256];
  uint64_t kib = 0;
  const size_t len = std::strlen(field);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, field, len) == 0) {
      std::sscanf(line + len, " %lu", &kib);
      break;
    }
  std::fclose(f);
  return kib * 1024;
}

}  // namespace

double measure_read_bandwidth(uint64_t num_bytes, int num_threads, int num_reps) {
  num_threads = std::max(1, num_threads);
  const uint64_t chunk = (num_bytes / static_cast<uint64_t>(num_threads)) / 4096 * 4096;
  if (chunk == 0) return 0.0;
  // 2 MiB-aligned and advised for transparent huge pages, like the weights hetmoe loads into memory: with 4 KiB
  // pages the TLB misses alone cost about a quarter of the read rate.
  HugePageBuffer buf(chunk * static_cast<uint64_t>(num_threads));
  if (buf.data() == nullptr) return 0.0;
  // The widest loads this CPU has: the figure is a ceiling for kernels that use them.
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2");
  std::vector<uint64_t> sink(static_cast<size_t>(num_threads));
  double best = 0.0;
  for (int rep = -1; rep < num_reps; ++rep) {  // rep -1 touches the pages (first-touch by each reader thread)
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < num_threads; ++t)
      threads.emplace_back([&, t] {
        uint8_t* p = buf.data() + static_cast<uint64_t>(t) * chunk;
        if (rep < 0) {
          std::memset(p, t + 1, chunk);
          return;
        }
        sink[static_cast<size_t>(t)] += avx512 ? read_avx512(p, chunk) : avx2 ? read_avx2(p, chunk) : read_sse2(p, chunk);
      });
    for (auto& th : threads) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep >= 0) best = std::max(best, static_cast<double>(chunk) * num_threads / s);
  }
  return best;
}

uint64_t rss_anon_bytes() { return read_status_kib("/proc/self/status", "RssAnon:"); }

uint64_t mem_available_bytes() { return read_status_kib("/proc/meminfo", "MemAvailable:"); }

}  // namespace hetmoe::profiler
