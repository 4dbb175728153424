#pragma once
// The executor's side of a Plan's RAM tier (placement/ram_tier.h) on a mapped model file: the weights the plan keeps
// resident are copied into anonymous memory in place (gguf::File::make_resident: same addresses, so every tensor
// view and kernel stays as it is) and locked where allowed; paged experts stay pointing into the mapping and are
// read from disk by the page cache when selected. After a GPU pass has uploaded its experts, their host pages are
// released (gguf::File::release_pages), so GPU-resident experts take no RAM.

#include <cstdint>
#include <string>
#include <vector>

#include "placement/plan.h"
#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

namespace hetmoe {

/// File byte ranges of the weights `plan` keeps in RAM: every tensor that is not an expert tensor
/// (blk.N.ffn_{gate,up,down}_exps.*), and the slices of CPU experts not in the layer's paged_experts (an expert
/// tensor's last dimension is the expert; slice e is bytes [e·n/E, (e+1)·n/E)). Adjacent ranges are merged.
std::vector<gguf::File::ByteRange> resident_ranges(const Model& model, const placement::Plan& plan);

/// File byte ranges of the experts `plan` places on the GPU (their slices of the expert tensors).
std::vector<gguf::File::ByteRange> gpu_expert_ranges(const Model& model, const placement::Plan& plan);

/// Applies plan.ram_tier to a mapped model: nothing when the tier is disabled or the file is in memory already.
/// `progress` as gguf::File::LoadProgress. Returns a line for the user ("RAM tier: 8.1 GiB resident (locked), 212
/// experts paged from disk"), empty when nothing was done. Errors: gguf::File::make_resident's.
Expected<std::string> apply_ram_tier(const Model& model, const placement::Plan& plan,
                                     const gguf::File::LoadProgress& progress = {});

}  // namespace hetmoe
