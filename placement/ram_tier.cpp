#include "placement/ram_tier.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace hetmoe::placement {
namespace {

double gib(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(uint64_t{1} << 30); }

}  // namespace

uint64_t ram_weight_bytes(const Plan& plan, const ModelBytes& bytes) {
  uint64_t total = bytes.embedding_bytes;  // the embedding table stays on the CPU
  if (plan.output == Device::kCpu) total += bytes.output_bytes;
  for (size_t l = 0; l < plan.layers.size() && l < bytes.layers.size(); ++l) {
    const LayerPlan& lp = plan.layers[l];
    if (lp.attention == Device::kCpu) total += bytes.layers[l].dense_bytes();
    for (Device d : lp.experts)
      if (d == Device::kCpu) total += bytes.layers[l].expert_bytes;
  }
  return total;
}

Status plan_ram_tier(Plan& plan, const ModelBytes& bytes, std::span<const double> probabilities,
                     const RamTierRequest& request) {
  const size_t L = plan.layers.size(), E = plan.num_experts;
  if (bytes.layers.size() != L || probabilities.size() != L * E)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("RAM tier: the plan has {} layers × {} experts, the byte accounting {} layers and "
                                  "the probabilities {} entries",
                                  L, E, bytes.layers.size(), probabilities.size()));
  plan.ram_tier = RamTier{};
  for (LayerPlan& lp : plan.layers) lp.paged_experts.clear();
  const uint64_t weights = ram_weight_bytes(plan, bytes);
  const uint64_t fixed = request.kv_bytes + request.buffer_bytes + request.headroom_bytes;
  if (request.room_bytes == 0 || weights + fixed <= request.room_bytes) return {};

  // Dense (non-expert) bytes in RAM, and the CPU experts by descending selection probability.
  uint64_t dense = weights;
  struct Candidate {
    uint32_t layer_idx, expert_idx;
    double probability;
    uint64_t bytes;
  };
  std::vector<Candidate> experts;
  uint64_t one_token_bytes = 0;  // top-k experts of every layer with CPU experts
  for (uint32_t l = 0; l < L; ++l) {
    bool any_cpu = false;
    for (uint32_t e = 0; e < E; ++e)
      if (plan.layers[l].experts[e] == Device::kCpu) {
        dense -= bytes.layers[l].expert_bytes;
        experts.push_back({l, e, probabilities[l * E + e], bytes.layers[l].expert_bytes});
        any_cpu = true;
      }
    if (any_cpu) one_token_bytes += uint64_t{plan.num_experts_used} * bytes.layers[l].expert_bytes;
  }
  std::stable_sort(experts.begin(), experts.end(),
                   [](const Candidate& a, const Candidate& b) { return a.probability > b.probability; });

  // The page cache paged experts are read through: one token's worth, at most half of what would be paged.
  const uint64_t all_expert_bytes = weights - dense;
  const uint64_t room_for_weights = request.room_bytes > fixed ? request.room_bytes - fixed : 0;
  const uint64_t short_by = weights > room_for_weights ? weights - room_for_weights : 0;
  const uint64_t page_cache = std::min(one_token_bytes, std::max(short_by, all_expert_bytes / 2));
  const uint64_t budget = room_for_weights > page_cache ? room_for_weights - page_cache : 0;

  RamTier& rt = plan.ram_tier;
  rt.enabled = true;
  rt.lock = request.lock;
  rt.room_bytes = request.room_bytes;
  rt.disk_read_bytes_per_s = request.disk_read_bytes_per_s;
  rt.resident_bytes = dense;  // the dense weights are read by every token: always resident
  uint64_t used = dense;
  double paged_bytes_per_token = 0;
  for (const Candidate& c : experts) {
    if (used <= budget && c.bytes <= budget - used) {
      used += c.bytes;
      rt.resident_bytes += c.bytes;
      continue;
    }
    plan.layers[c.layer_idx].paged_experts.push_back(static_cast<int32_t>(c.expert_idx));
    rt.paged_bytes += c.bytes;
    ++rt.num_paged_experts;
    rt.paged_loads_per_token += c.probability;
    paged_bytes_per_token += c.probability * static_cast<double>(c.bytes);
  }
  for (LayerPlan& lp : plan.layers) std::sort(lp.paged_experts.begin(), lp.paged_experts.end());
  if (request.disk_read_bytes_per_s > 0) {
    rt.paged_time_s = paged_bytes_per_token / request.disk_read_bytes_per_s;
    if (plan.prediction.decode_time_s > 0) {
      plan.prediction.decode_time_s += rt.paged_time_s;
      plan.prediction.decode_tok_s = 1.0 / plan.prediction.decode_time_s;
    }
  }
  plan.notes.push_back(fmt::format(
      "RAM tier: {:.2f} GiB of weights do not fit in {:.2f} GiB usable (KV cache {:.2f} GiB, buffers {:.2f} GiB, "
      "page-cache headroom {:.2f} GiB): "
      "{:.2f} GiB resident{}, {} experts ({:.2f} GiB) paged from disk, {:.2f} loads per token{}",
      gib(weights), gib(request.room_bytes), gib(request.kv_bytes), gib(request.buffer_bytes),
      gib(request.headroom_bytes), gib(rt.resident_bytes),
      request.lock ? " (locked where allowed)" : "", rt.num_paged_experts, gib(rt.paged_bytes),
      rt.paged_loads_per_token,
      request.disk_read_bytes_per_s > 0
          ? fmt::format(", predicted {:.1f} ms per token reading them at {:.2f} GB/s (upper bound: page-cache hits "
                        "not counted)",
                        rt.paged_time_s * 1e3, request.disk_read_bytes_per_s / 1e9)
          : std::string(", disk time not predicted (hetmoe probe --disk MODEL.gguf measures the disk)")));
  if (dense > budget)
    plan.notes.push_back(fmt::format("RAM tier: even the dense weights ({:.2f} GiB) exceed the {:.2f} GiB left for "
                                     "resident weights: every CPU expert is paged and the dense weights are kept resident anyway (the run may be "
                                     "reclaimed to a crawl: a shorter context or fewer threads' buffers leave more)",
                                     gib(dense), gib(budget)));
  return {};
}

}  // namespace hetmoe::placement
