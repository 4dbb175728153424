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
    for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps, &w.wq, &w.wk, &w.wv, &w.wo}) {
      if (v->type == type) return true;
      if (type == TensorType::kMXFP4_R16 &&
          std::find(v->r16_experts.begin(), v->r16_experts.end(), uint8_t{1}) != v->r16_experts.end())
        return true;
    }
  return model.output.type == type;
}

namespace {

/// 16-row groups [group_begin, group_end) of one view to rewrite; expert_idx ≥ 0: one expert's groups (its flag in
/// r16_experts is set), −1: the whole tensor (its type changes).
struct RepackItem {
  WeightView* view = nullptr;
  int64_t group_begin = 0, group_end = 0;
  int64_t expert_idx = -1;
};

/// Rewrites the items through `rewrite` (gguf::File::rewrite_in_memory or rewrite_resident) on num_threads workers.
Expected<RepackResult> repack_items(Model& model, int num_threads, const std::vector<RepackItem>& items, bool resident) {
  const auto start = std::chrono::steady_clock::now();
  RepackResult result;
  if (items.empty()) return result;
  // One 16-row scratch buffer per worker, allocated before any byte changes.
  tbb::task_arena arena(num_threads < 1 ? 1 : num_threads);
  uint64_t max_row_bytes = 0;
  for (const RepackItem& it : items) max_row_bytes = std::max(max_row_bytes, it.view->row_bytes);
  const uint64_t scratch_bytes = cpu::kR16Rows * max_row_bytes;
  std::unique_ptr<uint8_t[]> scratch(new (std::nothrow) uint8_t[scratch_bytes * arena.max_concurrency()]);
  if (!scratch)
    return make_error(ErrorCode::kIo, fmt::format("repacking the weights: cannot allocate {} bytes of scratch",
                                                  scratch_bytes * arena.max_concurrency()));
  const auto rewrite = [&] {
    arena.execute([&] {
      for (const RepackItem& it : items) {
        WeightView* v = it.view;
        // The tensor's bytes through its view: an expert stack {K, N, E} is E · N rows, all in groups of 16.
        auto* data = const_cast<uint8_t*>(v->data);
        const bool mxfp4 = v->type == TensorType::kMXFP4;
        tbb::parallel_for(tbb::blocked_range<int64_t>(it.group_begin, it.group_end, 64),
                          [&](const tbb::blocked_range<int64_t>& r) {
                            const int slot = tbb::this_task_arena::current_thread_index();
                            (mxfp4 ? cpu::repack_mxfp4_r16 : cpu::repack_q8_0_r16)(
                                data, v->row_bytes, r.begin(), r.end(), scratch.get() + slot * scratch_bytes);
                          });
        const uint64_t bytes = static_cast<uint64_t>(it.group_end - it.group_begin) * cpu::kR16Rows * v->row_bytes;
        if (it.expert_idx >= 0) {
          if (v->r16_experts.empty()) v->r16_experts.assign(model.hparams.num_experts, 0);
          v->r16_experts[static_cast<size_t>(it.expert_idx)] = 1;
          ++result.num_experts;
        } else {
          v->type = mxfp4 ? TensorType::kMXFP4_R16 : TensorType::kQ8_0_R16;
          ++result.num_tensors;
        }
        result.num_bytes += bytes;
      }
    });
  };
  HETMOE_RETURN_IF_ERROR(resident ? model.file->rewrite_resident(rewrite) : model.file->rewrite_in_memory(rewrite));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

int64_t num_groups_of(const WeightView& v) {
  return static_cast<int64_t>(v.info->num_bytes / v.row_bytes / cpu::kR16Rows);
}

bool repackable(const WeightView& v, TensorType from) {
  return v.type == from && v.num_rows % cpu::kR16Rows == 0 && v.info != nullptr && v.r16_experts.empty();
}

}  // namespace

Expected<RepackResult> repack_weights_r16(Model& model, int num_threads, RepackTargets targets) {
  std::vector<RepackItem> items;
  const auto add = [&](WeightView* v, TensorType from) {
    if (repackable(*v, from)) items.push_back({v, 0, num_groups_of(*v), -1});
  };
  if (targets.mxfp4_experts)
    for (LayerWeights& w : model.layers)
      for (WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps}) add(v, TensorType::kMXFP4);
  if (targets.q8_0_matrices)
    for (WeightView* v : dense_matrices(model)) add(v, TensorType::kQ8_0);
  if (items.empty()) return RepackResult{};
  return repack_items(model, num_threads, items, /*resident=*/false);
}

Expected<RepackResult> repack_resident_weights_r16(Model& model, int num_threads, RepackTargets targets) {
  const gguf::File& file = *model.file;
  if (file.in_memory() || file.resident_bytes() == 0)
    return make_error(ErrorCode::kUnsupported,
                      file.path() + ": no weights of the mapped file are resident: there is nothing to repack");
  // The file offset of a view's byte at p.
  const auto offset_of = [&](const WeightView& v, const uint8_t* p) {
    return file.data_offset() + v.info->offset + static_cast<uint64_t>(p - v.info->data);
  };
  std::vector<RepackItem> items;
  if (targets.mxfp4_experts) {
    const uint64_t E = model.hparams.num_experts;
    for (LayerWeights& w : model.layers)
      for (WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps}) {
        if (!repackable(*v, TensorType::kMXFP4) || E == 0 || v->info->num_bytes != E * v->num_rows * v->row_bytes)
          continue;
        const auto groups = static_cast<int64_t>(v->num_rows / cpu::kR16Rows);
        for (uint64_t e = 0; e < E; ++e)
          if (file.is_resident(offset_of(*v, v->row(0, e)), v->num_rows * v->row_bytes))
            items.push_back({v, static_cast<int64_t>(e) * groups, static_cast<int64_t>(e + 1) * groups,
                             static_cast<int64_t>(e)});
      }
  }
  if (targets.q8_0_matrices)
    for (WeightView* v : dense_matrices(model))
      if (repackable(*v, TensorType::kQ8_0) && file.is_resident(offset_of(*v, v->data), v->info->num_bytes))
        items.push_back({v, 0, num_groups_of(*v), -1});
  if (items.empty()) return RepackResult{};
  return repack_items(model, num_threads, items, /*resident=*/true);
}

}  // namespace hetmoe
