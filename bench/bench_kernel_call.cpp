// One quantized GEMV/GEMM of a fixed shape on synthetic weights, repeated REPS times, for instruction counts that do
// not depend on the machine's load (callgrind counts the same on a busy and a quiet host; AVX-512 does not run
// under valgrind 3.19, so that variant is only timed here):
//   valgrind --tool=callgrind --toggle-collect='*gemm_quant<*' build/bin/bench_kernel_call avx2 mxfp4 256 2880 512
// (TOKENS = 1: '*gemv_quant<*'. Not '*gemm_quant*': that pattern also matches the functions gemm_quant<> calls, and
// each match toggles collection, so entering one switches counting off.)
// Prints ms per call and GMAC/s (wall clock: compare only runs interleaved in time) and a checksum of y.
// Usage: bench_kernel_call ISA(scalar|avx2|avx512) TYPE(mxfp4|q8_0) ROWS COLS(multiple of 32) TOKENS [REPS]
// (TOKENS = 1 calls the GEMV).

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_kernels/kernels.h"

namespace {

int64_t parse_count(const char* name, const char* text, int64_t min) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || v < min) {
    std::fprintf(stderr, "bench_kernel_call: %s must be an integer >= %lld, got '%s'\n", name,
                 static_cast<long long>(min), text);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hetmoe::cpu;
  if (argc < 6 || argc > 7) {
    std::fprintf(stderr, "usage: bench_kernel_call ISA(scalar|avx2|avx512) TYPE(mxfp4|q8_0) ROWS COLS TOKENS [REPS]\n");
    return 2;
  }
  const auto isa = select_isa(argv[1], supported_isas());
  if (!isa) {
    std::fprintf(stderr, "bench_kernel_call: %s\n", isa.error().message.c_str());
    return 2;
  }
  const std::string type = argv[2];
  if (type != "mxfp4" && type != "q8_0") {
    std::fprintf(stderr, "bench_kernel_call: TYPE must be mxfp4 or q8_0, got '%s'\n", argv[2]);
    return 2;
  }
  const int64_t rows = parse_count("ROWS", argv[3], 1), cols = parse_count("COLS", argv[4], 32);
  const int64_t tokens = parse_count("TOKENS", argv[5], 1), reps = argc > 6 ? parse_count("REPS", argv[6], 1) : 1;
  if (cols % 32 != 0) {
    std::fprintf(stderr, "bench_kernel_call: COLS must be a multiple of 32, got %lld\n", static_cast<long long>(cols));
    return 2;
  }
  const KernelTable& k = kernel_table(*isa);
  const bool mxfp4 = type == "mxfp4";
  const uint64_t block_bytes = mxfp4 ? 17 : 34;
  const uint64_t row_bytes = static_cast<uint64_t>(cols / 32) * block_bytes;

  // Random codes (LCG) with realistic scales: MXFP4 exponents 120..127, Q8_0 f16 scales around 2^-7.
  uint32_t state = 12345;
  auto next = [&state] { return state = state * 1664525u + 1013904223u; };
  std::vector<uint8_t> w(static_cast<size_t>(rows) * row_bytes);
  for (auto& byte : w) byte = static_cast<uint8_t>(next() >> 24);
  for (size_t b = 0; b < w.size() / block_bytes; ++b) {
    uint8_t* block = w.data() + b * block_bytes;
    if (mxfp4) {
      block[0] = static_cast<uint8_t>(120 + (block[0] & 7));
    } else {
      const uint16_t d = static_cast<uint16_t>(0x2000 + (block[1] & 0x3ff));
      std::memcpy(block, &d, 2);
    }
  }
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (auto& v : x) v = static_cast<float>(next() >> 8) / 16777216.0f - 0.5f;
  std::vector<ActQ8Block> xq(x.size() / 32);
  k.quantize_act_q8(x.data(), xq.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(static_cast<size_t>(tokens * rows));

  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < reps; ++i) {
    if (tokens == 1)
      (mxfp4 ? k.gemv_mxfp4 : k.gemv_q8_0)(w.data(), row_bytes, 0, rows, xq.data(), cols, y.data());
    else
      (mxfp4 ? k.gemm_mxfp4 : k.gemm_q8_0)(w.data(), row_bytes, 0, rows, xq.data(), tokens, cols, y.data(), rows);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double checksum = 0.0;
  for (float v : y) checksum += v;
  const double macs = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(tokens * reps);
  std::printf("%s %s rows %lld cols %lld tokens %lld: %.3f ms/call, %.2f GMAC/s (checksum %.6g)\n", argv[1],
              type.c_str(), static_cast<long long>(rows), static_cast<long long>(cols),
              static_cast<long long>(tokens), 1e3 * sec / static_cast<double>(reps), macs / sec * 1e-9, checksum);
  return 0;
}
