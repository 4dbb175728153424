// Throughput of the CPU kernel variants (cpu_kernels/kernels.h) against the memory-read roofline.
//
// Decode GEMV is memory bound: each iteration multiplies one "layer step" — kMatsPerStep expert-sized matrices
// (2880 × 2880, as 4 experts × gate/up/down) — with one activation vector, and the steps rotate over a working set of
// about 1 GiB (HETMOE_BENCH_WS_MB), beyond L2 (2 MiB/core) and L3 (480 MiB here), so the weights stream from DRAM.
// SetBytesProcessed counts the weight bytes, so bytes_per_second is the weight-streaming rate. BM_ReadBandwidth/<type>
// reads the same working set the same way with a plain SSE2 float sum (no ISA flags): that is the roofline.
// "threads:2" variants split the rows of every matrix between the calling thread and one persistent worker
// (std::barrier), as a forward pass would.
//
// Run: build-*/bin/bench_cpu_kernels [--benchmark_filter=...]. On a shared machine (CPU and DRAM shared with other
// work) take the best of interleaved repetitions: --benchmark_repetitions=5 --benchmark_enable_random_interleaving
// --benchmark_out=FILE --benchmark_out_format=json, then the max of bytes_per_second per name; and check `uptime`.

#include <benchmark/benchmark.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "runtime/ggml_types.h"

namespace {

using hetmoe::TensorType;
using hetmoe::cpu::ActQ8Block;
using hetmoe::cpu::Isa;
using hetmoe::cpu::KernelTable;

constexpr int64_t kRows = 2880;
constexpr int64_t kCols = 2880;
constexpr int64_t kMatsPerStep = 12;

/// Bytes of weights per type that the GEMV benchmarks rotate over: HETMOE_BENCH_WS_MB (MiB), default 1024.
uint64_t working_set_bytes() {
  const char* mb = std::getenv("HETMOE_BENCH_WS_MB");
  return (mb ? std::strtoull(mb, nullptr, 10) : 1024) << 20;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// A working set of num_mats [kRows][kCols] matrices of one type with realistic values (no inf/NaN/subnormal
/// products, which would time microcode assists instead of the kernel). One per type, kept for the whole run (so a
/// run over all five types holds 5 working sets; filter, or lower HETMOE_BENCH_WS_MB, on a small machine).
struct WorkingSet {
  TensorType type = TensorType::kF32;
  uint64_t mat_bytes = 0;
  int64_t num_mats = 0;
  std::vector<uint8_t> bytes;

  const uint8_t* mat(int64_t idx) const { return bytes.data() + static_cast<uint64_t>(idx % num_mats) * mat_bytes; }
  uint64_t row_bytes() const { return hetmoe::tensor_row_bytes(type, kCols); }
};

const WorkingSet& working_set(TensorType type) {
  static std::map<TensorType, WorkingSet> sets;
  WorkingSet& ws = sets[type];
  if (!ws.bytes.empty()) return ws;
  ws.type = type;
  ws.mat_bytes = hetmoe::tensor_row_bytes(type, kCols) * kRows;
  ws.num_mats = static_cast<int64_t>(working_set_bytes() / ws.mat_bytes);
  ws.num_mats -= ws.num_mats % kMatsPerStep;
  ws.bytes.assign(ws.mat_bytes * static_cast<uint64_t>(ws.num_mats), 0);
  uint64_t state = 1;
  for (size_t i = 0; i + 8 <= ws.bytes.size(); i += 8) {
    const uint64_t r = splitmix64(state);
    std::memcpy(ws.bytes.data() + i, &r, 8);
  }
  uint8_t* p = ws.bytes.data();
  const size_t n = ws.bytes.size();
  switch (type) {
    case TensorType::kMXFP4:
      for (size_t b = 0; b < n / hetmoe::kMXFP4BlockBytes; ++b) p[b * hetmoe::kMXFP4BlockBytes] = 120 + p[b * 17] % 10;
      break;
    case TensorType::kQ8_0:
      for (size_t b = 0; b < n / hetmoe::kQ8_0BlockBytes; ++b) {
        const uint16_t d = hetmoe::ref::f32_to_f16(0.01f);
        std::memcpy(p + b * hetmoe::kQ8_0BlockBytes, &d, 2);
      }
      break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (size_t i = 0; i < n / 2; ++i) {
        const float v = static_cast<float>(static_cast<int8_t>(p[2 * i])) / 128.0f;
        uint16_t h;
        if (type == TensorType::kF16) {
          h = hetmoe::ref::f32_to_f16(v);
        } else {
          uint32_t bits;
          std::memcpy(&bits, &v, 4);
          h = static_cast<uint16_t>(bits >> 16);
        }
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    case TensorType::kF32:
      for (size_t i = 0; i < n / 4; ++i) {
        const float v = static_cast<float>(static_cast<int8_t>(p[4 * i])) / 128.0f;
        std::memcpy(p + 4 * i, &v, 4);
      }
      break;
  }
  return ws;
}

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
std::pair<int64_t, int64_t> thread_rows(int thread_idx, int num_threads) {
  return {kRows * thread_idx / num_threads, kRows * (thread_idx + 1) / num_threads};
}

void BM_Gemv(benchmark::State& state, Isa isa, TensorType type, int num_threads) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const WorkingSet& ws = working_set(type);
  std::vector<float> x(kCols);
  uint64_t seed = 7;
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(splitmix64(seed) % 2001) - 1000) / 1000.0f;
  std::vector<ActQ8Block> xq(kCols / 32);
  k.quantize_act_q8(x.data(), xq.data(), kCols);
  std::vector<float> y(kRows * kMatsPerStep);
  ThreadPair threads(num_threads);
  int64_t step = 0;
  const uint64_t row_bytes = ws.row_bytes();
  for (auto _ : state) {
    const int64_t first = step * kMatsPerStep;
    threads.run([&](int thread_idx) {
      const auto [r0, r1] = thread_rows(thread_idx, num_threads);
      for (int64_t m = 0; m < kMatsPerStep; ++m) {
        const uint8_t* w = ws.mat(first + m);
        float* ym = y.data() + m * kRows + r0;
        switch (type) {
          case TensorType::kMXFP4: k.gemv_mxfp4(w, row_bytes, r0, r1, xq.data(), kCols, ym); break;
          case TensorType::kQ8_0: k.gemv_q8_0(w, row_bytes, r0, r1, xq.data(), kCols, ym); break;
          case TensorType::kF32: k.gemv_f32(w, row_bytes, r0, r1, x.data(), kCols, ym); break;
          case TensorType::kF16: k.gemv_f16(w, row_bytes, r0, r1, x.data(), kCols, ym); break;
          case TensorType::kBF16: k.gemv_bf16(w, row_bytes, r0, r1, x.data(), kCols, ym); break;
        }
      }
    });
    benchmark::DoNotOptimize(y.data());
    step = (step + 1) % (ws.num_mats / kMatsPerStep);
  }
  state.SetBytesProcessed(state.iterations() * kMatsPerStep * static_cast<int64_t>(ws.mat_bytes));
}

/// Sums n bytes (a multiple of 64) as floats, 4 independent chains of 16-byte loads. SSE2 is part of x86-64, so this
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

/// The roofline: the same rotating reads of the same working set as BM_Gemv of `type` (same rows per thread), with no
/// compute. Per working set, because two 1 GiB allocations can stream at different rates here (host page placement:
/// up to ~30 % apart), so a GEMV is only compared with reads of its own memory.
void BM_ReadBandwidth(benchmark::State& state, TensorType type, int num_threads) {
  const WorkingSet& ws = working_set(type);
  ThreadPair threads(num_threads);
  int64_t step = 0;
  float sums[2] = {0.0f, 0.0f};
  for (auto _ : state) {
    const int64_t first = step * kMatsPerStep;
    threads.run([&](int thread_idx) {
      const auto [r0, r1] = thread_rows(thread_idx, num_threads);
      // Whole 64-byte chunks of the thread's rows (the matrix rows are 1530 bytes: r0 · 1530 is a multiple of 64
      // only by chance, so the chunk grid starts at the rows' first byte).
      for (int64_t m = 0; m < kMatsPerStep; ++m) {
        const uint8_t* begin = ws.mat(first + m) + static_cast<uint64_t>(r0) * ws.row_bytes();
        sums[thread_idx] += read_sum(begin, static_cast<uint64_t>(r1 - r0) * ws.row_bytes() / 64 * 64);
      }
    });
    benchmark::DoNotOptimize(sums);
    step = (step + 1) % (ws.num_mats / kMatsPerStep);
  }
  state.SetBytesProcessed(state.iterations() * kMatsPerStep * static_cast<int64_t>(ws.mat_bytes));
}

/// Prefill: one expert matrix × num_tokens tokens (compute bound: each weight block is used num_tokens times);
/// items = multiply-adds, so items_per_second = MAC/s.
void BM_Gemm(benchmark::State& state, Isa isa, TensorType type) {
  const KernelTable& k = hetmoe::cpu::kernel_table(isa);
  const WorkingSet& ws = working_set(type);
  const int64_t num_tokens = state.range(0);
  std::vector<float> x(static_cast<size_t>(num_tokens * kCols));
  uint64_t seed = 9;
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(splitmix64(seed) % 2001) - 1000) / 1000.0f;
  std::vector<ActQ8Block> xq(x.size() / 32);
  k.quantize_act_q8(x.data(), xq.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(static_cast<size_t>(num_tokens * kRows));
  const uint8_t* w = ws.mat(0);
  for (auto _ : state) {
    if (type == TensorType::kMXFP4)
      k.gemm_mxfp4(w, ws.row_bytes(), 0, kRows, xq.data(), num_tokens, kCols, y.data(), kRows);
    if (type == TensorType::kQ8_0)
      k.gemm_q8_0(w, ws.row_bytes(), 0, kRows, xq.data(), num_tokens, kCols, y.data(), kRows);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * num_tokens * kRows * kCols);
}

void register_benchmarks() {
  const std::vector<Isa> isas = hetmoe::cpu::supported_isas();
  // Grouped by weight type, so that each working set is generated once.
  for (TensorType type :
       {TensorType::kMXFP4, TensorType::kQ8_0, TensorType::kF16, TensorType::kBF16, TensorType::kF32}) {
    const std::string type_name(hetmoe::tensor_type_traits(type).name);
    for (int num_threads : {1, 2}) {
      const std::string suffix = "/threads:" + std::to_string(num_threads);
      benchmark::RegisterBenchmark(("BM_ReadBandwidth/" + type_name + suffix).c_str(), BM_ReadBandwidth, type,
                                   num_threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      for (Isa isa : isas) {
        const std::string name = "BM_Gemv/" + type_name + "/" + hetmoe::cpu::isa_name(isa) + suffix;
        benchmark::RegisterBenchmark(name.c_str(), BM_Gemv, isa, type, num_threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
    if (type != TensorType::kMXFP4 && type != TensorType::kQ8_0) continue;
    for (Isa isa : isas) {
      const std::string name = "BM_Gemm/" + type_name + "/" + hetmoe::cpu::isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), BM_Gemm, isa, type)
          ->Arg(8)
          ->Arg(64)
          ->Arg(256)
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
