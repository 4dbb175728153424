#include "gpu_kernels/cuda_step_device.h"

#include "cpu_kernels/kv_blocks.h"
#include "gpu_kernels/cublas_library.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace hetmoe::gpu {
namespace {

/// Launcher status → Error naming the op, the layer and the CUDA error. A launcher answers cudaErrorInvalidValue
/// before launching for a shape it does not support, but cudaGetLastError after a launch also returns the error of
/// earlier asynchronous work (an illegal address in a kernel enqueued before): so on any error the device is
/// synchronized (error path only), and an error found there is named as the CUDA error of earlier work.
Status op_status(cudaError_t err, const char* op, uint32_t layer_idx) {
  if (err == cudaSuccess) return {};
  (void)cudaGetLastError();
  const cudaError_t pending = cudaDeviceSynchronize();
  (void)cudaGetLastError();
  if (pending != cudaSuccess)
    return make_error(ErrorCode::kIo,
                      fmt::format("layer {}: {}: {} ({}) from this or an earlier asynchronous launch (run with "
                                  "CUDA_LAUNCH_BLOCKING=1 to find which)",
                                  layer_idx, op, cudaGetErrorName(pending), cudaGetErrorString(pending)));
  if (err == cudaErrorInvalidValue)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("layer {}: the CUDA kernel {} does not support this model's shapes or types "
                                  "(cudaErrorInvalidValue before launch)",
                                  layer_idx, op));
  return make_error(ErrorCode::kIo, fmt::format("layer {}: {}: {} ({})", layer_idx, op, cudaGetErrorName(err),
                                                cudaGetErrorString(err)));
}

// The device KV cache's blocks are the CPU cache's (ops.h KvType, cpu_kernels/kv_blocks.h).
static_assert(kKvBlockElems == cpu::kKvBlockElems && kKvQ8_0BlockBytes == cpu::kKvQ8_0BlockBytes &&
              kKvQ4_0BlockBytes == cpu::kKvQ4_0BlockBytes);

}  // namespace

Expected<KvType> device_kv_type(KvCacheType type) {
  switch (type) {
    case KvCacheType::kF16:
      return KvType::kF16;
    case KvCacheType::kQ8_0:
      return KvType::kQ8_0;
    case KvCacheType::kQ4_0:
      return KvType::kQ4_0;
    case KvCacheType::kF32:
      break;
  }
  return make_error(ErrorCode::kUnsupported,
                    fmt::format("the CUDA attention kernels read an f16, q8_0 or q4_0 KV cache, not {}",
                                kv_cache_type_name(type)));
}

namespace {

/// Timing events per layer: attention begin/end, experts begin/end, combine begin/end, router copy begin/end, CPU
/// partial upload begin/end; and per step: anchor, embeddings copy, output, logits copy.
constexpr size_t kTimingEventsPerLayer = 10;
constexpr size_t kTimingEventsPerStep = 8;

}  // namespace

uint64_t prefill_gemm_scratch_bytes(const ModelHparams& hp, uint32_t max_batch_tokens) {
  if (max_batch_tokens < kPrefillGemmMinTokens) return 0;
  const uint64_t largest = std::max<uint64_t>(static_cast<uint64_t>(hp.q_dim()) * hp.hidden_dim,
                                              static_cast<uint64_t>(hp.kv_dim()) * hp.hidden_dim);
  const uint64_t w_bytes = (largest * 2 + kDeviceBufferAlign - 1) / kDeviceBufferAlign * kDeviceBufferAlign;
  return w_bytes + 2ull * max_batch_tokens * std::max<uint64_t>(hp.hidden_dim, hp.q_dim());
}

CudaStepDevice::CudaStepDevice(const Model& model, DevicePlan plan, DeviceArena arena, int device_idx,
                               uint32_t context_length, uint32_t rollback_slots, uint32_t max_batch_tokens)
    : model_(&model), plan_(std::move(plan)), arena_(std::move(arena)), device_idx_(device_idx),
      context_length_(context_length), rollback_slots_(rollback_slots), max_batch_(std::max(1u, max_batch_tokens)),
      rope_(rope_params(model.hparams)) {}

CudaStepDevice::~CudaStepDevice() {
  if (compute_) cudaStreamSynchronize(compute_->get());
  if (h2d_) cudaStreamSynchronize(h2d_->get());
  if (d2h_) cudaStreamSynchronize(d2h_->get());
  if (cublas_) (*cublas_library())->destroy(cublas_);  // a handle exists only once the library loaded
}

Expected<std::unique_ptr<CudaStepDevice>> CudaStepDevice::create(const Model& model, DevicePlan plan, int device_idx,
                                                                 uint32_t context_length, uint32_t rollback_slots,
                                                                 uint32_t max_batch_tokens,
                                                                 std::vector<std::string>* notes) {
  HETMOE_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_idx), "cudaSetDevice"));
  auto arena = DeviceArena::create(plan.total_bytes);
  if (!arena) return arena.error();
  std::unique_ptr<CudaStepDevice> d(
      new CudaStepDevice(model, std::move(plan), std::move(*arena), device_idx, context_length, rollback_slots,
                         max_batch_tokens));
  HETMOE_RETURN_IF_ERROR(d->upload(notes));
  return d;
}

Status CudaStepDevice::upload(std::vector<std::string>* notes) {
  const ModelHparams& hp = model_->hparams;
  const uint64_t D = hp.hidden_dim, E = hp.num_experts, K = hp.num_experts_used, F = hp.expert_ffn_dim;
  const uint64_t B = max_batch_;

  // Streams, events, pinned staging.
  const auto make_stream = [](std::unique_ptr<Stream>& out) -> Status {
    auto s = Stream::create();
    if (!s) return s.error();
    out = std::make_unique<Stream>(std::move(*s));
    return {};
  };
  const auto make_event = [](std::unique_ptr<Event>& out) -> Status {
    auto e = Event::create();
    if (!e) return e.error();
    out = std::make_unique<Event>(std::move(*e));
    return {};
  };
  HETMOE_RETURN_IF_ERROR(make_stream(compute_));
  HETMOE_RETURN_IF_ERROR(make_stream(h2d_));
  HETMOE_RETURN_IF_ERROR(make_stream(d2h_));
  for (auto* e : {&inputs_ready_, &routed_, &staged_, &cpu_uploaded_, &logits_ready_, &logits_copied_, &ids_ready_})
    HETMOE_RETURN_IF_ERROR(make_event(*e));
  const size_t num_timing = kTimingEventsPerLayer * hp.num_layers + kTimingEventsPerStep;
  timing_events_.reserve(num_timing);
  timed_.reserve(num_timing / 2);
  for (size_t i = 0; i < num_timing; ++i) {
    auto e = Event::create(/*with_timing=*/true);
    if (!e) return e.error();
    timing_events_.push_back(std::move(*e));
  }
  const auto make_pinned = [&](PinnedBuffer& out, size_t bytes, const char* what) -> Status {
    auto b = PinnedBuffer::create(bytes, what, notes);
    if (!b) return b.error();
    out = std::move(*b);
    return {};
  };
  HETMOE_RETURN_IF_ERROR(make_pinned(embedding_, B * D * sizeof(float), "embedding"));
  HETMOE_RETURN_IF_ERROR(make_pinned(position_, B * sizeof(int32_t), "position"));
  HETMOE_RETURN_IF_ERROR(make_pinned(hidden_, B * D * sizeof(float), "router hidden state"));
  HETMOE_RETURN_IF_ERROR(make_pinned(ids_, hp.num_layers * B * K * sizeof(int32_t), "router expert ids"));
  HETMOE_RETURN_IF_ERROR(make_pinned(weights_, B * K * sizeof(float), "router weights"));
  HETMOE_RETURN_IF_ERROR(make_pinned(cpu_partial_, B * D * sizeof(float), "CPU expert sum"));
  HETMOE_RETURN_IF_ERROR(make_pinned(logits_host_, static_cast<size_t>(hp.vocab_size) * sizeof(float), "logits"));

  // Weights: one synchronous copy per tensor at load time, GGUF blocks unchanged.
  const auto put = [&](std::string_view name, const void* src, uint64_t bytes) -> Expected<void*> {
    const DeviceBuffer* b = plan_.find(name);
    if (!b || b->bytes != bytes)
      return make_error(ErrorCode::kShape, fmt::format("device plan: buffer {} is missing or not {} bytes", name, bytes));
    void* dst = arena_.at(*b);
    HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (weights)"));
    return dst;
  };
  const auto put_vec = [&](std::string_view name, const std::vector<float>& v) {
    return put(name, v.data(), v.size() * sizeof(float));
  };
  const auto put_matrix = [&](std::string_view name, const WeightView& w) {
    return put(name, w.data, w.num_rows * w.row_bytes);
  };
  layers_.resize(hp.num_layers);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const LayerWeights& w = model_->layers[l];
    LayerPtrs& p = layers_[l];
    const std::string pre = fmt::format("blk.{}.", l);
    HETMOE_ASSIGN_OR_RETURN(void* attn_norm, put_vec(pre + "attn_norm.weight", w.attn_norm));
    HETMOE_ASSIGN_OR_RETURN(p.wq, put_matrix(pre + "attn_q.weight", w.wq));
    HETMOE_ASSIGN_OR_RETURN(void* bq, put_vec(pre + "attn_q.bias", w.bq));
    HETMOE_ASSIGN_OR_RETURN(p.wk, put_matrix(pre + "attn_k.weight", w.wk));
    HETMOE_ASSIGN_OR_RETURN(void* bk, put_vec(pre + "attn_k.bias", w.bk));
    HETMOE_ASSIGN_OR_RETURN(p.wv, put_matrix(pre + "attn_v.weight", w.wv));
    HETMOE_ASSIGN_OR_RETURN(void* bv, put_vec(pre + "attn_v.bias", w.bv));
    HETMOE_ASSIGN_OR_RETURN(p.wo, put_matrix(pre + "attn_output.weight", w.wo));
    HETMOE_ASSIGN_OR_RETURN(void* bo, put_vec(pre + "attn_output.bias", w.bo));
    HETMOE_ASSIGN_OR_RETURN(void* sinks, put_vec(pre + "attn_sinks.weight", w.sinks));
    HETMOE_ASSIGN_OR_RETURN(void* post_norm, put_vec(pre + "post_attention_norm.weight", w.post_attn_norm));
    HETMOE_ASSIGN_OR_RETURN(p.router, put_matrix(pre + "ffn_gate_inp.weight", w.router));
    HETMOE_ASSIGN_OR_RETURN(void* router_bias, put_vec(pre + "ffn_gate_inp.bias", w.router_bias));
    p.attn_norm = static_cast<const float*>(attn_norm);
    p.bq = static_cast<const float*>(bq);
    p.bk = static_cast<const float*>(bk);
    p.bv = static_cast<const float*>(bv);
    p.bo = static_cast<const float*>(bo);
    p.sinks = static_cast<const float*>(sinks);
    p.post_attn_norm = static_cast<const float*>(post_norm);
    p.router_bias = static_cast<const float*>(router_bias);

    p.kv.k = buffer<void>(fmt::format("kv.{}.k", l));
    p.kv.v = buffer<void>(fmt::format("kv.{}.v", l));
    HETMOE_ASSIGN_OR_RETURN(p.kv.k_type, device_kv_type(plan_.k_type));
    HETMOE_ASSIGN_OR_RETURN(p.kv.v_type, device_kv_type(plan_.v_type));
    p.kv.capacity = static_cast<int32_t>(plan_.kv_capacity[l]);
    // A context shorter than the window holds every position: the window is then the capacity (window ≤ capacity).
    p.kv.window = static_cast<int32_t>(hp.is_sliding(l) ? std::min(hp.sliding_window, plan_.kv_capacity[l])
                                                        : plan_.kv_capacity[l]);

    // Resident experts: slot s holds expert gpu_experts[l][s], its rows copied from the GGUF stack.
    const auto& ids = plan_.gpu_experts[l];
    p.experts.type = w.gate_exps.type;
    p.experts.hidden_dim = static_cast<int64_t>(D);
    p.experts.ffn_dim = static_cast<int64_t>(F);
    p.experts.slot_of_expert = buffer<int32_t>("act.slot_of_expert") + static_cast<size_t>(l) * E;
    if (ids.empty()) continue;
    auto* gate = buffer<uint8_t>(pre + "ffn_gate_exps.weight");
    auto* up = buffer<uint8_t>(pre + "ffn_up_exps.weight");
    auto* down = buffer<uint8_t>(pre + "ffn_down_exps.weight");
    auto* gate_bias = buffer<float>(pre + "ffn_gate_exps.bias");
    auto* up_bias = buffer<float>(pre + "ffn_up_exps.bias");
    auto* down_bias = buffer<float>(pre + "ffn_down_exps.bias");
    const uint64_t gate_bytes = w.gate_exps.num_rows * w.gate_exps.row_bytes;
    const uint64_t up_bytes = w.up_exps.num_rows * w.up_exps.row_bytes;
    const uint64_t down_bytes = w.down_exps.num_rows * w.down_exps.row_bytes;
    for (size_t s = 0; s < ids.size(); ++s) {
      const auto e = static_cast<uint64_t>(ids[s]);
      const std::pair<void*, const void*> copies[] = {
          {gate + s * gate_bytes, w.gate_exps.row(0, e)}, {up + s * up_bytes, w.up_exps.row(0, e)},
          {down + s * down_bytes, w.down_exps.row(0, e)}};
      const uint64_t sizes[] = {gate_bytes, up_bytes, down_bytes};
      for (int i = 0; i < 3; ++i)
        HETMOE_RETURN_IF_ERROR(cuda_status(
            cudaMemcpy(copies[i].first, copies[i].second, sizes[i], cudaMemcpyHostToDevice), "cudaMemcpy (experts)"));
      HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemcpy(gate_bias + s * F, &w.gate_bias[e * F], F * sizeof(float),
                                                    cudaMemcpyHostToDevice), "cudaMemcpy (expert biases)"));
      HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemcpy(up_bias + s * F, &w.up_bias[e * F], F * sizeof(float),
                                                    cudaMemcpyHostToDevice), "cudaMemcpy (expert biases)"));
      HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemcpy(down_bias + s * D, &w.down_bias[e * D], D * sizeof(float),
                                                    cudaMemcpyHostToDevice), "cudaMemcpy (expert biases)"));
    }
    p.experts.gate = gate;
    p.experts.up = up;
    p.experts.down = down;
    p.experts.gate_bias = gate_bias;
    p.experts.up_bias = up_bias;
    p.experts.down_bias = down_bias;
  }
  std::vector<int32_t> slots;  // (num_layers, num_experts)
  for (const auto& row : plan_.slot_of_expert) slots.insert(slots.end(), row.begin(), row.end());
  if (auto slot_map = put("act.slot_of_expert", slots.data(), slots.size() * sizeof(int32_t)); !slot_map)
    return slot_map.error();
  HETMOE_ASSIGN_OR_RETURN(void* output_norm, put_vec("output_norm.weight", model_->output_norm));
  output_norm_ = static_cast<const float*>(output_norm);
  HETMOE_ASSIGN_OR_RETURN(output_, put_matrix("output.weight", model_->output));

  x_ = buffer<float>("act.x");
  xb_ = buffer<float>("act.xb");
  const DeviceBuffer* qkv = plan_.find("act.qkv");
  if (!qkv || qkv->bytes < B * (hp.q_dim() + 2ull * hp.kv_dim()) * sizeof(float))
    return make_error(ErrorCode::kShape, fmt::format("device plan: act.qkv is not sized for {} tokens", B));
  q_ = static_cast<float*>(arena_.at(*qkv));
  k_ = q_ + B * hp.q_dim();
  v_ = k_ + B * hp.kv_dim();
  attn_out_ = buffer<float>("act.attn_out");
  proj_ = buffer<float>("act.proj");
  router_logits_ = buffer<float>("act.router_logits");
  expert_ids_ = buffer<int32_t>("act.expert_ids");
  expert_weights_ = buffer<float>("act.expert_weights");
  moe_gpu_ = buffer<float>("act.moe_gpu");
  moe_cpu_ = buffer<float>("act.moe_cpu");
  positions_ = buffer<int32_t>("act.positions");
  logits_ = buffer<float>("act.logits");
  attn_scratch_ = buffer<float>("scratch.attention");
  moe_scratch_ = buffer<float>("scratch.moe");
  if (const DeviceBuffer* gemm = plan_.find("scratch.gemm"); gemm != nullptr) {
    if (gemm->bytes < prefill_gemm_scratch_bytes(hp, max_batch_))
      return make_error(ErrorCode::kShape, fmt::format("device plan: scratch.gemm is not sized for {} tokens", B));
    const uint64_t largest = std::max<uint64_t>(static_cast<uint64_t>(hp.q_dim()) * D,
                                                static_cast<uint64_t>(hp.kv_dim()) * D);
    gemm_w_f16_ = arena_.at(*gemm);
    gemm_x_f16_ = static_cast<uint8_t*>(gemm_w_f16_) +
                  (largest * 2 + kDeviceBufferAlign - 1) / kDeviceBufferAlign * kDeviceBufferAlign;
    if (auto lib = cublas_library(); !lib) {
      if (notes) notes->push_back(fmt::format("{}: prefill runs the GEMV path", lib.error().message));
    } else if (const cublasStatus_t st = (*lib)->create(&cublas_); st != CUBLAS_STATUS_SUCCESS) {
      cublas_ = nullptr;
      if (notes)
        notes->push_back(fmt::format("cuBLAS could not be initialized (status {}): prefill runs the GEMV path",
                                     static_cast<int>(st)));
    }
  }
  // KV slots never written are never read (attention sees positions ≤ the current one), but zero them so a bug
  // reads zeros rather than stale memory.
  for (uint32_t l = 0; l < hp.num_layers; ++l)
    for (const char* kv : {"k", "v"}) {
      const DeviceBuffer* b = plan_.find(fmt::format("kv.{}.{}", l, kv));
      HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemset(arena_.at(*b), 0, b->bytes), "cudaMemset (KV cache)"));
    }
  return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize (upload)");
}

Status CudaStepDevice::begin_step(uint32_t first_pos, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  if (num_tokens == 0 || num_tokens > max_batch_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("device step of {} tokens (expected 1..{})", num_tokens, max_batch_));
  HETMOE_RETURN_IF_ERROR(check(cudaSetDevice(device_idx_), "cudaSetDevice"));
  first_pos_ = first_pos;
  num_tokens_ = num_tokens;
  for (uint32_t t = 0; t < num_tokens; ++t) position_.as<int32_t>()[t] = static_cast<int32_t>(first_pos + t);
  cudaStream_t h2d = h2d_->get();
  tracing_ = profiler::trace_enabled();
  num_timing_used_ = 0;
  timed_.clear();
  if (tracing_) {
    if (!tracks_named_) {  // first traced step: the named tracks
      tracks_named_ = true;
      compute_track_ = profiler::trace_track(profiler::kTraceTrackGpuCompute);
      h2d_track_ = profiler::trace_track(profiler::kTraceTrackH2dCopy);
      d2h_track_ = profiler::trace_track(profiler::kTraceTrackD2hCopy);
    }
    // The time base: an event on the idle copy stream, waited for, read against the host clock right after.
    anchor_ = mark(h2d);
    if (anchor_ != nullptr) {
      HETMOE_RETURN_IF_ERROR(check(cudaEventSynchronize(anchor_), "cudaEventSynchronize (trace anchor)"));
      anchor_ns_ = profiler::trace_now_ns();
    }
  }
  cudaEvent_t copy_begin = mark(h2d);
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(x_, embedding_.data(), num_tokens * hp.hidden_dim * sizeof(float),
                                               cudaMemcpyHostToDevice, h2d), "cudaMemcpyAsync (embeddings)"));
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(positions_, position_.data(), num_tokens * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, h2d), "cudaMemcpyAsync (positions)"));
  add_timed(h2d_track_, profiler::TraceCategory::kCopy, "embeddings", -1, copy_begin, mark(h2d));
  HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(inputs_ready_->get(), h2d), "cudaEventRecord"));
  return check(cudaStreamWaitEvent(compute_->get(), inputs_ready_->get(), 0), "cudaStreamWaitEvent");
}

Status CudaStepDevice::enqueue_attention_router(uint32_t l, bool stage_to_host) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];
  const LayerPtrs& p = layers_[l];
  cudaStream_t s = compute_->get();
  const int64_t D = hp.hidden_dim, Q = hp.q_dim(), KV = hp.kv_dim(), H = hp.num_heads, KVH = hp.num_kv_heads;
  const int64_t HD = hp.head_dim, E = hp.num_experts, K = hp.num_experts_used, n = num_tokens_;
  cudaEvent_t attention_begin = mark(s);
  HETMOE_RETURN_IF_ERROR(op_status(rms_norm(x_, p.attn_norm, n, D, hp.rms_eps, xb_, s), "rms_norm", l));
  HETMOE_RETURN_IF_ERROR(project(w.wq.type, p.wq, Q, D, xb_, p.bq, q_, "attn_q", l));
  HETMOE_RETURN_IF_ERROR(project(w.wk.type, p.wk, KV, D, xb_, p.bk, k_, "attn_k", l));
  HETMOE_RETURN_IF_ERROR(project(w.wv.type, p.wv, KV, D, xb_, p.bv, v_, "attn_v", l));
  HETMOE_RETURN_IF_ERROR(op_status(rope_neox_yarn(q_, n, H, HD, positions_, rope_, s), "rope_neox_yarn (q)", l));
  HETMOE_RETURN_IF_ERROR(op_status(rope_neox_yarn(k_, n, KVH, HD, positions_, rope_, s), "rope_neox_yarn (k)", l));
  HETMOE_RETURN_IF_ERROR(op_status(kv_store(p.kv, k_, v_, n, KVH, HD, positions_, s), "kv_store", l));
  if (n == 1) {
    HETMOE_RETURN_IF_ERROR(op_status(attention_decode(q_, p.kv, p.sinks, 1, H, KVH, HD, positions_,
                                                      static_cast<int32_t>(first_pos_), attn_scratch_, attn_out_, s),
                                     "attention_decode", l));
  } else {
    HETMOE_RETURN_IF_ERROR(op_status(attention_prefill(q_, p.kv, p.sinks, n, H, KVH, HD, positions_, attn_out_, s),
                                     "attention_prefill", l));
  }
  HETMOE_RETURN_IF_ERROR(project(w.wo.type, p.wo, D, Q, attn_out_, p.bo, proj_, "attn_output", l));
  HETMOE_RETURN_IF_ERROR(op_status(add_vectors(x_, proj_, nullptr, n * D, x_, s), "add_vectors (residual)", l));
  HETMOE_RETURN_IF_ERROR(op_status(rms_norm(x_, p.post_attn_norm, n, D, hp.rms_eps, xb_, s), "rms_norm", l));
  HETMOE_RETURN_IF_ERROR(
      op_status(matvec(w.router.type, p.router, E, D, xb_, n, p.router_bias, router_logits_, s), "matvec router", l));
  HETMOE_RETURN_IF_ERROR(
      op_status(router_topk_softmax(router_logits_, n, E, K, expert_ids_, expert_weights_, s), "router_topk_softmax", l));
  add_timed(compute_track_, profiler::TraceCategory::kGpu, "attention + router", static_cast<int32_t>(l),
            attention_begin, mark(s));
  if (!stage_to_host && !id_staging_) return {};
  cudaStream_t d2h = d2h_->get();
  int32_t* layer_ids = ids_.as<int32_t>() + static_cast<size_t>(l) * max_batch_ * K;
  if (!stage_to_host) {  // counting only: the ids alone, nobody waits for them before finish_step
    HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(ids_ready_->get(), s), "cudaEventRecord"));
    HETMOE_RETURN_IF_ERROR(check(cudaStreamWaitEvent(d2h, ids_ready_->get(), 0), "cudaStreamWaitEvent"));
    return check(cudaMemcpyAsync(layer_ids, expert_ids_, n * K * sizeof(int32_t), cudaMemcpyDeviceToHost, d2h),
                 "cudaMemcpyAsync (expert ids)");
  }
  HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(routed_->get(), s), "cudaEventRecord"));
  HETMOE_RETURN_IF_ERROR(check(cudaStreamWaitEvent(d2h, routed_->get(), 0), "cudaStreamWaitEvent"));
  cudaEvent_t copy_begin = mark(d2h);
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(hidden_.data(), xb_, n * D * sizeof(float), cudaMemcpyDeviceToHost,
                                               d2h), "cudaMemcpyAsync (hidden states)"));
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(layer_ids, expert_ids_, n * K * sizeof(int32_t),
                                               cudaMemcpyDeviceToHost, d2h), "cudaMemcpyAsync (expert ids)"));
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(weights_.data(), expert_weights_, n * K * sizeof(float),
                                               cudaMemcpyDeviceToHost, d2h), "cudaMemcpyAsync (expert weights)"));
  add_timed(d2h_track_, profiler::TraceCategory::kCopy, "router output", static_cast<int32_t>(l), copy_begin,
            mark(d2h));
  return check(cudaEventRecord(staged_->get(), d2h), "cudaEventRecord");
}

Expected<RouterStaging> CudaStepDevice::wait_router(uint32_t l) {
  HETMOE_RETURN_IF_ERROR(check(cudaEventSynchronize(staged_->get()), "cudaEventSynchronize (router output)"));
  return RouterStaging{hidden_.as<float>(), step_expert_ids(l), weights_.as<float>()};
}

Status CudaStepDevice::enqueue_experts(uint32_t l) {
  const ModelHparams& hp = model_->hparams;
  const LayerPtrs& p = layers_[l];
  cudaStream_t s = compute_->get();
  const int64_t n = num_tokens_;
  if (!p.experts.gate)
    return check(cudaMemsetAsync(moe_gpu_, 0, n * hp.hidden_dim * sizeof(float), s), "cudaMemsetAsync (expert sum)");
  cudaEvent_t experts_begin = mark(s);
  if (n == 1) {
    HETMOE_RETURN_IF_ERROR(op_status(moe_experts_decode(p.experts, xb_, expert_ids_, expert_weights_, 1,
                                                        hp.num_experts_used, false, moe_scratch_, moe_gpu_, s),
                                     "moe_experts_decode", l));
  } else {
    HETMOE_RETURN_IF_ERROR(op_status(moe_experts_grouped(p.experts, xb_, expert_ids_, expert_weights_, n,
                                                         hp.num_experts_used, hp.num_experts, false, moe_scratch_,
                                                         moe_gpu_, s),
                                     "moe_experts_grouped", l));
  }
  add_timed(compute_track_, profiler::TraceCategory::kGpu, "experts", static_cast<int32_t>(l), experts_begin, mark(s));
  return {};
}

Status CudaStepDevice::enqueue_combine(uint32_t l, bool with_cpu_part) {
  const ModelHparams& hp = model_->hparams;
  cudaStream_t s = compute_->get();
  const int64_t n = num_tokens_;
  if (with_cpu_part) {
    cudaStream_t h2d = h2d_->get();
    cudaEvent_t copy_begin = mark(h2d);
    HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(moe_cpu_, cpu_partial_.data(), n * hp.hidden_dim * sizeof(float),
                                                 cudaMemcpyHostToDevice, h2d), "cudaMemcpyAsync (CPU expert sums)"));
    add_timed(h2d_track_, profiler::TraceCategory::kCopy, "cpu expert sums", static_cast<int32_t>(l), copy_begin,
              mark(h2d));
    HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(cpu_uploaded_->get(), h2d), "cudaEventRecord"));
    HETMOE_RETURN_IF_ERROR(check(cudaStreamWaitEvent(s, cpu_uploaded_->get(), 0), "cudaStreamWaitEvent"));
  }
  cudaEvent_t combine_begin = mark(s);
  HETMOE_RETURN_IF_ERROR(op_status(add_vectors(x_, moe_gpu_, with_cpu_part ? moe_cpu_ : nullptr, n * hp.hidden_dim,
                                               x_, s),
                                   "add_vectors (experts)", l));
  add_timed(compute_track_, profiler::TraceCategory::kGpu, "combine", static_cast<int32_t>(l), combine_begin, mark(s));
  return {};
}

Status CudaStepDevice::finish_step(std::span<float> logits_out) {
  const ModelHparams& hp = model_->hparams;
  cudaStream_t s = compute_->get();
  cudaStream_t d2h = d2h_->get();
  if (logits_out.empty()) {
    HETMOE_RETURN_IF_ERROR(check(cudaStreamSynchronize(s), "cudaStreamSynchronize (step)"));
    // The ids of the last layers may still be on their way to the host (counting).
    if (id_staging_) HETMOE_RETURN_IF_ERROR(check(cudaStreamSynchronize(d2h), "cudaStreamSynchronize (expert ids)"));
    return write_timed_spans();
  }
  const uint32_t last = hp.num_layers;
  const float* x_last = x_ + static_cast<size_t>(num_tokens_ - 1) * hp.hidden_dim;
  cudaEvent_t output_begin = mark(s);
  HETMOE_RETURN_IF_ERROR(op_status(rms_norm(x_last, output_norm_, 1, hp.hidden_dim, hp.rms_eps, xb_, s), "rms_norm", last));
  HETMOE_RETURN_IF_ERROR(op_status(matvec(model_->output.type, output_, hp.vocab_size, hp.hidden_dim, xb_, 1, nullptr,
                                          logits_, s), "matvec output", last));
  add_timed(compute_track_, profiler::TraceCategory::kGpu, "output", -1, output_begin, mark(s));
  HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(logits_ready_->get(), s), "cudaEventRecord"));
  HETMOE_RETURN_IF_ERROR(check(cudaStreamWaitEvent(d2h, logits_ready_->get(), 0), "cudaStreamWaitEvent"));
  cudaEvent_t copy_begin = mark(d2h);
  HETMOE_RETURN_IF_ERROR(check(cudaMemcpyAsync(logits_host_.data(), logits_, hp.vocab_size * sizeof(float),
                                               cudaMemcpyDeviceToHost, d2h), "cudaMemcpyAsync (logits)"));
  add_timed(d2h_track_, profiler::TraceCategory::kCopy, "logits", -1, copy_begin, mark(d2h));
  HETMOE_RETURN_IF_ERROR(check(cudaEventRecord(logits_copied_->get(), d2h), "cudaEventRecord"));
  HETMOE_RETURN_IF_ERROR(check(cudaEventSynchronize(logits_copied_->get()), "cudaEventSynchronize (logits)"));
  std::memcpy(logits_out.data(), logits_host_.data(), hp.vocab_size * sizeof(float));
  return write_timed_spans();
}

Status CudaStepDevice::project(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x,
                               const float* bias, float* y, const char* what, uint32_t l) {
  cudaStream_t s = compute_->get();
  const int64_t n = num_tokens_;
  if (cublas_ != nullptr && n >= kPrefillGemmMinTokens) {
    HETMOE_RETURN_IF_ERROR(op_status(dequantize_to_f16(type, w, rows, cols, gemm_w_f16_, s), what, l));
    return op_status(gemm_f16(cublas_, gemm_w_f16_, rows, cols, x, n, bias, gemm_x_f16_, y, s), what, l);
  }
  return op_status(matvec(type, w, rows, cols, x, n, bias, y, s), what, l);
}

cudaEvent_t CudaStepDevice::mark(cudaStream_t s) {
  if (!tracing_ || num_timing_used_ >= timing_events_.size()) return nullptr;
  cudaEvent_t e = timing_events_[num_timing_used_++].get();
  if (cudaEventRecord(e, s) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return e;
}

Status CudaStepDevice::write_timed_spans() {
  if (!tracing_ || anchor_ == nullptr) return {};
  // Every stream's work of the step is done once the device is idle; tracing only.
  HETMOE_RETURN_IF_ERROR(check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (trace)"));
  for (const TimedSpan& t : timed_) {
    float begin_ms = 0, end_ms = 0;
    if (cudaEventElapsedTime(&begin_ms, anchor_, t.begin) != cudaSuccess ||
        cudaEventElapsedTime(&end_ms, anchor_, t.end) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    const int64_t begin_ns = profiler::gpu_event_host_ns(anchor_ns_, begin_ms);
    const int64_t end_ns = profiler::gpu_event_host_ns(anchor_ns_, end_ms);
    if (t.layer_idx >= 0)
      profiler::trace_span(t.track, t.category, t.name, begin_ns, end_ns, {{"layer", t.layer_idx}});
    else
      profiler::trace_span(t.track, t.category, t.name, begin_ns, end_ns);
  }
  timed_.clear();
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
    profiler::trace_counter(profiler::kTraceCounterVram, static_cast<double>(total_bytes - free_bytes) / (1 << 20));
  else
    (void)cudaGetLastError();
  return {};
}

}  // namespace hetmoe::gpu
