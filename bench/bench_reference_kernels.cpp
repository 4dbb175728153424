// Throughput of the scalar reference kernels (the baseline the SIMD kernels are measured against):
// one weight row · x per iteration, bytes = the row's bytes, so Google Benchmark prints GB/s of weights read.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/reference.h"

namespace {

using hetmoe::TensorType;

void BM_DotRow(benchmark::State& state, TensorType type) {
  const int64_t n = state.range(0);
  const uint64_t row_bytes = hetmoe::tensor_row_bytes(type, static_cast<uint64_t>(n));
  const int64_t num_rows = 64;  // cycle over a few rows so the data is not a single cache line set
  std::vector<uint8_t> rows(row_bytes * num_rows);
  std::mt19937 rng(0);
  for (auto& b : rows) b = static_cast<uint8_t>(rng());
  if (type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16) {
    for (auto& b : rows) b &= 0x3F;  // finite values
  }
  std::vector<float> x(static_cast<size_t>(n), 0.5f);
  int64_t r = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(hetmoe::ref::dot_row(type, rows.data() + r * row_bytes, x.data(), n));
    r = (r + 1) % num_rows;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(row_bytes));
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_DotRow, mxfp4, TensorType::kMXFP4)->Arg(2880);
BENCHMARK_CAPTURE(BM_DotRow, q8_0, TensorType::kQ8_0)->Arg(2880);
BENCHMARK_CAPTURE(BM_DotRow, f16, TensorType::kF16)->Arg(2880);
BENCHMARK_CAPTURE(BM_DotRow, bf16, TensorType::kBF16)->Arg(2880);
BENCHMARK_CAPTURE(BM_DotRow, f32, TensorType::kF32)->Arg(2880);

}  // namespace
