#include "runtime/exec/hybrid_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "cpu_kernels/reference.h"
#include "profiler/trace.h"
#include "runtime/model/weights_repack.h"

namespace hetmoe {

Expected<std::unique_ptr<HybridForward>> HybridForward::create(const Model& model,
                                                               std::unique_ptr<GpuStepDevice> device,
                                                               const HybridForwardOptions& options,
                                                               const cpu::KernelTable& kernels) {
  if (!device) return make_error(ErrorCode::kInvalidArgument, "hybrid forward pass: no device");
  if (has_repacked_weights(model))
    return make_error(ErrorCode::kUnsupported,
                      "the model's weights are repacked for the CPU kernels (MXFP4_R16, Q8_0_R16); the GPU pass "
                      "needs the file's layout: load the model again");
  const uint32_t max_batch = std::max<uint32_t>(1, device->max_batch_tokens());
  const int num_threads =
      options.arena ? options.arena->max_concurrency()
                    : (options.num_threads > 0 ? options.num_threads
                                               : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  auto experts = CpuExperts::create(model, kernels, num_threads, max_batch);
  if (!experts) return experts.error();
  return std::unique_ptr<HybridForward>(new HybridForward(model, std::move(device), std::move(*experts), options));
}

HybridForward::HybridForward(const Model& model, std::unique_ptr<GpuStepDevice> device, CpuExperts cpu_experts,
                             const HybridForwardOptions& options)
    : model_(&model), device_(std::move(device)), cpu_experts_(std::move(cpu_experts)),
      arena_owner_(options.arena_owner), overlap_(options.overlap), expert_counts_(options.expert_counts),
      on_event_(options.on_event) {
  if (expert_counts_) device_->set_expert_id_staging(true);
  if (options.arena) {
    arena_ = options.arena;
  } else {
    const int n = options.num_threads > 0 ? options.num_threads
                                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    own_arena_ = std::make_unique<tbb::task_arena>(n);
    arena_ = own_arena_.get();
  }
  cpu_ids_.resize(static_cast<size_t>(std::max<uint32_t>(1, device_->max_batch_tokens())) *
                  model.hparams.num_experts_used);
}

bool HybridForward::gpu_only() const {
  for (uint32_t l = 0; l < model_->hparams.num_layers; ++l)
    if (!device_->all_experts_resident(l)) return false;
  return true;
}

Status HybridForward::truncate(uint32_t target) {
  if (target > num_positions_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot truncate to {} positions: only {} are processed", target, num_positions_));
  // Measured from the furthest position ever written (see CpuForward::truncate).
  furthest_written_ = std::max(furthest_written_, num_positions_);
  if (furthest_written_ - target > device_->rollback_slots())
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("cannot go back to {} positions: {} were written, and the device KV ring keeps {} "
                                  "spare slots",
                                  target, furthest_written_, device_->rollback_slots()));
  num_positions_ = target;
  return {};
}

Status HybridForward::forward(int32_t token_id, std::span<float> logits_out) {
  const int32_t one[] = {token_id};
  return forward_batch(one, logits_out);
}

Status HybridForward::forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) {
  const ModelHparams& hp = model_->hparams;
  if (static_cast<uint64_t>(num_positions_) + token_ids.size() > device_->context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      token_ids.size() == 1
                          ? fmt::format("the context is full ({} positions)", device_->context_length())
                          : fmt::format("{} tokens at position {} do not fit: the context is full ({} positions)",
                                        token_ids.size(), num_positions_, device_->context_length()));
  for (int32_t id : token_ids)
    if (id < 0 || static_cast<uint32_t>(id) >= hp.vocab_size)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("token id {} is out of range (vocabulary has {} tokens)", id, hp.vocab_size));
  if (!last_logits.empty() && last_logits.size() != hp.vocab_size)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("logits buffer has {} floats, expected {}", last_logits.size(), hp.vocab_size));
  const size_t max_batch = std::max<uint32_t>(1, device_->max_batch_tokens());
  Status status;
  arena_->execute([&] {
    for (size_t start = 0; start < token_ids.size() && status; start += max_batch) {
      const size_t n = std::min(max_batch, token_ids.size() - start);
      const bool last = start + n == token_ids.size();
      status = run_step(token_ids.subspan(start, n), last ? last_logits : std::span<float>());
      if (status) num_positions_ += static_cast<uint32_t>(n);
    }
  });
  return status;
}

Status HybridForward::run_step(std::span<const int32_t> token_ids, std::span<float> last_logits) {
  const ModelHparams& hp = model_->hparams;
  const uint32_t D = hp.hidden_dim, K = hp.num_experts_used;
  const auto num_tokens = static_cast<uint32_t>(token_ids.size());
  GpuStepDevice& dev = *device_;
  float* embeddings = dev.embedding_staging();  // (num_tokens, D)
  for (uint32_t t = 0; t < num_tokens; ++t)
    ref::dequantize_row(model_->token_embd.type, model_->token_embd.row(static_cast<uint64_t>(token_ids[t])),
                        embeddings + static_cast<size_t>(t) * D, D);
  profiler::TraceSpan step_span(profiler::TraceCategory::kStep, num_tokens == 1 ? "decode" : "prefill",
                                {{"position", num_positions_}, {"num_tokens", num_tokens}});
  HETMOE_RETURN_IF_ERROR(dev.begin_step(num_positions_, num_tokens));
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const bool all_on_device = dev.all_experts_resident(l);
    // Host spans of the layer (trace-summary's per-layer windows): from enqueueing its attention to the router
    // output on the host, then to the combine enqueued.
    profiler::TraceSpan block(profiler::TraceCategory::kLayer, "attention block", {{"layer", l}});
    HETMOE_RETURN_IF_ERROR(dev.enqueue_attention_router(l, !all_on_device));
    // With overlap, the device's experts are enqueued before the host waits for the router output: they run during
    // the copy to the host and while this thread computes the CPU experts.
    if (overlap_ || all_on_device) {
      HETMOE_RETURN_IF_ERROR(dev.enqueue_experts(l));
      emit(StepEvent::kDeviceExpertsEnqueued, l);
    }
    if (all_on_device) {
      block.next("moe block");
      HETMOE_RETURN_IF_ERROR(dev.enqueue_combine(l, false));
      continue;
    }
    HETMOE_ASSIGN_OR_RETURN(const RouterStaging routed, dev.wait_router(l));
    block.next("moe block");
    emit(StepEvent::kRouterReady, l);
    // The CPU's pairs of the step: ids of resident experts masked with −1.
    bool any_cpu = false;
    for (uint32_t i = 0; i < num_tokens * K; ++i) {
      const int32_t e = routed.expert_ids[i];
      if (e < 0 || static_cast<uint32_t>(e) >= hp.num_experts)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("layer {}: the device router chose expert {} (the model has {})", l, e,
                                      hp.num_experts));
      const bool on_cpu = !dev.expert_resident(l, e);
      cpu_ids_[i] = on_cpu ? e : -1;
      any_cpu = any_cpu || on_cpu;
    }
    if (any_cpu) {
      emit(StepEvent::kCpuExpertsBegin, l);
      profiler::TraceSpan op(profiler::TraceCategory::kOp, "experts", {{"layer", l}});
      cpu_experts_.compute_batch(l, routed.hidden, num_tokens, cpu_ids_.data(), routed.weights,
                                 dev.cpu_partial_staging());
    }
    if (any_cpu) emit(StepEvent::kCpuExpertsEnd, l);
    if (!overlap_) {
      HETMOE_RETURN_IF_ERROR(dev.enqueue_experts(l));
      emit(StepEvent::kDeviceExpertsEnqueued, l);
    }
    HETMOE_RETURN_IF_ERROR(dev.enqueue_combine(l, any_cpu));
    emit(StepEvent::kCombineEnqueued, l);
  }
  HETMOE_RETURN_IF_ERROR(dev.finish_step(last_logits));
  if (expert_counts_) {
    for (uint32_t l = 0; l < hp.num_layers; ++l) {
      const int32_t* ids = dev.step_expert_ids(l);
      uint64_t* counts = expert_counts_ + static_cast<size_t>(l) * hp.num_experts;
      for (uint32_t i = 0; i < num_tokens * K; ++i)
        if (ids[i] >= 0 && static_cast<uint32_t>(ids[i]) < hp.num_experts)  // atomic: /metrics reads them meanwhile
          std::atomic_ref<uint64_t>(counts[ids[i]]).fetch_add(1, std::memory_order_relaxed);
    }
  }
  return {};
}

}  // namespace hetmoe
