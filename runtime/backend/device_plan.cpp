#include "runtime/backend/device_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <numeric>

namespace hetmoe {
namespace {

/// "q8_0" for one type, "K q8_0, V q4_0" for two.
std::string kv_types_text(KvCacheType k, KvCacheType v) {
  if (k == v) return kv_cache_type_name(k);
  return fmt::format("K {}, V {}", kv_cache_type_name(k), kv_cache_type_name(v));
}

/// "--kv-type q8_0 (or q4_0), " when a smaller type than the larger of K's and V's exists, else empty.
std::string smaller_kv_hint(KvCacheType k, KvCacheType v) {
  const uint64_t largest = std::max(kv_row_bytes(k, 64), kv_row_bytes(v, 64));  // 64: any multiple of 32 orders alike
  if (largest > kv_row_bytes(KvCacheType::kQ8_0, 64)) return "--kv-type q8_0 (or q4_0), ";
  if (largest > kv_row_bytes(KvCacheType::kQ4_0, 64)) return "--kv-type q4_0, ";
  return "";
}

uint64_t align_up(uint64_t n) { return (n + kDeviceBufferAlign - 1) / kDeviceBufferAlign * kDeviceBufferAlign; }

/// Appends buffers at aligned offsets.
struct ArenaBuilder {
  DevicePlan* plan;
  uint64_t end = 0;
  void add(std::string name, DeviceBufferKind kind, uint64_t bytes) {
    DeviceBuffer b;
    b.name = std::move(name);
    b.kind = kind;
    b.offset = end;
    b.bytes = bytes;
    end = align_up(end + bytes);
    plan->buffers.push_back(std::move(b));
  }
};

/// Bytes of the six per-layer expert stacks for `slots` resident experts, each stack aligned.
struct ExpertStackBytes {
  uint64_t gate = 0, up = 0, down = 0;             // one expert's matrix
  uint64_t gate_bias = 0, up_bias = 0, down_bias = 0;  // one expert's bias
  uint64_t for_slots(uint64_t slots) const {
    if (slots == 0) return 0;
    return align_up(slots * gate) + align_up(slots * up) + align_up(slots * down) + align_up(slots * gate_bias) +
           align_up(slots * up_bias) + align_up(slots * down_bias);
  }
};

}  // namespace

std::string format_byte_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (1ull << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 0x1p10);
  if (bytes < (1ull << 30)) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / 0x1p20);
  return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / 0x1p30);
}

DeviceModelDesc describe_for_device(const Model& model) {
  DeviceModelDesc d;
  d.hparams = model.hparams;
  if (!model.layers.empty()) {
    const LayerWeights& l0 = model.layers[0];
    d.attn_type = l0.wq.type;
    d.router_type = l0.router.type;
    d.expert_type = l0.gate_exps.type;
  }
  d.output_type = model.output.type;
  d.output_bytes = model.output.num_rows * model.output.row_bytes;
  d.router_bias.reserve(model.layers.size());
  for (const LayerWeights& l : model.layers) {
    d.router_bias.push_back(l.router_bias);
    const auto bytes = [](const WeightView& w) { return w.num_rows * w.row_bytes; };
    d.layer_matrix_bytes.push_back({bytes(l.wq), bytes(l.wk), bytes(l.wv), bytes(l.wo), bytes(l.router)});
  }
  return d;
}

const DeviceBuffer* DevicePlan::find(std::string_view name) const {
  for (const DeviceBuffer& b : buffers)
    if (b.name == name) return &b;
  return nullptr;
}

uint64_t DevicePlan::num_gpu_experts_total() const {
  uint64_t n = 0;
  for (const auto& layer : gpu_experts) n += layer.size();
  return n;
}

std::string DevicePlan::summary() const {
  const uint64_t num_experts_total = slot_of_expert.empty() ? 0 : slot_of_expert.size() * slot_of_expert[0].size();
  return fmt::format("{} of {} experts on the GPU; {} of the {} VRAM budget (dense weights {}, KV cache {} {}, "
                     "activations {}, experts {})",
                     num_gpu_experts_total(), num_experts_total, format_byte_size(total_bytes),
                     format_byte_size(budget_bytes), format_byte_size(dense_bytes), format_byte_size(kv_bytes),
                     kv_types_text(k_type, v_type), format_byte_size(activation_bytes),
                     format_byte_size(expert_bytes));
}

Expected<DevicePlan> plan_device_memory(const DeviceModelDesc& desc, const DevicePlanOptions& options) {
  const ModelHparams& hp = desc.hparams;
  if (options.context_length == 0 || options.max_batch_tokens == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("device plan: context ({}) and batch ({}) must be at least 1",
                                  options.context_length, options.max_batch_tokens));
  if (!options.gpu_experts.empty() && options.gpu_experts.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("device plan: GPU experts listed for {} layers, the model has {}",
                                  options.gpu_experts.size(), hp.num_layers));
  for (size_t l = 0; l < options.gpu_experts.size(); ++l) {
    std::vector<uint8_t> seen(hp.num_experts, 0);
    for (int32_t e : options.gpu_experts[l]) {
      if (e < 0 || static_cast<uint32_t>(e) >= hp.num_experts)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("device plan: layer {} lists expert {}; the model has experts 0..{}", l, e,
                                      hp.num_experts - 1));
      if (seen[static_cast<size_t>(e)]++)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("device plan: layer {} lists expert {} twice", l, e));
    }
  }
  if (!desc.layer_matrix_bytes.empty() && desc.layer_matrix_bytes.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("device plan: matrix sizes for {} layers, the model has {}",
                                  desc.layer_matrix_bytes.size(), hp.num_layers));
  if (!desc.router_bias.empty() && desc.router_bias.size() != hp.num_layers)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("device plan: router biases for {} layers, the model has {}",
                                  desc.router_bias.size(), hp.num_layers));
  for (const auto& row : desc.router_bias)
    if (!row.empty() && row.size() != hp.num_experts)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("device plan: a router bias row has {} entries, expected {}", row.size(),
                                    hp.num_experts));

  for (const auto& [what, type] :
       {std::pair{"KV cache type (K)", options.k_type}, std::pair{"KV cache type (V)", options.v_type}}) {
    if (type == KvCacheType::kF32)
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("device plan: {} f32: the CUDA attention kernels read f16, q8_0 and q4_0 only",
                                    what));
    HETMOE_RETURN_IF_ERROR(check_kv_cache_type(hp, type, what));
  }

  DevicePlan plan;
  plan.budget_bytes = options.vram_budget_bytes;
  ArenaBuilder arena{&plan};
  const uint64_t D = hp.hidden_dim, Q = hp.q_dim(), KVD = hp.kv_dim(), E = hp.num_experts, K = hp.num_experts_used;
  const uint64_t F = hp.expert_ffn_dim, B = options.max_batch_tokens;
  const auto f32 = [](uint64_t n) { return n * sizeof(float); };
  const auto matrix = [](TensorType t, uint64_t rows, uint64_t cols) { return rows * tensor_row_bytes(t, cols); };

  // Dense weights.
  const auto W = DeviceBufferKind::kWeights;
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    DeviceModelDesc::LayerMatrixBytes m{matrix(desc.attn_type, Q, D), matrix(desc.attn_type, KVD, D),
                                        matrix(desc.attn_type, KVD, D), matrix(desc.attn_type, D, Q),
                                        matrix(desc.router_type, E, D)};
    if (l < desc.layer_matrix_bytes.size()) m = desc.layer_matrix_bytes[l];
    arena.add(p + "attn_norm.weight", W, f32(D));
    arena.add(p + "attn_q.weight", W, m.wq);
    arena.add(p + "attn_q.bias", W, f32(Q));
    arena.add(p + "attn_k.weight", W, m.wk);
    arena.add(p + "attn_k.bias", W, f32(KVD));
    arena.add(p + "attn_v.weight", W, m.wv);
    arena.add(p + "attn_v.bias", W, f32(KVD));
    arena.add(p + "attn_output.weight", W, m.wo);
    arena.add(p + "attn_output.bias", W, f32(D));
    arena.add(p + "attn_sinks.weight", W, f32(hp.num_heads));
    arena.add(p + "post_attention_norm.weight", W, f32(D));
    arena.add(p + "ffn_gate_inp.weight", W, m.router);
    arena.add(p + "ffn_gate_inp.bias", W, f32(E));
  }
  arena.add("output_norm.weight", W, f32(D));
  arena.add("output.weight", W, desc.output_bytes ? desc.output_bytes : matrix(desc.output_type, hp.vocab_size, D));
  plan.dense_bytes = arena.end;

  // KV cache, (kv_head, slot, row of head_dim values of k_type / v_type) per layer as runtime/exec/kv_cache.h.
  plan.kv_capacity.resize(hp.num_layers);
  plan.k_type = options.k_type;
  plan.v_type = options.v_type;
  const uint64_t k_row = kv_row_bytes(options.k_type, hp.head_dim), v_row = kv_row_bytes(options.v_type, hp.head_dim);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const uint64_t ring = static_cast<uint64_t>(hp.sliding_window) + options.extra_sliding_slots;
    plan.kv_capacity[l] =
        hp.is_sliding(l) ? static_cast<uint32_t>(std::min<uint64_t>(ring, options.context_length)) : options.context_length;
    const uint64_t slots = static_cast<uint64_t>(hp.num_kv_heads) * plan.kv_capacity[l];
    arena.add(fmt::format("kv.{}.k", l), DeviceBufferKind::kKvCache, slots * k_row);
    arena.add(fmt::format("kv.{}.v", l), DeviceBufferKind::kKvCache, slots * v_row);
  }
  plan.kv_bytes = arena.end - plan.dense_bytes;

  // Activations for B tokens and scratch.
  const auto A = DeviceBufferKind::kActivations;
  arena.add("act.x", A, f32(B * D));                  // (B, D) residual stream
  arena.add("act.xb", A, f32(B * D));                 // (B, D) normed block input
  arena.add("act.qkv", A, f32(B * (Q + 2 * KVD)));    // (B, Q | KV | KV)
  arena.add("act.attn_out", A, f32(B * Q));           // (B, Q)
  arena.add("act.proj", A, f32(B * D));               // (B, D) attention output projection
  arena.add("act.router_logits", A, f32(B * E));      // (B, E)
  arena.add("act.expert_ids", A, B * K * sizeof(int32_t));  // (B, K) int32
  arena.add("act.expert_weights", A, f32(B * K));     // (B, K)
  arena.add("act.moe_gpu", A, f32(B * D));            // (B, D) partial sum of the GPU experts
  arena.add("act.moe_cpu", A, f32(B * D));            // (B, D) partial sum of the CPU experts (uploaded)
  arena.add("act.positions", A, B * sizeof(int32_t)); // (B) int32
  arena.add("act.logits", A, f32(hp.vocab_size));     // (vocab) last token
  arena.add("act.slot_of_expert", A, static_cast<uint64_t>(hp.num_layers) * E * sizeof(int32_t));  // (L, E)
  arena.add("scratch.attention", DeviceBufferKind::kScratch,
            f32(static_cast<uint64_t>(std::max<int64_t>(options.attention_scratch_floats, 1))));
  arena.add("scratch.moe", DeviceBufferKind::kScratch,
            f32(static_cast<uint64_t>(std::max<int64_t>(options.moe_scratch_floats, 1))));
  if (options.gemm_scratch_bytes > 0) arena.add("scratch.gemm", DeviceBufferKind::kScratch, options.gemm_scratch_bytes);
  plan.activation_bytes = arena.end - plan.dense_bytes - plan.kv_bytes;

  const uint64_t fixed = arena.end;
  if (fixed > options.vram_budget_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the VRAM budget {} is too small: dense weights {} + KV cache {} (context {}, {}) "
                                  "+ activations {} need {}; use a smaller --ctx, {}a larger --vram-budget, or "
                                  "--device cpu",
                                  format_byte_size(options.vram_budget_bytes), format_byte_size(plan.dense_bytes),
                                  format_byte_size(plan.kv_bytes), options.context_length,
                                  kv_types_text(options.k_type, options.v_type),
                                  format_byte_size(plan.activation_bytes), format_byte_size(fixed),
                                  smaller_kv_hint(options.k_type, options.v_type)));

  // Experts: rank each layer's wanted experts by router bias (ties: lower index first), then fill rank by rank over
  // the layers so a tight budget spreads the resident experts evenly.
  ExpertStackBytes stack;
  stack.gate = matrix(desc.expert_type, F, D);
  stack.up = matrix(desc.expert_type, F, D);
  stack.down = matrix(desc.expert_type, D, F);
  stack.gate_bias = f32(F);
  stack.up_bias = f32(F);
  stack.down_bias = f32(D);
  plan.bytes_per_expert = stack.gate + stack.up + stack.down + stack.gate_bias + stack.up_bias + stack.down_bias;
  plan.gpu_experts.assign(hp.num_layers, {});
  plan.slot_of_expert.assign(hp.num_layers, std::vector<int32_t>(E, -1));
  std::vector<std::vector<int32_t>> ranked(hp.num_layers);
  size_t wanted = 0;
  uint64_t num_wanted = 0;
  for (uint32_t l = 0; l < hp.num_layers && l < options.gpu_experts.size(); ++l) {
    ranked[l] = options.gpu_experts[l];
    std::sort(ranked[l].begin(), ranked[l].end());
    const std::vector<float>* bias = desc.router_bias.empty() || desc.router_bias[l].empty() ? nullptr
                                                                                             : &desc.router_bias[l];
    if (bias)
      std::stable_sort(ranked[l].begin(), ranked[l].end(),
                       [&](int32_t a, int32_t b) { return (*bias)[static_cast<size_t>(a)] > (*bias)[static_cast<size_t>(b)]; });
    wanted = std::max(wanted, ranked[l].size());
    num_wanted += ranked[l].size();
  }
  uint64_t used = fixed;
  uint64_t num_left_out = 0;
  for (size_t rank = 0; rank < wanted; ++rank)
    for (uint32_t l = 0; l < hp.num_layers; ++l) {
      if (rank >= ranked[l].size()) continue;
      const uint64_t slots = plan.gpu_experts[l].size();
      const uint64_t delta = stack.for_slots(slots + 1) - stack.for_slots(slots);
      if (used + delta > options.vram_budget_bytes) {
        ++num_left_out;
        continue;
      }
      used += delta;
      plan.gpu_experts[l].push_back(ranked[l][rank]);
    }
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    auto& ids = plan.gpu_experts[l];
    std::sort(ids.begin(), ids.end());
    for (size_t s = 0; s < ids.size(); ++s) plan.slot_of_expert[l][static_cast<size_t>(ids[s])] = static_cast<int32_t>(s);
    if (ids.empty()) continue;
    const std::string p = fmt::format("blk.{}.", l);
    const auto X = DeviceBufferKind::kExperts;
    const uint64_t slots = ids.size();
    arena.add(p + "ffn_gate_exps.weight", X, slots * stack.gate);
    arena.add(p + "ffn_up_exps.weight", X, slots * stack.up);
    arena.add(p + "ffn_down_exps.weight", X, slots * stack.down);
    arena.add(p + "ffn_gate_exps.bias", X, slots * stack.gate_bias);
    arena.add(p + "ffn_up_exps.bias", X, slots * stack.up_bias);
    arena.add(p + "ffn_down_exps.bias", X, slots * stack.down_bias);
  }
  plan.total_bytes = arena.end;
  plan.expert_bytes = plan.total_bytes - fixed;

  if (num_left_out > 0)
    plan.notes.push_back(fmt::format(
        "{} of the {} experts the plan puts on the GPU do not fit in the VRAM budget {} ({} left after dense weights, "
        "KV cache and activations; one expert takes {}); they run on the CPU",
        num_left_out, num_wanted, format_byte_size(options.vram_budget_bytes),
        format_byte_size(options.vram_budget_bytes - fixed), format_byte_size(plan.bytes_per_expert)));
  return plan;
}

Expected<std::vector<std::vector<int32_t>>> gpu_experts_of_plan(const placement::Plan& plan, const ModelHparams& hp) {
  if (plan.num_layers != hp.num_layers || plan.num_experts != hp.num_experts || plan.layers.size() != hp.num_layers ||
      plan.num_experts_used != hp.num_experts_used)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the plan is for {} layers × {} experts (top-{}), the model has {} × {} (top-{})",
                                  plan.num_layers, plan.num_experts, plan.num_experts_used, hp.num_layers,
                                  hp.num_experts, hp.num_experts_used));
  std::vector<std::vector<int32_t>> ids(hp.num_layers);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const placement::LayerPlan& lp = plan.layers[l];
    if (lp.experts.size() != hp.num_experts)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("the plan's layer {} places {} experts, the model has {}", l, lp.experts.size(),
                                    hp.num_experts));
    if (lp.attention != placement::Device::kGpu)
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("the plan keeps the attention of block {} on the CPU; the GPU pass runs every "
                                    "block's attention, router and KV cache on the GPU (make the plan with hetmoe "
                                    "plan, which plans for that, or without a GPU)",
                                    l));
    for (uint32_t e = 0; e < hp.num_experts; ++e)
      if (lp.experts[e] == placement::Device::kGpu) ids[l].push_back(static_cast<int32_t>(e));
  }
  if (plan.output != placement::Device::kGpu)
    return make_error(ErrorCode::kUnsupported,
                      "the plan keeps the unembedding on the CPU; the GPU pass computes it on the GPU");
  return ids;
}

}  // namespace hetmoe
