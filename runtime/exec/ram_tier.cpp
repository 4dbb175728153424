#include "runtime/exec/ram_tier.h"

#include <fmt/format.h>

#include <algorithm>

#include "placement/tensor_class.h"

namespace hetmoe {
namespace {

/// Layer index of "blk.N.…", or -1.
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  int l = 0;
  for (size_t i = 4; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    l = l * 10 + (name[i] - '0');
  }
  return l;
}

void merge(std::vector<gguf::File::ByteRange>& ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  std::vector<gguf::File::ByteRange> out;
  for (const auto& r : ranges) {
    if (r.num_bytes == 0) continue;
    if (!out.empty() && r.offset <= out.back().offset + out.back().num_bytes)
      out.back().num_bytes = std::max(out.back().offset + out.back().num_bytes, r.offset + r.num_bytes) - out.back().offset;
    else
      out.push_back(r);
  }
  ranges = std::move(out);
}

/// Calls f(layer_idx, expert_idx, range) for every expert slice of every expert tensor, and g(range) for the rest.
template <typename ExpertFn, typename DenseFn>
void for_each_range(const Model& model, ExpertFn f, DenseFn g) {
  const gguf::File& file = *model.file;
  const uint32_t E = model.hparams.num_experts;
  for (const gguf::TensorInfo& t : file.tensors()) {
    const uint64_t offset = file.data_offset() + t.offset;
    const int l = layer_of(t.name);
    if (placement::classify_tensor(t.name) != placement::TensorClass::kExperts || l < 0 || E == 0 ||
        t.num_bytes % E != 0) {
      g(gguf::File::ByteRange{offset, t.num_bytes});
      continue;
    }
    const uint64_t slice = t.num_bytes / E;
    for (uint32_t e = 0; e < E; ++e) f(static_cast<uint32_t>(l), e, gguf::File::ByteRange{offset + e * slice, slice});
  }
}

}  // namespace

std::vector<gguf::File::ByteRange> resident_ranges(const Model& model, const placement::Plan& plan) {
  std::vector<gguf::File::ByteRange> ranges;
  for_each_range(
      model,
      [&](uint32_t l, uint32_t e, gguf::File::ByteRange r) {
        if (l >= plan.layers.size()) return ranges.push_back(r);
        const placement::LayerPlan& lp = plan.layers[l];
        if (e < lp.experts.size() && lp.experts[e] == placement::Device::kGpu) return;
        if (std::find(lp.paged_experts.begin(), lp.paged_experts.end(), static_cast<int32_t>(e)) !=
            lp.paged_experts.end())
          return;
        ranges.push_back(r);
      },
      [&](gguf::File::ByteRange r) { ranges.push_back(r); });
  merge(ranges);
  return ranges;
}

std::vector<gguf::File::ByteRange> gpu_expert_ranges(const Model& model, const placement::Plan& plan) {
  std::vector<gguf::File::ByteRange> ranges;
  for_each_range(
      model,
      [&](uint32_t l, uint32_t e, gguf::File::ByteRange r) {
        if (l < plan.layers.size() && e < plan.layers[l].experts.size() &&
            plan.layers[l].experts[e] == placement::Device::kGpu)
          ranges.push_back(r);
      },
      [](gguf::File::ByteRange) {});
  merge(ranges);
  return ranges;
}

Expected<std::string> apply_ram_tier(const Model& model, const placement::Plan& plan,
                                     const gguf::File::LoadProgress& progress) {
  if (!plan.ram_tier.enabled || model.file->in_memory()) return std::string();
  HETMOE_ASSIGN_OR_RETURN(const gguf::File::ResidentResult done,
                          model.file->make_resident(resident_ranges(model, plan), plan.ram_tier.lock, progress));
  const double gib = static_cast<double>(uint64_t{1} << 30);
  return fmt::format("RAM tier: {:.2f} GiB of weights resident{}, {} experts ({:.2f} GiB) paged from disk",
                     static_cast<double>(done.resident_bytes) / gib,
                     !plan.ram_tier.lock ? std::string()
                     : done.locked_bytes == done.resident_bytes ? std::string(" (locked)")
                                                                : " (" + done.lock_note + ")",
                     plan.ram_tier.num_paged_experts, static_cast<double>(plan.ram_tier.paged_bytes) / gib);
}

}  // namespace hetmoe
