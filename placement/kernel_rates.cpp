#include "placement/kernel_rates.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/reference.h"
#include "cpu_kernels/repack.h"
#include "runtime/base/huge_pages.h"

namespace hetmoe::placement {

namespace {

/// Runs `run` once (warm-up: pages touched, threads started), then num_reps times; the shortest run in seconds.
template <class Fn>
double best_seconds(const Fn& run, int num_reps) {
  run();
  double best_s = 1e30;
  for (int rep = 0; rep < num_reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best_s = std::min(best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best_s;
}

}  // namespace

Expected<double> measure_cpu_gemv_bytes_per_s(TensorType type, uint64_t num_bytes, int num_threads, int num_reps) {
  if (type != TensorType::kMXFP4 && type != TensorType::kQ8_0)
    return make_error(ErrorCode::kInvalidArgument, "GEMV rate: only MXFP4 and Q8_0 are measured");
  if (num_threads < 1 || num_reps < 1)
    return make_error(ErrorCode::kInvalidArgument, "GEMV rate: num_threads and num_reps must be >= 1");
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  const cpu::KernelTable& k = cpu::kernel_table(*isa);
  constexpr int64_t kCols = 2880;
  const uint64_t block_bytes = type == TensorType::kMXFP4 ? 17 : 34;  // per 32 values
  const uint64_t row_bytes = kCols / 32 * block_bytes;
  const auto num_rows = static_cast<int64_t>(std::max<uint64_t>(num_bytes / row_bytes, 64) / 16 * 16);
  // 2 MiB-aligned and advised for transparent huge pages, as the weights hetmoe loads into memory and the read probe
  // (profiler::measure_read_bandwidth) are: on one Zen 4 core the R16 GEMVs stream 25–35 % (MXFP4) and ~15 % (Q8_0)
  // faster from huge pages (BM_Gemv expert_4x3, 1 thread, 3 alternating rounds: 19.5–22.3 → 27.2–27.6 GB/s and
  // 21.7–22.5 → 25.0–26.2), so with 4 KiB pages this probe under-measured what decode reads.
  HugePageBuffer matrix(num_rows * row_bytes);
  if (matrix.data() == nullptr)
    return make_error(ErrorCode::kIo, fmt::format("GEMV rate: cannot allocate {} bytes", num_rows * row_bytes));
  uint8_t* const w = matrix.data();
  // Valid blocks: MXFP4 scale byte 120 (2^-7) then nibbles; Q8_0 f16 scale 0x2000 then int8 values.
  for (int64_t r = 0; r < num_rows; ++r) {
    uint8_t* row = w + r * row_bytes;
    for (uint64_t b = 0; b < row_bytes; ++b) row[b] = static_cast<uint8_t>((r * 131 + b * 29) & 0x77);
    for (uint64_t blk = 0; blk < kCols / 32; ++blk) {
      if (type == TensorType::kMXFP4) {
        row[blk * block_bytes] = 120;
      } else {
        row[blk * block_bytes] = 0x00;
        row[blk * block_bytes + 1] = 0x20;
      }
    }
  }
  // Where the selected variant has an R16 kernel for the type, the CPU path repacks such weights at load
  // (runtime/model/weights_repack.h): measure that kernel, on the matrix repacked (its scales in their places).
  const auto r16 = type == TensorType::kMXFP4 ? k.gemm_mxfp4_r16 : k.gemm_q8_0_r16;
  if (r16 != nullptr) {
    std::vector<uint8_t> scratch(16 * row_bytes);
    (type == TensorType::kMXFP4 ? cpu::repack_mxfp4_r16 : cpu::repack_q8_0_r16)(w, row_bytes, 0, num_rows / 16,
                                                                              scratch.data());
  }
  std::vector<float> x(kCols);       // (kCols)
  for (int64_t i = 0; i < kCols; ++i) x[i] = static_cast<float>((i % 7) - 3) * 0.25f;
  std::vector<cpu::ActQ8Block> xq(kCols / 32);  // (kCols / 32)
  k.quantize_act_q8(x.data(), xq.data(), kCols);
  std::vector<float> y(num_rows);    // (num_rows)
  tbb::task_arena arena(num_threads);
  const int64_t grain = std::max<int64_t>(16, num_rows / (8 * num_threads) / 16 * 16);
  auto run = [&] {
    arena.execute([&] {
      if (r16 != nullptr) {  // whole 16-row groups
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, num_rows / 16, grain / 16),
                          [&](const tbb::blocked_range<int64_t>& g) {
                            const int64_t r0 = g.begin() * 16, r1 = g.end() * 16;
                            r16(w, row_bytes, r0, r1, xq.data(), 1, kCols, y.data() + r0, r1 - r0);
                          });
        return;
      }
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, num_rows, grain), [&](const tbb::blocked_range<int64_t>& r) {
        if (type == TensorType::kMXFP4)
          k.gemv_mxfp4(w, row_bytes, r.begin(), r.end(), xq.data(), kCols, y.data() + r.begin());
        else
          k.gemv_q8_0(w, row_bytes, r.begin(), r.end(), xq.data(), kCols, y.data() + r.begin());
      });
    });
  };
  const double best_s = best_seconds(run, num_reps);
  return static_cast<double>(num_rows * row_bytes) / best_s;
}

Expected<double> measure_cpu_attention_flops(int num_threads, int num_reps, bool bf16) {
  if (num_threads < 1 || num_reps < 1)
    return make_error(ErrorCode::kInvalidArgument, "attention rate: num_threads and num_reps must be >= 1");
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  const cpu::KernelTable& k = cpu::kernel_table(*isa);
  // gpt-oss's shape: 12 full-attention layers × 8 KV heads of 4096 keys, 8 query heads each, head_dim 64: ~100 MB of
  // K/V, as one decode token reads at depth 4096 (from DRAM, like the token).
  constexpr int64_t kLayers = 12, kKvHeads = 8, kGroup = 8, kHeadDim = 64, kKeys = 4096;
  constexpr int64_t kRowBytes = kHeadDim * 2;  // f16
  constexpr uint64_t kHeadBytes = static_cast<uint64_t>(kKeys * kRowBytes);
  const uint64_t total = kLayers * kKvHeads * 2 * kHeadBytes;  // (layer, kv head, K | V, key, dim)
  HugePageBuffer kv(total);  // as the KV cache
  if (kv.data() == nullptr)
    return make_error(ErrorCode::kIo, fmt::format("attention rate: cannot allocate {} bytes", total));
  uint16_t pattern[2048];  // 4 KiB of f16 values, repeated
  for (int i = 0; i < 2048; ++i) pattern[i] = ref::f32_to_f16(static_cast<float>(i * 37 % 17 - 8) * 0.05f);
  for (uint64_t off = 0; off < total; off += sizeof pattern)
    std::memcpy(kv.data() + off, pattern, std::min<uint64_t>(sizeof pattern, total - off));
  std::vector<float> q(static_cast<size_t>(kKvHeads * kGroup * kHeadDim));  // (kv head, group, head_dim)
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(static_cast<int>(i % 13) - 6) * 0.1f;
  // Each head's keys split into chunks over the threads when there are fewer heads than threads (flash-decoding, as
  // the CPU path does); one task per (head, chunk), each with its own scratch.
  const int64_t chunks = std::max<int64_t>(1, (num_threads + kKvHeads - 1) / kKvHeads);
  const int64_t num_tasks = kKvHeads * chunks;
  const int64_t pitch = cpu::attn_tile_pitch(kHeadDim), rows = cpu::attn_tile_rows(kGroup);
  // The bf16 tiles where the runtime would run them (attention_cpu.cpp: f16 K/V read in place), else the f32 ones.
  const bool use_bf16 = bf16 && k.attn_tile_pack_q_bf16 != nullptr && k.attn_tile_update_bf16_kv_f16 != nullptr &&
                        kGroup >= k.attn_tile_bf16_min_rows;
  struct Scratch {
    std::vector<uint16_t> qt16;
    std::vector<float> qt, k, s, out, max, sum;
    std::vector<int32_t> begin, end;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(num_tasks));
  for (Scratch& sc : scratch) {
    sc.qt.assign(static_cast<size_t>(cpu::attn_tile_qt_floats(kGroup, kHeadDim)), 0.0f);
    sc.qt16.assign(sc.qt.size(), 0);
    sc.k.assign(static_cast<size_t>((cpu::kAttnTileMaxKeys + 1) * pitch), 0.0f);
    sc.s.assign(static_cast<size_t>(cpu::attn_tile_scores_floats(kGroup)), 0.0f);
    sc.out.assign(static_cast<size_t>(rows * pitch), 0.0f);
    sc.max.assign(static_cast<size_t>(rows), 0.0f);
    sc.sum.assign(static_cast<size_t>(rows), 0.0f);
    sc.begin.assign(kGroup, 0);
    sc.end.assign(kGroup, 0);
  }
  const float scale = 0.125f;  // 1 / sqrt(64)
  const auto run_task = [&](int64_t layer, int64_t task) {
    const int64_t head = task / chunks, c = task % chunks;
    Scratch& sc = scratch[static_cast<size_t>(task)];
    const uint8_t* kh = kv.data() + (layer * kKvHeads + head) * 2 * kHeadBytes;
    const uint8_t* vh = kh + kHeadBytes;
    if (use_bf16) {
      std::fill(sc.qt16.begin(), sc.qt16.end(), uint16_t{0});
      k.attn_tile_pack_q_bf16(q.data() + head * kGroup * kHeadDim, kGroup, kHeadDim, 0, sc.qt16.data());
    } else {
      std::fill(sc.qt.begin(), sc.qt.end(), 0.0f);
      k.attn_tile_pack_q(q.data() + head * kGroup * kHeadDim, kGroup, kHeadDim, 0, sc.qt.data());
    }
    std::fill(sc.out.begin(), sc.out.end(), 0.0f);
    std::fill(sc.max.begin(), sc.max.end(), -std::numeric_limits<float>::infinity());
    std::fill(sc.sum.begin(), sc.sum.end(), 0.0f);
    const int64_t lo = kKeys * c / chunks, hi = kKeys * (c + 1) / chunks;
    for (int64_t j = lo; j < hi; j += cpu::kAttnTileMaxKeys) {
      const int64_t n = std::min(cpu::kAttnTileMaxKeys, hi - j);
      std::fill(sc.end.begin(), sc.end.end(), static_cast<int32_t>(n));
      const int64_t next_n = std::min(cpu::kAttnTileMaxKeys, hi - j - n);
      const cpu::PrefetchRange next[2] = {{kh + (j + n) * kRowBytes, next_n * kRowBytes},
                                          {vh + (j + n) * kRowBytes, next_n * kRowBytes}};
      if (use_bf16) {
        k.attn_tile_update_bf16_kv_f16(sc.qt16.data(), kGroup, kh + j * kRowBytes, kRowBytes, vh + j * kRowBytes,
                                       kRowBytes, n, kHeadDim, scale, sc.begin.data(), sc.end.data(), sc.s.data(),
                                       sc.max.data(), sc.sum.data(), sc.out.data(), next, next_n > 0 ? 2 : 0);
        continue;
      }
      k.kv_rows_f32_f16(kh + j * kRowBytes, kRowBytes, n, kHeadDim, sc.k.data());
      k.attn_tile_update_v_f16(sc.qt.data(), kGroup, sc.k.data(), vh + j * kRowBytes, kRowBytes, n, kHeadDim, scale,
                               sc.begin.data(), sc.end.data(), sc.s.data(), sc.max.data(), sc.sum.data(),
                               sc.out.data(), next, next_n > 0 ? 2 : 0);
    }
  };
  tbb::task_arena arena(num_threads);
  auto run = [&] {
    arena.execute([&] {
      for (int64_t layer = 0; layer < kLayers; ++layer)  // one parallel region per layer, as a decode step runs them
        tbb::parallel_for(int64_t{0}, num_tasks, [&](int64_t task) { run_task(layer, task); });
    });
  };
  const double best_s = best_seconds(run, num_reps);
  return 4.0 * kLayers * kKvHeads * kGroup * kKeys * kHeadDim / best_s;
}

}  // namespace hetmoe::placement
