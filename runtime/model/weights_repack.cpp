// In-place repacking of a model's MXFP4 experts and Q8_0 matrices (runtime/model/weights_repack.h).
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
namespace {

/// The Q8_0 matrices a repack may rewrite: every layer's attention projections, and the unembedding unless it is the
/// token embedding (tied).
std::vector<WeightView*> dense_matrices(Model& model) {
  std::vector<WeightView*> out;
  for (LayerWeights& w : model.layers)
    for (WeightView* v : {&w.wq, &w.wk, &w.wv, &w.wo}) out.push_back(v);
  if (model.output.data != model.token_embd.data) out.push_back(&model.output);
  return out;
}

}  // namespace

bool has_repacked_weights(const Model& model) {
  return has_repacked_weights(model, TensorType::kMXFP4_R16) || has_repacked_weights(model, TensorType::kQ8_0_R16);
}

bool has_repacked_weights(const Model& model, TensorType type) {
  for (const LayerWeights& w : model.layers)
    for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps, &w.wq, &w.wk, &w.wv, &w.wo})
      if (v->type == type) return true;
  return model.output.type == type;
}

Expected<RepackResult> repack_weights_r16(Model& model, int num_threads, RepackTargets targets) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<WeightView*> todo;
  const auto add = [&](WeightView* v, TensorType from) {
    if (v->type == from && v->num_rows % cpu::kR16Rows == 0 && v->info != nullptr) todo.push_back(v);
  };
  if (targets.mxfp4_experts)
    for (LayerWeights& w : model.layers)
      for (WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps}) add(v, TensorType::kMXFP4);
  if (targets.q8_0_matrices)
    for (WeightView* v : dense_matrices(model)) add(v, TensorType::kQ8_0);
  RepackResult result;
  if (todo.empty()) return result;
  // One 16-row scratch buffer per worker, allocated before any byte changes.
  tbb::task_arena arena(num_threads < 1 ? 1 : num_threads);
  uint64_t max_row_bytes = 0;
  for (const WeightView* v : todo) max_row_bytes = std::max(max_row_bytes, v->row_bytes);
  const uint64_t scratch_bytes = cpu::kR16Rows * max_row_bytes;
  std::unique_ptr<uint8_t[]> scratch(new (std::nothrow) uint8_t[scratch_bytes * arena.max_concurrency()]);
  if (!scratch)
    return make_error(ErrorCode::kIo, fmt::format("repacking the weights: cannot allocate {} bytes of scratch",
                                                  scratch_bytes * arena.max_concurrency()));
  HETMOE_RETURN_IF_ERROR(model.file->rewrite_in_memory([&] {
    arena.execute([&] {
      for (WeightView* v : todo) {
        // The tensor's bytes through its view: an expert stack {K, N, E} is E · N rows, all in groups of 16.
        auto* data = const_cast<uint8_t*>(v->data);
        const auto num_groups = static_cast<int64_t>(v->info->num_bytes / v->row_bytes / cpu::kR16Rows);
        const bool mxfp4 = v->type == TensorType::kMXFP4;
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, num_groups, 64), [&](const tbb::blocked_range<int64_t>& r) {
          const int slot = tbb::this_task_arena::current_thread_index();
          (mxfp4 ? cpu::repack_mxfp4_r16 : cpu::repack_q8_0_r16)(data, v->row_bytes, r.begin(), r.end(),
                                                                  scratch.get() + slot * scratch_bytes);
        });
        v->type = mxfp4 ? TensorType::kMXFP4_R16 : TensorType::kQ8_0_R16;
        ++result.num_tensors;
        result.num_bytes += v->info->num_bytes;
      }
    });
  }));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace hetmoe
