#pragma once
// Repacking a loaded model's weights for the CPU kernels, in place in the memory the weights were copied into (the
// copy at load is the moment to write the layout the kernels want): MXFP4 experts into kMXFP4_R16 and the Q8_0
// attention and unembedding matrices into kQ8_0_R16 (cpu_kernels/repack.h). Only the CPU fast path reads these
// layouts (KernelTable::gemm_mxfp4_r16, gemm_q8_0_r16); the reference pass and the GPU upload need the file's layout
// and refuse a repacked model (has_repacked_weights).
#include <cstdint>

#include "runtime/base/expected.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// Whether any weight view is in a repacked layout (kMXFP4_R16 experts, kQ8_0_R16 matrices).
bool has_repacked_weights(const Model& model);
/// Whether any weight view has the repacked type (kMXFP4_R16 or kQ8_0_R16); for kMXFP4_R16 also an expert marked in
/// WeightView::r16_experts (repack_resident_weights_r16).
bool has_repacked_weights(const Model& model, TensorType type);

/// Which weights repack_weights_r16 rewrites (a variant repacks only what it has a kernel for).
struct RepackTargets {
  bool mxfp4_experts = true;  // MXFP4 gate/up/down experts → kMXFP4_R16
  bool q8_0_matrices = true;  // Q8_0 attn_q/k/v/output and the unembedding → kQ8_0_R16
};

/// What repack_weights_r16 did.
struct RepackResult {
  uint64_t num_tensors = 0;  // tensors rewritten (experts: gate, up, down of each layer; matrices)
  uint64_t num_experts = 0;  // single experts rewritten (repack_resident_weights_r16: gate, up, down each count)
  uint64_t num_bytes = 0;    // their bytes
  double seconds = 0.0;      // wall time
};

/// Rewrites the targeted tensors whose row count is a multiple of 16 into their R16 layout and sets their views'
/// type; tensors of other types or shapes stay as they are, and so does an unembedding shared with the token
/// embedding (tied: its rows are looked up one by one). num_threads ≥ 1 workers split the 16-row groups. Already
/// repacked tensors are skipped (calling it twice changes nothing). Errors (the model unchanged): kUnsupported when
/// the weights are mapped rather than in memory (gguf::File::rewrite_in_memory), kIo when the workers' 16-row scratch
/// buffers cannot be allocated or from mprotect.
Expected<RepackResult> repack_weights_r16(Model& model, int num_threads, RepackTargets targets = {});

/// The same for a mapped model whose RAM tier made part of the weights resident (gguf::File::make_resident): only
/// resident bytes are rewritten — each targeted matrix whose bytes are all resident (its view's type changes) and
/// each resident expert of a targeted expert tensor, one by one (WeightView::r16_experts marks it; the experts paged
/// from disk keep the file's layout, and their view's type stays kMXFP4). Call it once, before the forward pass
/// reads the weights. Errors: as repack_weights_r16 (rewrite_resident for mprotect); kUnsupported for a file in
/// memory or one with nothing resident (the model unchanged).
Expected<RepackResult> repack_resident_weights_r16(Model& model, int num_threads, RepackTargets targets = {});

}  // namespace hetmoe
