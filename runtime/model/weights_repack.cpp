// In-place repacking of a model's MXFP4 experts (runtime/model/weights_repack.h).
#include "runtime/model/weights_repack.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <tbb/blocked_range.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <new>
#include <vector>

#include "cpu_kernels/repack.h"

namespace hetmoe {

bool has_repacked_experts(const Model& model) {
  for (const LayerWeights& w : model.layers)
    for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps})
      if (v->type == TensorType::kMXFP4_R16) return true;
  return false;
}

Expected<RepackResult> repack_experts_r16(Model& model, int num_threads) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<WeightView*> todo;
  for (LayerWeights& w : model.layers)
    for (WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps})
      if (v->type == TensorType::kMXFP4 && v->num_rows % cpu::kMxfp4R16Rows == 0 && v->info != nullptr)
        todo.push_back(v);
  RepackResult result;
  if (todo.empty()) return result;
  // One 16-row scratch buffer per worker, allocated before any byte changes.
  tbb::task_arena arena(num_threads < 1 ? 1 : num_threads);
  uint64_t max_row_bytes = 0;
  for (const WeightView* v : todo) max_row_bytes = std::max(max_row_bytes, v->row_bytes);
  const uint64_t scratch_bytes = cpu::kMxfp4R16Rows * max_row_bytes;
  std::unique_ptr<uint8_t[]> scratch(new (std::nothrow) uint8_t[scratch_bytes * arena.max_concurrency()]);
  if (!scratch)
    return make_error(ErrorCode::kIo, fmt::format("repacking the MXFP4 experts: cannot allocate {} bytes of scratch",
                                                  scratch_bytes * arena.max_concurrency()));
  HETMOE_RETURN_IF_ERROR(model.file->rewrite_in_memory([&] {
    arena.execute([&] {
      for (WeightView* v : todo) {
        // The tensor's bytes through its view: an expert stack {K, N, E} is E · N rows, all in groups of 16.
        auto* data = const_cast<uint8_t*>(v->data);
        const auto num_groups = static_cast<int64_t>(v->info->num_bytes / v->row_bytes / cpu::kMxfp4R16Rows);
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, num_groups, 64), [&](const tbb::blocked_range<int64_t>& r) {
          const int slot = tbb::this_task_arena::current_thread_index();
          cpu::repack_mxfp4_r16(data, v->row_bytes, r.begin(), r.end(), scratch.get() + slot * scratch_bytes);
        });
        v->type = TensorType::kMXFP4_R16;
        ++result.num_tensors;
        result.num_bytes += v->info->num_bytes;
      }
    });
  }));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace hetmoe
