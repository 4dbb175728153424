#pragma once
// GpuStepDevice (runtime/exec/hybrid_step.h) on a CUDA GPU with the launchers of gpu_kernels/ops.h: weights uploaded once
// into the planned arena (GGUF blocks unchanged), a KV cache on the device (f16, q8_0 or q4_0: the plan's k_type and
// v_type), three streams — compute, host→device and device→host — and events at every hand-off. Nothing is
// allocated after create(); the decode loop synchronizes only where the step needs the host: the router output of a
// layer with CPU experts, and the logits.
// Prefill steps of kPrefillGemmMinTokens or more run the attention projections as dequantize-to-f16 + cuBLAS GEMM.
// While a trace records (profiler/trace.h), timing events at the step's hand-offs become spans on the tracks
// "gpu compute", "h2d copy" and "d2h copy" (mapped onto the host clock at finish_step), with a VRAM counter sample.
// CUDA builds only.

#include <memory>
#include <string>
#include <vector>

#include "gpu_kernels/device_runtime.h"
#include "gpu_kernels/ops.h"
#include "profiler/trace.h"
#include "runtime/backend/device_plan.h"
#include "runtime/backend/step_device.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"

namespace hetmoe::gpu {

/// Prefill steps of at least this many tokens run the q, k, v and o projections as dequantize_to_f16 + gemm_f16
/// (ops.h) instead of matvec, which re-reads the weights every 8 tokens. NOT MEASURED: 32 comes from a traffic
/// estimate for Q8_0 weights (the GEMM path writes and reads an f16 copy, ~5 bytes per weight per step; the GEMV
/// reads ~1.06 bytes per weight per 8 tokens: equal near 38 tokens). scripts/gpu_check.sh's pp512 is the first
/// measurement to set it from.
inline constexpr uint32_t kPrefillGemmMinTokens = 32;

/// The device cache type of a KV cache type (f16, q8_0, q4_0). Errors: kUnsupported for f32 (no CUDA reader).
Expected<KvType> device_kv_type(KvCacheType type);

/// Device bytes of the prefill GEMM scratch for steps of up to max_batch_tokens: the largest attention matrix and
/// the step's activations, both f16; 0 when max_batch_tokens < kPrefillGemmMinTokens (no GEMM path).
uint64_t prefill_gemm_scratch_bytes(const ModelHparams& hp, uint32_t max_batch_tokens);

class CudaStepDevice final : public GpuStepDevice {
 public:
  /// Allocates the arena of `plan` on the current device, uploads the dense weights and the resident experts, and
  /// creates streams, events and pinned staging (warnings about pageable fallbacks go to `notes`).
  /// `plan` must come from plan_device_memory for this model with max_batch_tokens ≥ 1 and the scratch sizes of
  /// ops.h. Errors: DeviceArena/PinnedBuffer/Stream/Event create's; kIo for a failed upload.
  /// device_idx: the CUDA device, made current again at each step (the decode thread may differ from this one).
  /// max_batch_tokens: the plan's (steps of up to this many tokens).
  static Expected<std::unique_ptr<CudaStepDevice>> create(const Model& model, DevicePlan plan, int device_idx,
                                                          uint32_t context_length, uint32_t rollback_slots,
                                                          uint32_t max_batch_tokens, std::vector<std::string>* notes);
  ~CudaStepDevice() override;

  bool expert_resident(uint32_t layer_idx, int32_t expert_idx) const override {
    return plan_.slot_of_expert[layer_idx][static_cast<size_t>(expert_idx)] >= 0;
  }
  bool all_experts_resident(uint32_t layer_idx) const override {
    return plan_.gpu_experts[layer_idx].size() == model_->hparams.num_experts;
  }
  uint32_t context_length() const override { return context_length_; }
  uint32_t rollback_slots() const override { return rollback_slots_; }
  uint32_t max_batch_tokens() const override { return max_batch_; }
  float* embedding_staging() override { return embedding_.as<float>(); }
  float* cpu_partial_staging() override { return cpu_partial_.as<float>(); }

  Status begin_step(uint32_t first_pos, uint32_t num_tokens) override;
  Status enqueue_attention_router(uint32_t layer_idx, bool stage_to_host) override;
  Expected<RouterStaging> wait_router(uint32_t layer_idx) override;
  Status enqueue_experts(uint32_t layer_idx) override;
  Status enqueue_combine(uint32_t layer_idx, bool with_cpu_part) override;
  Status finish_step(std::span<float> logits_out) override;
  void set_expert_id_staging(bool on) override { id_staging_ = on; }
  const int32_t* step_expert_ids(uint32_t layer_idx) const override {
    return ids_.as<int32_t>() + static_cast<size_t>(layer_idx) * max_batch_ * model_->hparams.num_experts_used;
  }

 private:
  /// A span of device work between two timing events (trace on), written to the trace at finish_step.
  struct TimedSpan {
    profiler::TraceTrack track = 0;
    profiler::TraceCategory category = profiler::TraceCategory::kGpu;
    const char* name = nullptr;
    int32_t layer_idx = -1;  // -1: not a layer's
    cudaEvent_t begin = nullptr, end = nullptr;
  };
  struct LayerPtrs {
    const float* attn_norm = nullptr;       // (D)
    const void* wq = nullptr;               // (Q, D) attn_type
    const float* bq = nullptr;              // (Q)
    const void* wk = nullptr;               // (KV, D)
    const float* bk = nullptr;              // (KV)
    const void* wv = nullptr;               // (KV, D)
    const float* bv = nullptr;              // (KV)
    const void* wo = nullptr;               // (D, Q)
    const float* bo = nullptr;              // (D)
    const float* sinks = nullptr;           // (H)
    const float* post_attn_norm = nullptr;  // (D)
    const void* router = nullptr;           // (E, D)
    const float* router_bias = nullptr;     // (E)
    KvLayerView kv;
    ExpertWeights experts;                  // resident slots; gate == nullptr when none
  };

  CudaStepDevice(const Model& model, DevicePlan plan, DeviceArena arena, int device_idx, uint32_t context_length,
                 uint32_t rollback_slots, uint32_t max_batch_tokens);
  Status upload(std::vector<std::string>* notes);
  /// y (n, rows) = W x + bias for the step's n tokens: GEMM (f16, cuBLAS) from kPrefillGemmMinTokens tokens on, GEMV
  /// below. Errors: op_status's, naming `what` and the layer.
  Status project(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, const float* bias,
                 float* y, const char* what, uint32_t layer_idx);
  /// Trace on: records the next timing event on `s` and returns it; nullptr when off (or the pool is used up).
  cudaEvent_t mark(cudaStream_t s);
  void add_timed(profiler::TraceTrack track, profiler::TraceCategory category, const char* name, int32_t layer_idx,
                 cudaEvent_t begin, cudaEvent_t end) {
    if (begin != nullptr && end != nullptr) timed_.push_back({track, category, name, layer_idx, begin, end});
  }
  /// Trace on, after the step's work: its timed spans on the host clock and a VRAM sample into the trace.
  Status write_timed_spans();
  Status check(cudaError_t err, const char* what) const { return cuda_status(err, what); }
  template <class T>
  T* buffer(std::string_view name) const {
    const DeviceBuffer* b = plan_.find(name);
    return b ? static_cast<T*>(arena_.at(*b)) : nullptr;
  }

  const Model* model_;
  DevicePlan plan_;
  DeviceArena arena_;
  int device_idx_ = 0;
  uint32_t context_length_ = 0;
  uint32_t rollback_slots_ = 0;
  uint32_t max_batch_ = 1;     // B
  uint32_t first_pos_ = 0;     // position of the step's first token
  uint32_t num_tokens_ = 0;    // tokens of the current step (n ≤ B)
  ref::RopeYarnParams rope_;
  std::vector<LayerPtrs> layers_;  // (num_layers)
  const float* output_norm_ = nullptr;  // (D)
  const void* output_ = nullptr;        // (vocab, D) output_type

  // Activations in the arena, for up to B tokens.
  float* x_ = nullptr;              // (B, D) residual stream
  float* xb_ = nullptr;             // (B, D) normed block input
  float* q_ = nullptr;              // (B, Q)   the three blocks of act.qkv
  float* k_ = nullptr;              // (B, KV)
  float* v_ = nullptr;              // (B, KV)
  float* attn_out_ = nullptr;       // (B, Q)
  float* proj_ = nullptr;           // (B, D)
  float* router_logits_ = nullptr;  // (B, E)
  int32_t* expert_ids_ = nullptr;   // (B, K)
  float* expert_weights_ = nullptr; // (B, K)
  float* moe_gpu_ = nullptr;        // (B, D)
  float* moe_cpu_ = nullptr;        // (B, D)
  int32_t* positions_ = nullptr;    // (B)
  float* logits_ = nullptr;         // (vocab)
  float* attn_scratch_ = nullptr;   // (attention_scratch_floats) for one decode token
  float* moe_scratch_ = nullptr;    // (moe_scratch_floats)

  void* gemm_w_f16_ = nullptr;      // (largest attention matrix) f16, prefill GEMM scratch
  void* gemm_x_f16_ = nullptr;      // (B, max(D, Q)) f16
  cublasHandle_t cublas_ = nullptr; // prefill GEMM; nullptr when B < kPrefillGemmMinTokens

  // Pinned host staging.
  PinnedBuffer embedding_;       // (B, D) f32
  PinnedBuffer position_;        // (B) int32
  PinnedBuffer hidden_;          // (B, D) f32 normed MoE input
  PinnedBuffer ids_;             // (L, B, K) int32: each layer's top-k ids (staged with the router output, or alone
                                 // for counting)
  bool id_staging_ = false;
  PinnedBuffer weights_;         // (B, K) f32
  PinnedBuffer cpu_partial_;     // (B, D) f32
  PinnedBuffer logits_host_;     // (vocab) f32

  std::unique_ptr<Stream> compute_, h2d_, d2h_;
  std::unique_ptr<Event> inputs_ready_;    // h2d: embeddings and positions uploaded
  std::unique_ptr<Event> routed_;          // compute: router output ready for the copy to the host
  std::unique_ptr<Event> staged_;          // d2h: router output in host staging
  std::unique_ptr<Event> cpu_uploaded_;    // h2d: CPU partial uploaded
  std::unique_ptr<Event> logits_ready_;    // compute: logits computed
  std::unique_ptr<Event> logits_copied_;   // d2h: logits in host staging
  std::unique_ptr<Event> ids_ready_;       // compute: top-k ids ready for the counting copy

  // Tracing: a pool of timing events (kTimingEventsPerLayer per layer and some per step), the step's spans.
  std::vector<Event> timing_events_;
  size_t num_timing_used_ = 0;
  std::vector<TimedSpan> timed_;
  bool tracing_ = false;                   // trace_enabled() at begin_step
  cudaEvent_t anchor_ = nullptr;           // timing event completed at anchor_ns_
  int64_t anchor_ns_ = 0;
  bool tracks_named_ = false;
  profiler::TraceTrack compute_track_ = 0, h2d_track_ = 0, d2h_track_ = 0;
};

}  // namespace hetmoe::gpu
