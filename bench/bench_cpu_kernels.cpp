// Every entry of the CPU KernelTable (cpu_kernels/kernels.h), at every ISA variant this CPU supports, on the shapes of
// gpt-oss-20b (gpt-oss-spec.md: hidden 2880, expert FFN 2880, q_dim 4096 = 64 heads × 64, kv_dim 512 = 8 KV heads
// × 64, GQA group 8, attention over 128 keys (sliding-window layers) and 4096 keys, 201088 vocabulary rows), for
// decode (one token) and a small prefill batch (8 and 64 tokens).
//
// Counters (printed per benchmark):
//   bytes    — bytes the kernel must move (weights or KV rows read, activations read, outputs written), as a rate:
//              GB/s. Compulsory traffic only: a softmax that reads its row twice counts it once.
//   FLOP     — floating-point (or integer multiply-add) operations, as a rate: GFLOP/s. A multiply-add counts 2;
//              the per-kernel definition is beside each benchmark.
//   roofline — bytes/s ÷ the memory read bandwidth measured once at start-up (profiler::measure_read_bandwidth, with
//              the benchmark's thread count). Meaningful where the data streams from DRAM (the weight and KV-cache
//              benchmarks, see "Caches" below); above 1 means the data sat in a cache.
//   B/cyc    — bytes per cycle per core: bytes/s ÷ threads ÷ the core clock measured at start-up (below).
//   of_L2    — B/cyc ÷ the core's L2-resident read peak (below): how much of what one core can load per cycle the
//              kernel uses. Near 1: the core's load path is the limit; well below 1 with data in cache: the kernel's
//              instructions are (compute bound).
//   nmse     — the kernel's output against the scalar reference (cpu_kernels/reference.h, or a double-precision
//              loop where reference.h has no such function), checked before timing on the same data that is timed.
//              Above the tolerance the benchmark fails with SkipWithError and is not timed.
//
// Caches: decode reads every weight once per token and the KV cache of a layer once per token, with ~1 GB of other
// weights read in between, so in the real run that data comes from DRAM. Benchmarks of weights and KV rows therefore
// rotate over copies in a working set of about twice the last-level cache (HETMOE_BENCH_WS_MB overrides it, in MiB):
// each iteration reads the next copy, and a copy comes back only after the whole working set has been read, so it has
// been evicted. The activations, scores and probabilities are hot in the real run (just written by the previous op),
// and stay hot here: the quantizer and softmax benchmarks run on cache-resident buffers, without rotation or flushing.
// One working set per weight type is held at a time (benchmarks are registered grouped by type); the first benchmark
// of a type fills it.
//
// BM_ReadBandwidth/<type>/threads:N reads the same rotating working set as the GEMV with no compute (a plain SSE2
// float sum, no ISA flags), the read roofline of that allocation (two large allocations can stream at rates up to
// ~30 % apart here: host page placement).
//
// The per-core model, measured once at start-up and printed first (stderr, and the JSON context): the core clock
// (a chain of dependent 1-cycle integer adds), the core's read peak in bytes per cycle from an L1-resident and an
// L2-resident buffer (the widest loads the CPU has: AVX-512, AVX2 or SSE2, 8 independent sums), and the DRAM read per
// core in bytes per cycle (the read bandwidth below ÷ threads). BM_GemvHot/<type>/<isa> runs each GEMV on a matrix
// that fits in half the L2, one thread: the kernel's own limit. Its `vs_dram` = B/cyc ÷ the DRAM read per core
// (1 thread): above 1 the kernel outpaces one core's DRAM stream, so decode is memory bound on that core; below 1 it
// is compute bound and fewer instructions per block would speed decode up. The DRAM rows of BM_Gemv have `roofline`
// (the fraction of the measured DRAM read at that thread count) for the same question from the other side.
//
// "threads:2" variants split the rows of every matrix between the calling thread and one persistent worker
// (std::barrier), as a forward pass would.
//
// Run: build/bin/bench_cpu_kernels [--benchmark_filter=...] [--benchmark_min_time=0.05]. On a shared machine (CPU
// and DRAM shared with other work) take the best of interleaved repetitions: --benchmark_repetitions=5
// --benchmark_enable_random_interleaving --benchmark_out=FILE --benchmark_out_format=json, then the max of the bytes
// rate per name; and check `uptime`.

#include <benchmark/benchmark.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>  // the per-core model's read peaks (functions with target attributes only)
#endif
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "cpu_kernels/repack.h"
#include "profiler/bandwidth.h"
#include "runtime/base/ggml_types.h"
#include "runtime/base/huge_pages.h"

namespace {

using hetmoe::TensorType;
using hetmoe::cpu::ActQ8Block;
using hetmoe::cpu::Isa;
using hetmoe::cpu::KernelTable;

// ---- gpt-oss-20b shapes (gpt-oss-spec.md §1) ---------------------------------------------------------------------

constexpr int64_t kHidden = 2880;
constexpr int64_t kExpertFfn = 2880;
constexpr int64_t kNumHeads = 64;
constexpr int64_t kNumKvHeads = 8;
constexpr int64_t kHeadDim = 64;
constexpr int64_t kGroup = kNumHeads / kNumKvHeads;  // query heads per KV head (GQA)
constexpr int64_t kQDim = kNumHeads * kHeadDim;      // 4096
constexpr int64_t kKvDim = kNumKvHeads * kHeadDim;   // 512
constexpr int64_t kNumExpertsUsed = 4;
constexpr int64_t kNumRouterRows = 32;     // experts
constexpr int64_t kVocabChunkRows = 8192;  // one chunk of the 201088 unembedding rows

/// A GEMV/GEMM weight shape: `mats_per_step` matrices of [rows][cols] per iteration.
struct MatShape {
  const char* name;
  int64_t rows, cols, mats_per_step;
};
// One layer's active experts: 4 experts × (gate, up, down), each [2880][2880].
constexpr MatShape kExpertStep = {"expert_4x3", kExpertFfn, kHidden, 3 * kNumExpertsUsed};
constexpr MatShape kAttnQ = {"attn_q", kQDim, kHidden, 1};
constexpr MatShape kAttnKv = {"attn_k+v", kKvDim, kHidden, 2};
constexpr MatShape kAttnOut = {"attn_out", kHidden, kQDim, 1};
constexpr MatShape kRouter = {"router", kNumRouterRows, kHidden, 1};
constexpr MatShape kVocabChunk = {"unembed_chunk", kVocabChunkRows, kHidden, 1};

// ---- tolerances (NMSE = mse(ref, got) / mse(ref, 0)), as in tests/test_cpu_kernels.cpp ---------------------------

// Quantized weights (int8 activations) vs ref::dot_row (f32 activations): the activation quantization error, ~1.5e-5
// for activations uniform in ±1 (relative error variance (amax/σ/127)²/12, amax/σ = √3); a layout error gives ~1.
constexpr double kQuantVsRefNmse = 1e-4;
// Float weights: f32 vs double summation only (≤ 1e-12 observed in the tests).
constexpr double kFloatVsRefNmse = 1e-10;
// The quantizer: d·q against x, the rounding error itself (the same ~1.5e-5 as above).
constexpr double kQuantizeNmse = 1e-4;
// Attention, dot/axpy and softmax: f32 sums and f32 exp vs double, a few ulp per element (~1e-14 NMSE).
constexpr double kAttnVsRefNmse = 1e-10;
// Attention tiles with bf16 products (q, K, V, probabilities rounded to 2^-9): ~1e-6 measured at 4096 keys
// (tests/test_kv_attention.cpp: kBf16VsF32Nmse).
constexpr double kAttnBf16VsRefNmse = 3e-4;

double nmse(const std::vector<double>& ref, const std::vector<float>& got) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    err += d * d;
    norm += ref[i] * ref[i];
  }
  return norm > 0.0 ? err / norm : err;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// n floats uniform in [-scale, scale] (steps of scale/1000).
std::vector<float> random_floats(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = scale * static_cast<float>(static_cast<int64_t>(splitmix64(seed) % 2001) - 1000) / 1000.0f;
  return x;
}

// ---- the rotating working set ------------------------------------------------------------------------------------

uint64_t last_level_cache_bytes() {
  long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (bytes <= 0) bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
    unsigned long kib = 0;
    char unit = 0;
    if (std::fscanf(f, "%lu%c", &kib, &unit) >= 1)
      bytes = std::max<long>(bytes, static_cast<long>(unit == 'M' ? kib << 20 : kib << 10));
    std::fclose(f);
  }
  return bytes > 0 ? static_cast<uint64_t>(bytes) : (32ull << 20);
}

/// Bytes of the rotating working set: HETMOE_BENCH_WS_MB (MiB), default twice the last-level cache, at least 256 MiB.
uint64_t working_set_bytes() {
  if (const char* mb = std::getenv("HETMOE_BENCH_WS_MB")) return std::strtoull(mb, nullptr, 10) << 20;
  return std::max<uint64_t>(2 * last_level_cache_bytes(), 256ull << 20);
}

/// Row bytes of the kMXFP4_R16 matrices benchmarked (2880 columns).
constexpr uint64_t kR16RowBytes = 2880 / 32 * 17;

/// Fills p[n] with valid values of `type` (n a multiple of the block bytes): no inf/NaN/subnormal products, which
/// would time microcode assists instead of the kernel. MXFP4: exponents 2^-8..2^1, random codes; Q8_0: d = 0.01,
/// random int8 q; F16/BF16/F32: uniform in ±1 (steps of 1/128).
void fill_values(TensorType type, uint8_t* p, uint64_t n, uint64_t seed) {
  for (uint64_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t r = splitmix64(seed);
    std::memcpy(p + i, &r, 8);
  }
  switch (type) {
    case TensorType::kMXFP4:
    case TensorType::kMXFP4_R16:
      for (uint64_t b = 0; b < n / hetmoe::kMXFP4BlockBytes; ++b)
        p[b * hetmoe::kMXFP4BlockBytes] = static_cast<uint8_t>(120 + p[b * hetmoe::kMXFP4BlockBytes] % 10);
      // R16: every whole group of 16 rows of kHidden columns from p on (the benchmarks' matrices are such groups).
      if (type == TensorType::kMXFP4_R16) {
        std::vector<uint8_t> scratch(16 * kR16RowBytes);
        hetmoe::cpu::repack_mxfp4_r16(p, kR16RowBytes, 0, static_cast<int64_t>(n / (16 * kR16RowBytes)),
                                      scratch.data());
      }
      break;
    case TensorType::kQ8_0_R16:
      // Every byte in [0x20, 0x3B]: any two are a normal f16 (2^-7 .. 2^-1 in magnitude) and any one a code, so the
      // data is a valid Q8_0_R16 matrix for every row length (no repack, whatever the shape's columns).
      for (uint64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(0x20 + p[i] % 28);
      break;
    case TensorType::kQ8_0: {
      const uint16_t d = hetmoe::ref::f32_to_f16(0.01f);
      for (uint64_t b = 0; b < n / hetmoe::kQ8_0BlockBytes; ++b) std::memcpy(p + b * hetmoe::kQ8_0BlockBytes, &d, 2);
      break;
    }
    case TensorType::kF16:
    case TensorType::kBF16:
      for (uint64_t i = 0; i < n / 2; ++i) {
        const float v = static_cast<float>(static_cast<int8_t>(p[2 * i])) / 128.0f;
        uint16_t h;
        if (type == TensorType::kF16) {
          h = hetmoe::ref::f32_to_f16(v);
        } else {
          uint32_t bits;
          std::memcpy(&bits, &v, 4);
          h = static_cast<uint16_t>(bits >> 16);  // exact: v has 8 significant bits
        }
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    case TensorType::kF32:
      for (uint64_t i = 0; i < n / 4; ++i) {
        const float v = static_cast<float>(static_cast<int8_t>(p[4 * i])) / 128.0f;
        std::memcpy(p + 4 * i, &v, 4);
      }
      break;
  }
}

/// The working set of one weight type: working_set_bytes(), or min_bytes if larger, of valid values, in huge pages
/// (as the runtime holds its weights and KV cache: runtime/base/huge_pages.h).
/// Only the last requested type is held.
const hetmoe::HugePageBuffer& working_set(TensorType type, uint64_t min_bytes) {
  static TensorType held_type = TensorType::kF32;
  static hetmoe::HugePageBuffer bytes;
  if (bytes.empty() || held_type != type || bytes.size() < min_bytes) {
    const uint64_t block = hetmoe::tensor_type_traits(type).block_bytes;
    const uint64_t num_bytes = std::max(working_set_bytes(), min_bytes + block) / block * block;
    bytes = hetmoe::HugePageBuffer();  // release the previous type first
    bytes = hetmoe::HugePageBuffer(num_bytes);
    if (bytes.data() == nullptr) {
      std::fprintf(stderr, "bench_cpu_kernels: cannot allocate a working set of %llu bytes\n",
                   static_cast<unsigned long long>(num_bytes));
      std::exit(1);
    }
    fill_values(type, bytes.data(), bytes.size(), 1 + static_cast<uint64_t>(type));
    held_type = type;
  }
  return bytes;
}

/// Copies of `copy_bytes` each, laid end to end in the working set; copy(i) wraps around.
struct Rotation {
  const uint8_t* base = nullptr;
  uint64_t copy_bytes = 0;
  int64_t num_copies = 0;
  const uint8_t* copy(int64_t idx) const { return base + static_cast<uint64_t>(idx % num_copies) * copy_bytes; }
};

/// A rotation over the working set of `type`: a multiple of `group` copies (so a step of `group` never wraps mid-step),
/// at least two steps.
Rotation rotation(TensorType type, uint64_t copy_bytes, int64_t group = 1) {
  const hetmoe::HugePageBuffer& ws = working_set(type, 2 * static_cast<uint64_t>(group) * copy_bytes);
  Rotation r{ws.data(), copy_bytes, static_cast<int64_t>(ws.size() / copy_bytes)};
  r.num_copies -= r.num_copies % group;
  return r;
}

// ---- counters ----------------------------------------------------------------------------------------------------

/// Memory read bandwidth (bytes/s) for 1 and 2 threads, measured once in main() before any benchmark.
double g_read_bandwidth[3] = {0.0, 0.0, 0.0};

/// Validation results by kernel, ISA, type and size: Google Benchmark calls a benchmark function several times (to
/// size the iteration count, and per repetition); the reference is computed on the first call only.
std::map<std::string, double>& validated() {
  static std::map<std::string, double> m;
  return m;
}

std::string validation_key(const std::string& kernel, Isa isa, TensorType type, int64_t size) {
  return kernel + "/" + hetmoe::cpu::isa_name(isa) + "/" + std::to_string(static_cast<uint32_t>(type)) + "/" +
         std::to_string(size);
}

/// Runs `compute_nmse` once per key; false (and the benchmark is skipped with an error) above `tolerance`.
bool validate(benchmark::State& state, const std::string& key, double tolerance,
              const std::function<double()>& compute_nmse) {
  auto [it, inserted] = validated().try_emplace(key, 0.0);
  if (inserted) it->second = compute_nmse();
  state.counters["nmse"] = it->second;
  if (!(it->second <= tolerance)) {  // NaN fails too
    char msg[160];
    std::snprintf(msg, sizeof msg, "output does not match the scalar reference: NMSE %.3g > %.3g", it->second,
                  tolerance);
    state.SkipWithError(msg);
    return false;
  }
  return true;
}

/// Times the benchmark loop in wall-clock seconds (the benchmarks use UseRealTime(), so this is the interval Google
/// Benchmark measures too).
class LoopTimer {
 public:
  LoopTimer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// ---- the per-core model ------------------------------------------------------------------------------------------

/// Measured once in main(): the core clock (Hz; 0 where it cannot be measured), the core's read peaks in bytes per
/// cycle with the data in L1 and in L2, and the loads used for them.
struct CoreModel {
  double hz = 0.0;
  double l1_bytes_per_cycle = 0.0;
  double l2_bytes_per_cycle = 0.0;
  const char* loads = "none";
  double fma_flop_per_cycle = 0.0;  // f32 FLOP per cycle with the widest FMA (an FMA = 2 FLOP per lane)
};
CoreModel g_core;

/// CPU time of the calling thread in seconds: the model's loops are timed in it, so that time slices other processes
/// take on a shared machine do not count (they would lower the clock and the peaks).
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Core clock: kAdds dependent 1-cycle integer adds per loop pass take kAdds cycles on any x86-64 core (the loop's own
/// counter runs beside them); best of 5 runs of 2^26 cycles, in thread CPU time. 0 on other architectures.
double measure_core_hz() {
#if defined(__x86_64__)
  constexpr int64_t kAdds = 32, kPasses = int64_t{1} << 21;
  double best = 0.0;
  for (int run = 0; run < 5; ++run) {
    uint64_t v = 0;
    const double t0 = thread_cpu_seconds();
    for (int64_t i = 0; i < kPasses; ++i) asm volatile(".rept 32\n\tadd $1, %0\n\t.endr" : "+r"(v));
    const double s = thread_cpu_seconds() - t0;
    if (s > 0.0) best = std::max(best, static_cast<double>(kAdds * kPasses) / s);
  }
  return best;
#else
  return 0.0;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
/// n bytes (a multiple of 512) as floats, 8 independent sums of 64-byte loads.
__attribute__((target("avx512f"))) float read_sum_avx512(const uint8_t* p, uint64_t n) {
  __m512 a[8];
  for (auto& v : a) v = _mm512_setzero_ps();
  for (uint64_t i = 0; i < n; i += 512)
    for (int j = 0; j < 8; ++j) a[j] = _mm512_add_ps(a[j], _mm512_loadu_ps(reinterpret_cast<const float*>(p + i + 64 * j)));
  for (int j = 1; j < 8; ++j) a[0] = _mm512_add_ps(a[0], a[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, a[0]);
  return lanes[0] + lanes[15];
}
/// The same with 32-byte loads.
__attribute__((target("avx2"))) float read_sum_avx2(const uint8_t* p, uint64_t n) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (uint64_t i = 0; i < n; i += 256)
    for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_loadu_ps(reinterpret_cast<const float*>(p + i + 32 * j)));
  for (int j = 1; j < 8; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a[0]);
  return lanes[0] + lanes[7];
}
#endif

float read_sum(const uint8_t* p, uint64_t n);

/// The core's read peak (bytes per CPU second) over a buffer of `bytes` (a multiple of 512) read again and again: best
/// of 5 runs of 64 MiB each, with the widest loads this CPU has.
double cache_read_peak(uint64_t bytes, const char** loads) {
  std::vector<uint8_t> buf(bytes);
  fill_values(TensorType::kF32, buf.data(), bytes, 77);
  const Isa best_isa = hetmoe::cpu::best_isa();
  auto pass = [&]() -> float {
#if defined(__x86_64__) && defined(__GNUC__)
    if (best_isa == Isa::kAvx512) return read_sum_avx512(buf.data(), bytes);
    if (best_isa == Isa::kAvx2 || best_isa == Isa::kAvx2Vnni) return read_sum_avx2(buf.data(), bytes);
#endif
    return read_sum(buf.data(), bytes);
  };
  const bool avx2 = best_isa == Isa::kAvx2 || best_isa == Isa::kAvx2Vnni;
  *loads = best_isa == Isa::kAvx512 ? "avx512 (64 B)" : avx2 ? "avx2 (32 B)" : "sse2 (16 B)";
  const int64_t passes = std::max<int64_t>(1, static_cast<int64_t>((64ull << 20) / bytes));  // ~64 MiB per run
  double best = 0.0;
  float sink = 0.0f;
  sink += pass();  // warm: bring the buffer into the cache
  for (int run = 0; run < 5; ++run) {
    const double t0 = thread_cpu_seconds();
    for (int64_t i = 0; i < passes; ++i) sink += pass();
    const double s = thread_cpu_seconds() - t0;
    if (s > 0.0) best = std::max(best, static_cast<double>(passes) * static_cast<double>(bytes) / s);
  }
  benchmark::DoNotOptimize(sink);
  return best;
}

#if defined(__x86_64__) && defined(__GNUC__)
// 2^20 passes of independent register-only FMAs (16 zmm or 12 ymm accumulators: more than latency × pipes), in
// inline assembly: with intrinsics GCC kept an accumulator on the stack and the loop ran at a third of the peak.
#define HETMOE_FMA4(r, a, b, c, d) \
  "vfmadd231ps %%" r "30, %%" r "31, %%" r a "\n\t vfmadd231ps %%" r "30, %%" r "31, %%" r b "\n\t vfmadd231ps %%" r \
  "30, %%" r "31, %%" r c "\n\t vfmadd231ps %%" r "30, %%" r "31, %%" r d "\n\t"
__attribute__((target("avx512f"))) void fma_chains_avx512() {
  for (int64_t i = 0; i < (int64_t{1} << 20); ++i)
    asm volatile(HETMOE_FMA4("zmm", "0", "1", "2", "3") HETMOE_FMA4("zmm", "4", "5", "6", "7")
                     HETMOE_FMA4("zmm", "8", "9", "10", "11") HETMOE_FMA4("zmm", "12", "13", "14", "15")::
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                           "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}
__attribute__((target("avx2,fma"))) void fma_chains_avx2() {
  for (int64_t i = 0; i < (int64_t{1} << 20); ++i)
    asm volatile(HETMOE_FMA4("ymm", "0", "1", "2", "3") HETMOE_FMA4("ymm", "4", "5", "6", "7")
                     HETMOE_FMA4("ymm", "8", "9", "10", "11")::
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                           "xmm11");
}
#undef HETMOE_FMA4
#endif

/// The core's f32 FMA peak in FLOP per cycle (0 where unknown): best of 5 runs of the widest FMA chains, in thread CPU
/// time — the bound of a compute-bound kernel such as the attention tile (of_FMA counter).
double fma_flop_per_cycle(double hz) {
#if defined(__x86_64__) && defined(__GNUC__)
  const Isa best_isa = hetmoe::cpu::best_isa();
  if (hz <= 0.0 || best_isa == Isa::kScalar) return 0.0;
  const double lanes = best_isa == Isa::kAvx512 ? 16.0 : 8.0, chains = best_isa == Isa::kAvx512 ? 16.0 : 12.0;
  double best = 0.0;
  for (int run = 0; run < 5; ++run) {
    const double t0 = thread_cpu_seconds();
    if (best_isa == Isa::kAvx512) {
      fma_chains_avx512();
    } else {
      fma_chains_avx2();
    }
    const double s = thread_cpu_seconds() - t0;
    if (s > 0.0) best = std::max(best, 2.0 * lanes * chains * static_cast<double>(int64_t{1} << 20) / s / hz);
  }
  return best;
#else
  (void)hz;
  return 0.0;
#endif
}

/// L2 size of cpu0 in bytes (sysfs, then sysconf), 1 MiB if unknown.
uint64_t l2_cache_bytes() {
  long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r")) {
    unsigned long kib = 0;
    char unit = 0;
    if (std::fscanf(f, "%lu%c", &kib, &unit) >= 1) bytes = static_cast<long>(unit == 'M' ? kib << 20 : kib << 10);
    std::fclose(f);
  }
  return bytes > 0 ? static_cast<uint64_t>(bytes) : (1ull << 20);
}

CoreModel measure_core_model() {
  CoreModel m;
  m.hz = measure_core_hz();
  if (m.hz <= 0.0) return m;
  m.l1_bytes_per_cycle = cache_read_peak(16 << 10, &m.loads) / m.hz;                   // half of a 32 KiB L1D
  m.l2_bytes_per_cycle = cache_read_peak(l2_cache_bytes() / 2 / 512 * 512, &m.loads) / m.hz;
  m.fma_flop_per_cycle = fma_flop_per_cycle(m.hz);
  return m;
}

/// DRAM read per core in bytes per cycle at num_threads threads (0 when the clock is unknown).
double dram_bytes_per_cycle(int num_threads) {
  return g_core.hz > 0.0 ? g_read_bandwidth[num_threads] / num_threads / g_core.hz : 0.0;
}

void set_counters(benchmark::State& state, double bytes_per_iter, double flops_per_iter, double seconds,
                  int num_threads) {
  const auto iters = static_cast<double>(state.iterations());
  state.counters["bytes"] = benchmark::Counter(bytes_per_iter * iters, benchmark::Counter::kIsRate);
  state.counters["FLOP"] = benchmark::Counter(flops_per_iter * iters, benchmark::Counter::kIsRate);
  const double bw = g_read_bandwidth[num_threads];
  state.counters["roofline"] = seconds > 0.0 && bw > 0.0 ? bytes_per_iter * iters / seconds / bw : 0.0;
  const double bpc = seconds > 0.0 && g_core.hz > 0.0 ? bytes_per_iter * iters / seconds / num_threads / g_core.hz : 0.0;
  state.counters["B/cyc"] = bpc;
  state.counters["of_L2"] = g_core.l2_bytes_per_cycle > 0.0 ? bpc / g_core.l2_bytes_per_cycle : 0.0;
}

/// of_FMA: the FLOP rate per core as a fraction of the core's measured f32 FMA peak (compute-bound kernels).
void set_fma_counter(benchmark::State& state, double flops_per_iter, double seconds, int num_threads) {
  const double peak = g_core.hz * g_core.fma_flop_per_cycle * num_threads;
  state.counters["of_FMA"] =
      seconds > 0.0 && peak > 0.0 ? flops_per_iter * static_cast<double>(state.iterations()) / seconds / peak : 0.0;
}

// ---- threads -----------------------------------------------------------------------------------------------------

/// Runs `work(thread_idx)` on the calling thread (0) and, for num_threads = 2, on one persistent worker (1).
class ThreadPair {
 public:
  explicit ThreadPair(int num_threads) : num_threads_(num_threads), start_(num_threads), done_(num_threads) {
    if (num_threads_ == 2) worker_ = std::thread([this] { worker_loop(); });
  }
  ~ThreadPair() {
    if (worker_.joinable()) {
      stop_ = true;
      start_.arrive_and_wait();
      worker_.join();
    }
  }
  ThreadPair(const ThreadPair&) = delete;
  ThreadPair& operator=(const ThreadPair&) = delete;
  void run(const std::function<void(int)>& work) {
    work_ = &work;
    if (num_threads_ == 2) start_.arrive_and_wait();
    work(0);
    if (num_threads_ == 2) done_.arrive_and_wait();
  }

 private:
  void worker_loop() {
    for (;;) {
      start_.arrive_and_wait();
      if (stop_) return;
      (*work_)(1);
      done_.arrive_and_wait();
    }
  }
  int num_threads_;
  std::barrier<> start_, done_;
  const std::function<void(int)>* work_ = nullptr;
  bool stop_ = false;
  std::thread worker_;
};

/// Rows [begin, end) of thread `thread_idx` out of num_threads.
/// (kMXFP4_R16, kQ8_0_R16: in whole groups of 16 rows.)
std::pair<int64_t, int64_t> thread_rows(int64_t num_rows, int thread_idx, int num_threads, TensorType type) {
  const int64_t unit = type == TensorType::kMXFP4_R16 || type == TensorType::kQ8_0_R16 ? 16 : 1;
  const int64_t units = num_rows / unit;
  return {units * thread_idx / num_threads * unit, units * (thread_idx + 1) / num_threads * unit};
}

// ---- GEMV and GEMM -----------------------------------------------------------------------------------------------

bool is_quantized(TensorType type) {
  return type == TensorType::kMXFP4 || type == TensorType::kQ8_0 || type == TensorType::kMXFP4_R16 ||
         type == TensorType::kQ8_0_R16;
}

/// ref::dot_row of row r of a matrix of `type`; an R16 row is first gathered back into the file's layout.
double ref_dot_row(TensorType type, const uint8_t* mat, int64_t r, uint64_t row_bytes, const float* x, int64_t cols) {
  if (type != TensorType::kMXFP4_R16 && type != TensorType::kQ8_0_R16)
    return hetmoe::ref::dot_row(type, mat + r * row_bytes, x, cols);
  std::vector<uint8_t> group(mat + (r / 16) * 16 * row_bytes, mat + (r / 16 + 1) * 16 * row_bytes);
  std::vector<uint8_t> scratch(16 * row_bytes);
  const bool mxfp4 = type == TensorType::kMXFP4_R16;
  (mxfp4 ? hetmoe::cpu::unpack_mxfp4_r16 : hetmoe::cpu::unpack_q8_0_r16)(group.data(), row_bytes, 0, 1, scratch.data());
  return hetmoe::ref::dot_row(mxfp4 ? TensorType::kMXFP4 : TensorType::kQ8_0, group.data() + (r % 16) * row_bytes, x,
                              cols);
}

void call_gemv(const KernelTable& k, TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t r0, int64_t r1,
               const float* x, const ActQ8Block* xq, int64_t num_cols, float* y) {
  switch (type) {
    case TensorType::kMXFP4: k.gemv_mxfp4(w, row_bytes, r0, r1, xq, num_cols, y); break;
    case TensorType::kMXFP4_R16: k.gemm_mxfp4_r16(w, row_bytes, r0, r1, xq, 1, num_cols, y, r1 - r0); break;
    case TensorType::kQ8_0_R16: k.gemm_q8_0_r16(w, row_bytes, r0, r1, xq, 1, num_cols, y, r1 - r0); break;
    case TensorType::kQ8_0: k.gemv_q8_0(w, row_bytes, r0, r1, xq, num_cols, y); break;
    case TensorType::kF32: k.gemv_f32(w, row_bytes, r0, r1, x, num_cols, y); break;
    case TensorType::kF16: k.gemv_f16(w, row_bytes, r0, r1, x, num_cols, y); break;
    case TensorType::kBF16: k.gemv_bf16(w, row_bytes, r0, r1, x, num_cols, y); break;
  }
}

void call_gemm(const KernelTable& k, TensorType type, const uint8_t* w, uint64_t row_bytes, int64_t num_rows,
               const float* x, const ActQ8Block* xq, int64_t num_tokens, int64_t num_cols, float* y) {
  switch (type) {
    case TensorType::kMXFP4: k.gemm_mxfp4(w, row_bytes, 0, num_rows, xq, num_tokens, num_cols, y, num_rows); break;
    case TensorType::kMXFP4_R16:
      k.gemm_mxfp4_r16(w, row_bytes, 0, num_rows, xq, num_tokens, num_cols, y, num_rows);
      break;
    case TensorType::kQ8_0_R16:
      k.gemm_q8_0_r16(w, row_bytes, 0, num_rows, xq, num_tokens, num_cols, y, num_rows);
      break;
    case TensorType::kQ8_0: k.gemm_q8_0(w, row_bytes, 0, num_rows, xq, num_tokens, num_cols, y, num_rows); break;
    case TensorType::kF32: k.gemm_f32(w, row_bytes, 0, num_rows, x, num_tokens, num_cols, y, num_rows); break;
    case TensorType::kF16: k.gemm_f16(w, row_bytes, 0, num_rows, x, num_tokens, num_cols, y, num_rows); break;
    case TensorType::kBF16: k.gemm_bf16(w, row_bytes, 0, num_rows, x, num_tokens, num_cols, y, num_rows); break;
  }
}

/// Bytes of the activations a GEMV/GEMM of `type` reads per token: quantized blocks or f32 values.
double activation_bytes(TensorType type, int64_t num_cols) {
  return is_quantized(type) ? static_cast<double>(num_cols / 32 * sizeof(ActQ8Block)) : 4.0 * num_cols;
}

/// Decode GEMV: y[rows] = W[rows][cols] · x[cols], `mats_per_step` weight matrices per iteration, rotating.
/// FLOP = 2 · rows · cols per matrix; bytes = weights + activations + outputs.
void BM_Gemv(benchmark::State& state, Isa isa, TensorType type, MatShape shape, int num_threads) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const uint64_t row_bytes = hetmoe::tensor_row_bytes(type, static_cast<uint64_t>(shape.cols));
  const uint64_t mat_bytes = row_bytes * static_cast<uint64_t>(shape.rows);
  const Rotation mats = rotation(type, mat_bytes, shape.mats_per_step);
  const std::vector<float> x = random_floats(shape.cols, 7);         // (cols)
  std::vector<ActQ8Block> xq(static_cast<size_t>(shape.cols / 32));  // (cols / 32)
  k.quantize_act_q8(x.data(), xq.data(), shape.cols);
  std::vector<float> y(static_cast<size_t>(shape.rows * shape.mats_per_step));  // (mats_per_step, rows)

  if (!validate(state, validation_key(std::string("gemv/") + shape.name, isa, type, 0),
                is_quantized(type) ? kQuantVsRefNmse : kFloatVsRefNmse, [&] {
                  call_gemv(k, type, mats.copy(0), row_bytes, 0, shape.rows, x.data(), xq.data(), shape.cols, y.data());
                  std::vector<double> want(static_cast<size_t>(shape.rows));
                  for (int64_t r = 0; r < shape.rows; ++r)
                    want[static_cast<size_t>(r)] = ref_dot_row(type, mats.copy(0), r, row_bytes, x.data(), shape.cols);
                  return nmse(want, std::vector<float>(y.begin(), y.begin() + shape.rows));
                }))
    return;

  ThreadPair threads(num_threads);
  int64_t step = 0;
  const int64_t num_steps = mats.num_copies / shape.mats_per_step;
  const LoopTimer timer;
  for (auto _ : state) {
    const int64_t first = step * shape.mats_per_step;
    threads.run([&](int thread_idx) {
      const auto [r0, r1] = thread_rows(shape.rows, thread_idx, num_threads, type);
      for (int64_t m = 0; m < shape.mats_per_step; ++m)
        call_gemv(k, type, mats.copy(first + m), row_bytes, r0, r1, x.data(), xq.data(), shape.cols,
                  y.data() + m * shape.rows + r0);
    });
    benchmark::DoNotOptimize(y.data());
    step = (step + 1) % num_steps;
  }
  const double m = static_cast<double>(shape.mats_per_step);
  set_counters(state, m * (static_cast<double>(mat_bytes) + activation_bytes(type, shape.cols) + 4.0 * shape.rows),
               m * 2.0 * static_cast<double>(shape.rows * shape.cols), timer.seconds(), num_threads);
}

/// The GEMV on one matrix of 2880 columns that fits in half the L2 (at least 8 rows), one thread, the same matrix every
/// iteration: the kernel's limit when loads are not the bottleneck. Counters as BM_Gemv plus vs_dram (see the top).
void BM_GemvHot(benchmark::State& state, Isa isa, TensorType type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  constexpr int64_t kCols = kHidden;
  const uint64_t row_bytes = hetmoe::tensor_row_bytes(type, kCols);
  const int64_t rows = std::max<int64_t>(16, static_cast<int64_t>(l2_cache_bytes() / 2 / row_bytes) / 16 * 16);
  std::vector<uint8_t> w(row_bytes * static_cast<uint64_t>(rows));
  fill_values(type, w.data(), w.size(), 41);
  const std::vector<float> x = random_floats(kCols, 43);
  std::vector<ActQ8Block> xq(static_cast<size_t>(kCols / 32));
  k.quantize_act_q8(x.data(), xq.data(), kCols);
  std::vector<float> y(static_cast<size_t>(rows));
  if (!validate(state, validation_key("gemv_hot", isa, type, rows),
                is_quantized(type) ? kQuantVsRefNmse : kFloatVsRefNmse, [&] {
                  call_gemv(k, type, w.data(), row_bytes, 0, rows, x.data(), xq.data(), kCols, y.data());
                  std::vector<double> want(static_cast<size_t>(rows));
                  for (int64_t r = 0; r < rows; ++r)
                    want[static_cast<size_t>(r)] = ref_dot_row(type, w.data(), r, row_bytes, x.data(), kCols);
                  return nmse(want, y);
                }))
    return;
  const LoopTimer timer;
  for (auto _ : state) {
    call_gemv(k, type, w.data(), row_bytes, 0, rows, x.data(), xq.data(), kCols, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, static_cast<double>(w.size()) + activation_bytes(type, kCols) + 4.0 * rows,
               2.0 * static_cast<double>(rows * kCols), timer.seconds(), 1);
  const double dram = dram_bytes_per_cycle(1);
  state.counters["vs_dram"] = dram > 0.0 ? state.counters["B/cyc"].value / dram : 0.0;
}

/// Prefill GEMM: y[tokens][rows] = x[tokens][cols] · W[rows][cols]ᵀ for one expert matrix [2880][2880], rotating.
/// FLOP = 2 · tokens · rows · cols; bytes = weights + activations + outputs. Compute bound from a few tokens on:
/// each weight block is used `tokens` times.
void BM_Gemm(benchmark::State& state, Isa isa, TensorType type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const int64_t num_tokens = state.range(0);
  constexpr int64_t kRows = kExpertFfn, kCols = kHidden;
  const uint64_t row_bytes = hetmoe::tensor_row_bytes(type, kCols);
  const uint64_t mat_bytes = row_bytes * kRows;
  const Rotation mats = rotation(type, mat_bytes);
  const std::vector<float> x = random_floats(num_tokens * kCols, 9);  // (tokens, cols)
  std::vector<ActQ8Block> xq(x.size() / 32);                          // (tokens, cols / 32)
  k.quantize_act_q8(x.data(), xq.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(static_cast<size_t>(num_tokens * kRows));  // (tokens, rows)

  // Every 45th row (64 rows) against the reference, for all tokens: the reference is a double loop, and the full
  // matrix at 64 tokens would take seconds per benchmark.
  if (!validate(state, validation_key("gemm", isa, type, num_tokens),
                is_quantized(type) ? kQuantVsRefNmse : kFloatVsRefNmse, [&] {
                  call_gemm(k, type, mats.copy(0), row_bytes, kRows, x.data(), xq.data(), num_tokens, kCols, y.data());
                  std::vector<double> want;
                  std::vector<float> got;
                  for (int64_t t = 0; t < num_tokens; ++t)
                    for (int64_t r = 0; r < kRows; r += 45) {
                      want.push_back(ref_dot_row(type, mats.copy(0), r, row_bytes, x.data() + t * kCols, kCols));
                      got.push_back(y[static_cast<size_t>(t * kRows + r)]);
                    }
                  return nmse(want, got);
                }))
    return;

  int64_t idx = 0;
  const LoopTimer timer;
  for (auto _ : state) {
    call_gemm(k, type, mats.copy(idx), row_bytes, kRows, x.data(), xq.data(), num_tokens, kCols, y.data());
    benchmark::DoNotOptimize(y.data());
    idx = (idx + 1) % mats.num_copies;
  }
  const auto tokens = static_cast<double>(num_tokens);
  set_counters(state, static_cast<double>(mat_bytes) + tokens * (activation_bytes(type, kCols) + 4.0 * kRows),
               2.0 * tokens * kRows * kCols, timer.seconds(), 1);
}

/// Reads n bytes (a multiple of 64) as floats, 4 independent chains of 16-byte loads. SSE2 is part of x86-64, so this
/// needs no ISA flags; one 16-byte load per 16 bytes keeps up with DRAM (measured: same rate as 64-byte AVX-512 loads).
float read_sum(const uint8_t* p, uint64_t n) {
#if defined(__SSE2__)
  __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (uint64_t i = 0; i < n; i += 64) {
    a0 = _mm_add_ps(a0, _mm_loadu_ps(reinterpret_cast<const float*>(p + i)));
    a1 = _mm_add_ps(a1, _mm_loadu_ps(reinterpret_cast<const float*>(p + i + 16)));
    a2 = _mm_add_ps(a2, _mm_loadu_ps(reinterpret_cast<const float*>(p + i + 32)));
    a3 = _mm_add_ps(a3, _mm_loadu_ps(reinterpret_cast<const float*>(p + i + 48)));
  }
  const __m128 s = _mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3));
  return _mm_cvtss_f32(s);
#else
  float acc[4] = {};
  for (uint64_t i = 0; i < n; i += 16) {
    float v[4];
    std::memcpy(v, p + i, 16);
    for (int j = 0; j < 4; ++j) acc[j] += v[j];
  }
  return acc[0] + acc[1] + acc[2] + acc[3];
#endif
}

/// The same rotating reads of the same working set as BM_Gemv/<type>/expert_4x3 (same rows per thread), no compute.
void BM_ReadBandwidth(benchmark::State& state, TensorType type, int num_threads) {
  const MatShape shape = kExpertStep;
  const uint64_t row_bytes = hetmoe::tensor_row_bytes(type, static_cast<uint64_t>(shape.cols));
  const uint64_t mat_bytes = row_bytes * static_cast<uint64_t>(shape.rows);
  const Rotation mats = rotation(type, mat_bytes, shape.mats_per_step);
  ThreadPair threads(num_threads);
  int64_t step = 0;
  const int64_t num_steps = mats.num_copies / shape.mats_per_step;
  float sums[2] = {0.0f, 0.0f};
  const LoopTimer timer;
  for (auto _ : state) {
    const int64_t first = step * shape.mats_per_step;
    threads.run([&](int thread_idx) {
      const auto [r0, r1] = thread_rows(shape.rows, thread_idx, num_threads, type);
      // Whole 64-byte chunks of the thread's rows (the chunk grid starts at the rows' first byte).
      for (int64_t m = 0; m < shape.mats_per_step; ++m)
        sums[thread_idx] += read_sum(mats.copy(first + m) + static_cast<uint64_t>(r0) * row_bytes,
                                     static_cast<uint64_t>(r1 - r0) * row_bytes / 64 * 64);
    });
    benchmark::DoNotOptimize(sums);
    step = (step + 1) % num_steps;
  }
  set_counters(state, static_cast<double>(shape.mats_per_step * mat_bytes), 0.0, timer.seconds(), num_threads);
}

// ---- activations -------------------------------------------------------------------------------------------------

/// quantize_act_q8 of [tokens][n] f32 → [tokens][n / 32] blocks, cache-resident (the activations were just written).
/// FLOP = 3 per value (|x| for the max, × 1/d, round); bytes = 4 per value read + 36 per block written.
void BM_QuantizeActQ8(benchmark::State& state, Isa isa, int64_t n) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const int64_t num_tokens = state.range(0);
  const int64_t total = num_tokens * n;
  const std::vector<float> x = random_floats(total, 11, 3.0f);  // (tokens, n)
  std::vector<ActQ8Block> xq(static_cast<size_t>(total / 32));  // (tokens, n / 32)

  if (!validate(state, validation_key("quantize", isa, TensorType::kF32, total), kQuantizeNmse, [&] {
        k.quantize_act_q8(x.data(), xq.data(), total);
        std::vector<double> want(x.begin(), x.end());
        std::vector<float> got(x.size());
        for (size_t i = 0; i < got.size(); ++i) got[i] = xq[i / 32].d * static_cast<float>(xq[i / 32].q[i % 32]);
        return nmse(want, got);
      }))
    return;

  const LoopTimer timer;
  for (auto _ : state) {
    k.quantize_act_q8(x.data(), xq.data(), total);
    benchmark::DoNotOptimize(xq.data());
  }
  set_counters(state, 4.0 * total + static_cast<double>(total / 32 * sizeof(ActQ8Block)), 3.0 * total, timer.seconds(),
               1);
}

// ---- attention ---------------------------------------------------------------------------------------------------

/// Value of element `i` of a KV copy of `type` (f16 or f32).
double kv_value(TensorType type, const uint8_t* base, int64_t i) {
  if (type == TensorType::kF16) {
    uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return hetmoe::ref::f16_to_f32(h);
  }
  float f;
  std::memcpy(&f, base + 4 * i, 4);
  return f;
}

/// One layer's K (or V) for one decode token: [kv_heads][num_keys][head_dim] of `type`, a head's rows contiguous
/// (runtime/exec/kv_cache.h: slot stride = head_dim · element size), rotating.
struct LayerKv {
  TensorType type;
  int64_t num_keys;
  uint64_t elem_bytes, stride_bytes, head_bytes;
  Rotation copies;
  LayerKv(TensorType t, int64_t keys)
      : type(t),
        num_keys(keys),
        elem_bytes(t == TensorType::kF16 ? 2 : 4),
        stride_bytes(kHeadDim * elem_bytes),
        head_bytes(stride_bytes * static_cast<uint64_t>(keys)),
        copies(rotation(t, head_bytes * kNumKvHeads)) {}
  const uint8_t* head(int64_t copy_idx, int64_t kv_head_idx) const {
    return copies.copy(copy_idx) + static_cast<uint64_t>(kv_head_idx) * head_bytes;
  }
};

/// attn_scores_* for one layer and one query: all 8 KV heads, each with its group of 8 query heads,
/// scores[64 heads][num_keys] = scale · q · Kᵀ. FLOP = 2 · heads · keys · head_dim; bytes = K + q + scores.
void BM_AttnScores(benchmark::State& state, Isa isa, TensorType kv_type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const auto scores_fn = kv_type == TensorType::kF16 ? k.attn_scores_f16 : k.attn_scores_f32;
  const LayerKv kv(kv_type, state.range(0));
  const int64_t num_keys = kv.num_keys;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  const std::vector<float> q = random_floats(kQDim, 13);                 // (heads, head_dim)
  std::vector<float> scores(static_cast<size_t>(kNumHeads * num_keys));  // (heads, keys)
  const auto run_layer = [&](int64_t copy_idx) {
    for (int64_t g = 0; g < kNumKvHeads; ++g)
      scores_fn(q.data() + g * kGroup * kHeadDim, kGroup, kv.head(copy_idx, g), static_cast<int64_t>(kv.stride_bytes),
                num_keys, kHeadDim, scale, scores.data() + g * kGroup * num_keys, num_keys);
  };

  if (!validate(state, validation_key("attn_scores", isa, kv_type, num_keys), kAttnVsRefNmse, [&] {
        run_layer(0);
        std::vector<double> want(scores.size());
        for (int64_t h = 0; h < kNumHeads; ++h)
          for (int64_t j = 0; j < num_keys; ++j) {
            double s = 0.0;
            for (int64_t i = 0; i < kHeadDim; ++i)
              s += static_cast<double>(q[static_cast<size_t>(h * kHeadDim + i)]) *
                   kv_value(kv_type, kv.head(0, h / kGroup), j * kHeadDim + i);
            want[static_cast<size_t>(h * num_keys + j)] = scale * s;
          }
        return nmse(want, scores);
      }))
    return;

  int64_t idx = 0;
  const LoopTimer timer;
  for (auto _ : state) {
    run_layer(idx);
    benchmark::DoNotOptimize(scores.data());
    idx = (idx + 1) % kv.copies.num_copies;
  }
  set_counters(state, static_cast<double>(kNumKvHeads * kv.head_bytes) + 4.0 * kQDim + 4.0 * kNumHeads * num_keys,
               2.0 * kNumHeads * num_keys * kHeadDim, timer.seconds(), 1);
}

/// Probabilities p[heads][keys]: positive, each row summing to 1.
std::vector<float> random_probabilities(int64_t num_keys, uint64_t seed) {
  std::vector<float> p = random_floats(kNumHeads * num_keys, seed);
  for (int64_t h = 0; h < kNumHeads; ++h) {
    float* row = p.data() + h * num_keys;
    double sum = 0.0;
    for (int64_t j = 0; j < num_keys; ++j) sum += (row[j] = std::fabs(row[j]) + 1e-3f);
    for (int64_t j = 0; j < num_keys; ++j) row[j] = static_cast<float>(row[j] / sum);
  }
  return p;
}

/// attn_values_* for one layer and one query: out[64 heads][head_dim] += p[heads][keys] · V.
/// FLOP = 2 · heads · keys · head_dim; bytes = V + p + out read and written.
void BM_AttnValues(benchmark::State& state, Isa isa, TensorType kv_type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const auto values_fn = kv_type == TensorType::kF16 ? k.attn_values_f16 : k.attn_values_f32;
  const LayerKv kv(kv_type, state.range(0));
  const int64_t num_keys = kv.num_keys;
  const std::vector<float> p = random_probabilities(num_keys, 17);  // (heads, keys)
  std::vector<float> out(static_cast<size_t>(kQDim));               // (heads, head_dim)
  const auto run_layer = [&](int64_t copy_idx) {
    for (int64_t g = 0; g < kNumKvHeads; ++g)
      values_fn(p.data() + g * kGroup * num_keys, num_keys, kGroup, kv.head(copy_idx, g),
                static_cast<int64_t>(kv.stride_bytes), num_keys, kHeadDim, out.data() + g * kGroup * kHeadDim);
  };

  if (!validate(state, validation_key("attn_values", isa, kv_type, num_keys), kAttnVsRefNmse, [&] {
        std::fill(out.begin(), out.end(), 0.0f);
        run_layer(0);
        std::vector<double> want(out.size(), 0.0);
        for (int64_t h = 0; h < kNumHeads; ++h)
          for (int64_t j = 0; j < num_keys; ++j)
            for (int64_t i = 0; i < kHeadDim; ++i)
              want[static_cast<size_t>(h * kHeadDim + i)] +=
                  static_cast<double>(p[static_cast<size_t>(h * num_keys + j)]) *
                  kv_value(kv_type, kv.head(0, h / kGroup), j * kHeadDim + i);
        return nmse(want, out);
      }))
    return;

  // out keeps accumulating (each layer adds at most 1 in magnitude per element): finite for any iteration count.
  int64_t idx = 0;
  const LoopTimer timer;
  for (auto _ : state) {
    run_layer(idx);
    benchmark::DoNotOptimize(out.data());
    idx = (idx + 1) % kv.copies.num_copies;
  }
  set_counters(state, static_cast<double>(kNumKvHeads * kv.head_bytes) + 4.0 * kNumHeads * num_keys + 8.0 * kQDim,
               2.0 * kNumHeads * num_keys * kHeadDim, timer.seconds(), 1);
}

/// Tiled (flash) attention for one layer and `tokens` queries (1: decode; 8: a prefill tile, kAttentionTileTokens), as
/// CpuForward runs it (attention_cpu.h): per KV head the tokens' 8 query heads packed once (tokens · 8 rows), then per
/// block of kAttnTileMaxKeys keys the K and V rows converted to f32 (kv_rows_f32_*) and attn_tile_update (scores,
/// online softmax, values); every token sees every key. FLOP = 4 · tokens · heads · keys · head_dim (scores and
/// values); bytes = K + V + q + out. Compare with BM_AttnScores + BM_SoftmaxWithSink + BM_AttnValues, the per-key
/// path.
void BM_AttnTile(benchmark::State& state, Isa isa, TensorType kv_type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const auto rows_fn = kv_type == TensorType::kF16 ? k.kv_rows_f32_f16 : k.kv_rows_f32_f32;
  const LayerKv keys(kv_type, state.range(0)), values(kv_type, state.range(0));
  // keys and values rotate over the same working set of the type: V half a rotation away from K, so that V is not
  // the K just read (in cache) and both come from DRAM, as in a decode step.
  const int64_t v_offset = values.copies.num_copies / 2;
  const int64_t num_keys = keys.num_keys, num_tokens = state.range(1), num_rows = num_tokens * kGroup;
  const bool v_in_place = state.range(2) != 0;  // f16 V rows read in place (attn_tile_update_v_f16), as decode does
  const bool bf16 = state.range(3) != 0;        // bf16 products (attn_tile_update_bf16, --attention-bf16)
  const int64_t pitch = hetmoe::cpu::attn_tile_pitch(kHeadDim), rows = hetmoe::cpu::attn_tile_rows(num_rows);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  const std::vector<float> q = random_floats(num_tokens * kQDim, 13);  // (tokens, heads, head_dim)
  std::vector<float> qt(static_cast<size_t>(hetmoe::cpu::attn_tile_qt_floats(num_rows, kHeadDim)));
  std::vector<uint16_t> qt16(qt.size());  // bf16 qt
  std::vector<float> kf(static_cast<size_t>((hetmoe::cpu::kAttnTileMaxKeys + 1) * pitch), 0.0f);
  std::vector<float> vf(static_cast<size_t>(hetmoe::cpu::kAttnTileMaxKeys * pitch));
  std::vector<float> s(static_cast<size_t>(hetmoe::cpu::attn_tile_scores_floats(num_rows)));
  std::vector<float> out(static_cast<size_t>(kNumKvHeads * rows * pitch));  // (kv heads, rows, pitch)
  std::vector<float> mx(static_cast<size_t>(kNumKvHeads * rows)), sum(mx.size());
  std::vector<int32_t> begin(static_cast<size_t>(num_rows), 0), end(static_cast<size_t>(num_rows));
  const auto run_layer = [&](int64_t copy_idx) {
    std::fill(out.begin(), out.end(), 0.0f);
    std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int64_t g = 0; g < kNumKvHeads; ++g) {
      std::fill(qt.begin(), qt.end(), 0.0f);
      std::fill(qt16.begin(), qt16.end(), uint16_t{0});
      for (int64_t t = 0; t < num_tokens; ++t) {
        const float* qg = q.data() + t * kQDim + g * kGroup * kHeadDim;
        if (bf16)
          k.attn_tile_pack_q_bf16(qg, kGroup, kHeadDim, t * kGroup, qt16.data());
        else
          k.attn_tile_pack_q(qg, kGroup, kHeadDim, t * kGroup, qt.data());
      }
      for (int64_t j = 0; j < num_keys; j += hetmoe::cpu::kAttnTileMaxKeys) {
        const int64_t n = std::min(hetmoe::cpu::kAttnTileMaxKeys, num_keys - j);
        const auto stride = static_cast<int64_t>(keys.stride_bytes);
        const uint8_t* k_rows = keys.head(copy_idx, g) + j * stride;
        const bool kv_in_place = bf16 && v_in_place;  // bf16 from the f16 rows (attn_tile_update_bf16_kv_f16)
        if (!kv_in_place) rows_fn(k_rows, stride, n, kHeadDim, kf.data());
        const uint8_t* v_rows = values.head(copy_idx + v_offset, g) + j * stride;
        if (!v_in_place) rows_fn(v_rows, stride, n, kHeadDim, vf.data());
        if (n % 2 != 0) std::fill(kf.begin() + n * pitch, kf.begin() + (n + 1) * pitch, 0.0f);
        std::fill(end.begin(), end.end(), static_cast<int32_t>(n));
        // The next block's K and V rows, as attention_tile passes them.
        const int64_t next_n = std::min(hetmoe::cpu::kAttnTileMaxKeys, num_keys - j - n);
        const hetmoe::cpu::PrefetchRange next[2] = {
            {keys.head(copy_idx, g) + (j + n) * stride, next_n * stride},
            {values.head(copy_idx + v_offset, g) + (j + n) * stride, next_n * stride}};
        if (kv_in_place)
          k.attn_tile_update_bf16_kv_f16(qt16.data(), num_rows, k_rows, stride, v_rows, stride, n, kHeadDim, scale,
                                         begin.data(), end.data(), s.data(), mx.data() + g * rows,
                                         sum.data() + g * rows, out.data() + g * rows * pitch, next,
                                         next_n > 0 ? 2 : 0);
        else if (bf16)
          k.attn_tile_update_bf16(qt16.data(), num_rows, kf.data(), vf.data(), n, kHeadDim, scale, begin.data(),
                                  end.data(), s.data(), mx.data() + g * rows, sum.data() + g * rows,
                                  out.data() + g * rows * pitch, next, next_n > 0 ? 2 : 0);
        else if (v_in_place)
          k.attn_tile_update_v_f16(qt.data(), num_rows, kf.data(), v_rows, stride, n, kHeadDim, scale, begin.data(),
                                   end.data(), s.data(), mx.data() + g * rows, sum.data() + g * rows,
                                   out.data() + g * rows * pitch, next, next_n > 0 ? 2 : 0);
        else
          k.attn_tile_update(qt.data(), num_rows, kf.data(), vf.data(), n, kHeadDim, scale, begin.data(), end.data(),
                             s.data(), mx.data() + g * rows, sum.data() + g * rows, out.data() + g * rows * pitch,
                             next, next_n > 0 ? 2 : 0);
      }
    }
  };

  if (!validate(state,
                validation_key("attn_tile", isa, kv_type, ((num_keys * 100 + num_tokens) * 2 + v_in_place) * 2 + bf16),
                bf16 ? kAttnBf16VsRefNmse : kAttnVsRefNmse, [&] {
        run_layer(0);
        std::vector<double> want, got;
        for (int64_t t = 0; t < num_tokens; ++t) {
          for (int64_t h = 0; h < kNumHeads; ++h) {
            const int64_t g = h / kGroup, r = t * kGroup + h % kGroup;
            std::vector<double> sc(static_cast<size_t>(num_keys));
            double m = -1e300;
            for (int64_t j = 0; j < num_keys; ++j) {
              double acc = 0.0;
              for (int64_t i = 0; i < kHeadDim; ++i)
                acc += static_cast<double>(q[static_cast<size_t>(t * kQDim + h * kHeadDim + i)]) *
                       kv_value(kv_type, keys.head(0, g), j * kHeadDim + i);
              sc[static_cast<size_t>(j)] = scale * acc;
              m = std::max(m, scale * acc);
            }
            double z = 0.0;
            for (double& x : sc) z += (x = std::exp(x - m));
            for (int64_t i = 0; i < kHeadDim; ++i) {
              double o = 0.0;
              for (int64_t j = 0; j < num_keys; ++j)
                o += sc[static_cast<size_t>(j)] * kv_value(kv_type, values.head(v_offset, g), j * kHeadDim + i);
              want.push_back(o / z);
              const auto row = static_cast<size_t>(g * rows + r);
              got.push_back(out[row * static_cast<size_t>(pitch) + static_cast<size_t>(i)] / sum[row]);
            }
          }
        }
        return nmse(want, std::vector<float>(got.begin(), got.end()));
      }))
    return;

  int64_t idx = 0;
  const LoopTimer timer;
  for (auto _ : state) {
    run_layer(idx);
    benchmark::DoNotOptimize(out.data());
    idx = (idx + 1) % keys.copies.num_copies;
  }
  const double flops = 4.0 * static_cast<double>(num_tokens) * kNumHeads * num_keys * kHeadDim;
  set_counters(state, 2.0 * static_cast<double>(kNumKvHeads * keys.head_bytes) + 8.0 * kQDim * num_tokens, flops,
               timer.seconds(), 1);
  set_fma_counter(state, flops, timer.seconds(), 1);
}

/// The per-row helpers dot_f32_f16 / dot_f32 (scores) and axpy_f16 / axpy_f32 (values) as a naive attention would
/// call them: one query head against the num_keys rows of one KV head (head_dim 64), rows rotating.
/// FLOP = 2 · keys · head_dim; bytes = K or V rows + q or out (dot: + the keys' scores written; axpy: out read and
/// written once, p read).
enum class RowOp { kDot, kAxpy };

void BM_RowHelper(benchmark::State& state, Isa isa, TensorType kv_type, RowOp op) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const int64_t num_keys = state.range(0);
  const uint64_t elem_bytes = kv_type == TensorType::kF16 ? 2 : 4;
  const uint64_t head_bytes = static_cast<uint64_t>(num_keys * kHeadDim) * elem_bytes;
  const Rotation heads = rotation(kv_type, head_bytes);
  const std::vector<float> q = random_floats(kHeadDim, 19);             // (head_dim)
  const std::vector<float> p = random_floats(num_keys, 23, 1.0f / 64);  // (keys)
  std::vector<float> scores(static_cast<size_t>(num_keys));             // (keys)
  std::vector<float> out(static_cast<size_t>(kHeadDim));                // (head_dim)
  const bool f16 = kv_type == TensorType::kF16;
  const auto run_head = [&](const uint8_t* rows) {
    if (op == RowOp::kDot) {
      for (int64_t j = 0; j < num_keys; ++j) {
        const uint8_t* row = rows + static_cast<uint64_t>(j * kHeadDim) * elem_bytes;
        scores[static_cast<size_t>(j)] = f16 ? k.dot_f32_f16(q.data(), reinterpret_cast<const uint16_t*>(row), kHeadDim)
                                             : k.dot_f32(q.data(), reinterpret_cast<const float*>(row), kHeadDim);
      }
    } else {
      for (int64_t j = 0; j < num_keys; ++j) {
        const uint8_t* row = rows + static_cast<uint64_t>(j * kHeadDim) * elem_bytes;
        if (f16)
          k.axpy_f16(p[static_cast<size_t>(j)], reinterpret_cast<const uint16_t*>(row), out.data(), kHeadDim);
        else
          k.axpy_f32(p[static_cast<size_t>(j)], reinterpret_cast<const float*>(row), out.data(), kHeadDim);
      }
    }
  };

  if (!validate(state, validation_key(op == RowOp::kDot ? "row_dot" : "row_axpy", isa, kv_type, num_keys),
                kAttnVsRefNmse, [&] {
                  std::fill(out.begin(), out.end(), 0.0f);
                  run_head(heads.copy(0));
                  if (op == RowOp::kDot) {
                    std::vector<double> want(static_cast<size_t>(num_keys));
                    for (int64_t j = 0; j < num_keys; ++j) {
                      double s = 0.0;
                      for (int64_t i = 0; i < kHeadDim; ++i)
                        s += static_cast<double>(q[static_cast<size_t>(i)]) *
                             kv_value(kv_type, heads.copy(0), j * kHeadDim + i);
                      want[static_cast<size_t>(j)] = s;
                    }
                    return nmse(want, scores);
                  }
                  std::vector<double> want(static_cast<size_t>(kHeadDim), 0.0);
                  for (int64_t j = 0; j < num_keys; ++j)
                    for (int64_t i = 0; i < kHeadDim; ++i)
                      want[static_cast<size_t>(i)] += static_cast<double>(p[static_cast<size_t>(j)]) *
                                                      kv_value(kv_type, heads.copy(0), j * kHeadDim + i);
                  return nmse(want, out);
                }))
    return;

  int64_t idx = 0;
  const LoopTimer timer;
  for (auto _ : state) {
    run_head(heads.copy(idx));
    benchmark::DoNotOptimize(scores.data());
    benchmark::DoNotOptimize(out.data());
    idx = (idx + 1) % heads.num_copies;
  }
  const double other = op == RowOp::kDot ? 4.0 * kHeadDim + 4.0 * num_keys : 8.0 * kHeadDim + 4.0 * num_keys;
  set_counters(state, static_cast<double>(head_bytes) + other, 2.0 * num_keys * kHeadDim, timer.seconds(), 1);
}

/// softmax_with_sink over the scores of one layer and one query, [64 heads][num_keys] in place, cache-resident
/// (the scores were just written). Softmax of probabilities is again a valid input, so the rows are not refreshed.
/// FLOP = 5 per value (max, subtract, exp counted as 1, sum, scale); bytes = 4 per value read + 4 written.
void BM_SoftmaxWithSink(benchmark::State& state, Isa isa) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const int64_t num_keys = state.range(0);
  std::vector<float> s = random_floats(kNumHeads * num_keys, 29, 8.0f);  // (heads, keys)
  const std::vector<float> sinks = random_floats(kNumHeads, 31, 2.0f);   // (heads)

  if (!validate(state, validation_key("softmax", isa, TensorType::kF32, num_keys), kAttnVsRefNmse, [&] {
        std::vector<double> want(s.size());
        for (int64_t h = 0; h < kNumHeads; ++h) {
          const float* row = s.data() + h * num_keys;
          const double sink = sinks[static_cast<size_t>(h)];
          double m = sink;
          for (int64_t j = 0; j < num_keys; ++j) m = std::max(m, static_cast<double>(row[j]));
          double z = std::exp(sink - m);
          for (int64_t j = 0; j < num_keys; ++j) z += std::exp(row[j] - m);
          for (int64_t j = 0; j < num_keys; ++j) want[static_cast<size_t>(h * num_keys + j)] = std::exp(row[j] - m) / z;
        }
        for (int64_t h = 0; h < kNumHeads; ++h)
          k.softmax_with_sink(s.data() + h * num_keys, num_keys, sinks[static_cast<size_t>(h)]);
        return nmse(want, s);
      }))
    return;

  const LoopTimer timer;
  for (auto _ : state) {
    for (int64_t h = 0; h < kNumHeads; ++h)
      k.softmax_with_sink(s.data() + h * num_keys, num_keys, sinks[static_cast<size_t>(h)]);
    benchmark::DoNotOptimize(s.data());
  }
  set_counters(state, 8.0 * kNumHeads * num_keys, 5.0 * kNumHeads * num_keys, timer.seconds(), 1);
}

// ---- registration ------------------------------------------------------------------------------------------------

std::string type_name(TensorType type) {
  std::string s(hetmoe::tensor_type_traits(type).name);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

benchmark::internal::Benchmark* configure(benchmark::internal::Benchmark* b) {
  return b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void register_benchmarks(const std::vector<Isa>& isas) {
  // Grouped by the working set's type, so that each working set is filled once.
  for (TensorType type : {TensorType::kMXFP4, TensorType::kMXFP4_R16, TensorType::kQ8_0, TensorType::kQ8_0_R16,
                          TensorType::kBF16, TensorType::kF16, TensorType::kF32}) {
    const std::string tn = type_name(type);
    // R16 only for the variants with its kernel (the others never repack).
    std::vector<Isa> type_isas;
    for (Isa isa : isas)
      if ((type != TensorType::kMXFP4_R16 || hetmoe::cpu::kernel_table(isa).gemm_mxfp4_r16 != nullptr) &&
          (type != TensorType::kQ8_0_R16 || hetmoe::cpu::kernel_table(isa).gemm_q8_0_r16 != nullptr))
        type_isas.push_back(isa);
    std::vector<MatShape> shapes = {kExpertStep};
    if (type == TensorType::kQ8_0 || type == TensorType::kQ8_0_R16)
      shapes.insert(shapes.end(), {kAttnQ, kAttnKv, kAttnOut, kVocabChunk});
    if (type == TensorType::kBF16 || type == TensorType::kF16) shapes.insert(shapes.end(), {kAttnQ, kAttnKv, kAttnOut});
    if (type == TensorType::kF32) shapes.push_back(kRouter);
    for (int num_threads : {1, 2}) {
      const std::string suffix = "/threads:" + std::to_string(num_threads);
      if (type != TensorType::kMXFP4_R16 && type != TensorType::kQ8_0_R16)  // the same bytes as MXFP4 / Q8_0
        configure(benchmark::RegisterBenchmark(("BM_ReadBandwidth/" + tn + suffix).c_str(), BM_ReadBandwidth, type,
                                               num_threads));
      for (const MatShape& shape : shapes) {
        if (num_threads == 2 && shape.rows < 256) continue;  // too little work to split
        for (Isa isa : type_isas)
          configure(benchmark::RegisterBenchmark(
              ("BM_Gemv/" + tn + "/" + shape.name + "/" + hetmoe::cpu::isa_name(isa) + suffix).c_str(), BM_Gemv, isa,
              type, shape, num_threads));
      }
    }
    for (Isa isa : type_isas)
      configure(benchmark::RegisterBenchmark(("BM_GemvHot/" + tn + "/" + hetmoe::cpu::isa_name(isa)).c_str(),
                                             BM_GemvHot, isa, type));
    // 1–8 tokens: the row tiles (bit-identical to the GEMV), the small batches of batched decode (5–8: the wide tile
    // of all the batch's tokens); 9–16: the token lanes' smallest batches, where prefill's experts mostly are; 64:
    // prefill.
    for (Isa isa : type_isas)
      configure(benchmark::RegisterBenchmark(("BM_Gemm/" + tn + "/expert/" + hetmoe::cpu::isa_name(isa)).c_str(),
                                             BM_Gemm, isa, type))
          ->ArgName("tokens")
          ->Arg(1)
          ->Arg(2)
          ->Arg(4)
          ->Arg(5)
          ->Arg(8)
          ->Arg(9)
          ->Arg(12)
          ->Arg(16)
          ->Arg(64);
    if (type != TensorType::kF16 && type != TensorType::kF32) continue;
    // KV cache rows: f16 (the default) and f32 (--kv-type f32).
    for (Isa isa : isas) {
      const std::string sfx = "/" + tn + "/" + hetmoe::cpu::isa_name(isa);
      configure(benchmark::RegisterBenchmark(("BM_AttnScores" + sfx).c_str(), BM_AttnScores, isa, type))
          ->ArgName("keys")
          ->Arg(128)
          ->Arg(4096);
      configure(benchmark::RegisterBenchmark(("BM_AttnValues" + sfx).c_str(), BM_AttnValues, isa, type))
          ->ArgName("keys")
          ->Arg(128)
          ->Arg(4096);
      configure(benchmark::RegisterBenchmark(("BM_AttnTile" + sfx).c_str(), BM_AttnTile, isa, type))
          ->ArgNames({"keys", "tokens", "v_in_place", "bf16"})
          ->ArgsProduct({{128, 4096},
                         {1, 8},
                         type == TensorType::kF16 ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0},
                         {0}});
      // bf16 products (prefill tiles, --attention-bf16) where the variant has them on this CPU.
      if (hetmoe::cpu::kernel_table(isa).attn_tile_bf16_min_rows <= 64)
        configure(benchmark::RegisterBenchmark(("BM_AttnTile" + sfx).c_str(), BM_AttnTile, isa, type))
            ->ArgNames({"keys", "tokens", "v_in_place", "bf16"})
            ->ArgsProduct({{128, 4096},
                           {1, 8},
                           type == TensorType::kF16 ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0},
                           {1}});
      configure(benchmark::RegisterBenchmark(("BM_RowDot" + sfx).c_str(), BM_RowHelper, isa, type, RowOp::kDot))
          ->ArgName("keys")
          ->Arg(128)
          ->Arg(4096);
      configure(benchmark::RegisterBenchmark(("BM_RowAxpy" + sfx).c_str(), BM_RowHelper, isa, type, RowOp::kAxpy))
          ->ArgName("keys")
          ->Arg(128)
          ->Arg(4096);
    }
  }
  // Cache-resident activations: no working set.
  for (Isa isa : isas) {
    const std::string sfx = std::string("/") + hetmoe::cpu::isa_name(isa);
    configure(benchmark::RegisterBenchmark(("BM_QuantizeActQ8/hidden" + sfx).c_str(), BM_QuantizeActQ8, isa, kHidden))
        ->ArgName("tokens")
        ->Arg(1)
        ->Arg(64);
    configure(benchmark::RegisterBenchmark(("BM_QuantizeActQ8/q_dim" + sfx).c_str(), BM_QuantizeActQ8, isa, kQDim))
        ->ArgName("tokens")
        ->Arg(1);
    configure(benchmark::RegisterBenchmark(("BM_SoftmaxWithSink" + sfx).c_str(), BM_SoftmaxWithSink, isa))
        ->ArgName("keys")
        ->Arg(128)
        ->Arg(4096);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const std::vector<Isa> isas = hetmoe::cpu::supported_isas();
  const uint64_t ws = working_set_bytes();
  std::string isa_list;
  for (Isa isa : isas) isa_list += std::string(isa_list.empty() ? "" : ",") + hetmoe::cpu::isa_name(isa);
  for (int t : {1, 2}) g_read_bandwidth[t] = hetmoe::profiler::measure_read_bandwidth(ws, t);
  g_core = measure_core_model();
  std::fprintf(stderr,
               "bench_cpu_kernels: core model: clock %.3f GHz; read peak per core %.1f B/cycle in L1, %.1f B/cycle in "
               "L2 (%s loads); DRAM read per core %.2f B/cycle (1 thread), %.2f B/cycle (2 threads); f32 FMA peak "
               "%.1f FLOP/cycle\n",
               g_core.hz / 1e9, g_core.l1_bytes_per_cycle, g_core.l2_bytes_per_cycle, g_core.loads,
               dram_bytes_per_cycle(1), dram_bytes_per_cycle(2), g_core.fma_flop_per_cycle);
  benchmark::AddCustomContext("fma_flop_per_cycle", std::to_string(g_core.fma_flop_per_cycle));
  benchmark::AddCustomContext("core_ghz", std::to_string(g_core.hz / 1e9));
  benchmark::AddCustomContext("l1_read_bytes_per_cycle", std::to_string(g_core.l1_bytes_per_cycle));
  benchmark::AddCustomContext("l2_read_bytes_per_cycle", std::to_string(g_core.l2_bytes_per_cycle));
  benchmark::AddCustomContext("dram_read_bytes_per_cycle_1t", std::to_string(dram_bytes_per_cycle(1)));
  benchmark::AddCustomContext("dram_read_bytes_per_cycle_2t_per_core", std::to_string(dram_bytes_per_cycle(2)));
  std::fprintf(stderr,
               "bench_cpu_kernels: ISAs %s; working set %.0f MiB (last-level cache %.0f MiB); read bandwidth "
               "%.2f GB/s (1 thread), %.2f GB/s (2 threads)\n",
               isa_list.c_str(), static_cast<double>(ws) / (1 << 20),
               static_cast<double>(last_level_cache_bytes()) / (1 << 20), g_read_bandwidth[1] / 1e9,
               g_read_bandwidth[2] / 1e9);
  benchmark::AddCustomContext("isas", isa_list);
  benchmark::AddCustomContext("working_set_mib", std::to_string(ws >> 20));
  benchmark::AddCustomContext("read_bw_1t_gbs", std::to_string(g_read_bandwidth[1] / 1e9));
  benchmark::AddCustomContext("read_bw_2t_gbs", std::to_string(g_read_bandwidth[2] / 1e9));
  register_benchmarks(isas);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
