#pragma once
// Chooses and creates the forward pass the CLI runs: the CPU fast path by default, the scalar reference with
// `--reference`. Commands call create_forward() and never name an implementation.

#include <cstdint>
#include <memory>

#include "runtime/expected.h"
#include "runtime/forward_pass.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace hetmoe {

struct ForwardOptions {
  uint32_t context_length = 8192;            // tokens (1..model context_length)
  KvCacheType kv_type = KvCacheType::kF16;
  int num_threads = 0;                       // 0 = all cores
  bool use_reference = false;                // the scalar oracle (runtime/forward_reference.h)
};

/// The forward pass for `model` (which must outlive it). Errors: the implementation's (context out of range,
/// allocation failure).
Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options);

/// "reference" or the fast path's name with its ISA, e.g. "cpu avx512" (for the figures commands print).
const char* forward_path_name(const ForwardOptions& options);

}  // namespace hetmoe
