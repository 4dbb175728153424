#pragma once
// Repacking a loaded model's MXFP4 experts for the CPU kernels (kMXFP4_R16, cpu_kernels/repack.h), in place in the
// memory the weights were copied into: the copy at load is the moment to write the layout the kernels want. Only
// the CPU fast path reads kMXFP4_R16 (KernelTable::gemm_mxfp4_r16); the reference pass and the GPU upload need the
// file's layout and refuse a repacked model (has_repacked_experts).
#include <cstdint>

#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// Whether any layer's gate, up or down experts are kMXFP4_R16.
bool has_repacked_experts(const Model& model);

/// What repack_experts_r16 did.
struct RepackResult {
  uint64_t num_tensors = 0;  // expert tensors rewritten (gate, up, down of each layer that qualified)
  uint64_t num_bytes = 0;    // their bytes
  double seconds = 0.0;      // wall time
};

/// Rewrites every MXFP4 gate/up/down expert tensor whose row count is a multiple of 16 into kMXFP4_R16 and sets its
/// view's type; tensors of other types or shapes stay as they are. num_threads ≥ 1 workers split the 16-row groups.
/// Already repacked tensors are skipped (calling it twice changes nothing). Errors (the model unchanged):
/// kUnsupported when the weights are mapped rather than in memory (gguf::File::rewrite_in_memory), kIo when the
/// workers' 16-row scratch buffers cannot be allocated or from mprotect.
Expected<RepackResult> repack_experts_r16(Model& model, int num_threads);

}  // namespace hetmoe
