#pragma once
// Device memory planning for the GPU and hybrid forward passes (plan/run split: this file is plain data and pure
// functions, testable without a GPU; gpu_kernels/ allocates one arena of DevicePlan::total_bytes and places every
// buffer at its offset). Which experts should live on the GPU is the placement Plan's decision (placement/plan.h);
// this file lays them out under a hard VRAM budget: experts the Plan wants that do not fit stay on the CPU with a
// note saying how many and why; dense weights, KV cache and activations that do not fit are an error naming the
// budget and the bytes needed.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/byte_size.h"
#include "runtime/base/expected.h"
#include "runtime/base/ggml_types.h"
#include "runtime/model/kv_type.h"
#include "runtime/model/model.h"
#include "placement/plan.h"

namespace hetmoe {


/// What the planner needs to know of a model: hyperparameters, the byte size of each device tensor, router biases.
struct DeviceModelDesc {
  ModelHparams hparams;
  TensorType attn_type = TensorType::kQ8_0;    // wq, wk, wv, wo
  TensorType router_type = TensorType::kF32;   // ffn_gate_inp
  TensorType expert_type = TensorType::kMXFP4; // gate, up, down experts
  TensorType output_type = TensorType::kQ8_0;  // output (unembedding)
  std::vector<std::vector<float>> router_bias;  // (num_layers, num_experts); empty rows: all zero
  /// Bytes of each layer's dense matrices as stored (a file may mix types per tensor); empty: from the types above.
  struct LayerMatrixBytes {
    uint64_t wq = 0, wk = 0, wv = 0, wo = 0, router = 0;
  };
  std::vector<LayerMatrixBytes> layer_matrix_bytes;  // (num_layers) or empty
  uint64_t output_bytes = 0;                         // output matrix as stored; 0: from output_type
};

/// The description of a loaded model.
DeviceModelDesc describe_for_device(const Model& model);

enum class DeviceBufferKind { kWeights, kExperts, kKvCache, kActivations, kScratch };

/// One region of the device arena. Offsets are multiples of kDeviceBufferAlign.
struct DeviceBuffer {
  std::string name;  // e.g. "blk.3.attn_q.weight", "blk.3.ffn_gate_exps", "kv.3.k", "act.x"
  DeviceBufferKind kind = DeviceBufferKind::kWeights;
  uint64_t offset = 0;  // bytes from the start of the arena
  uint64_t bytes = 0;
};

inline constexpr uint64_t kDeviceBufferAlign = 256;  // cudaMalloc's alignment; every kernel's vector loads fit

struct DevicePlanOptions {
  uint64_t vram_budget_bytes = 0;   // hard limit for the whole arena
  uint32_t context_length = 8192;   // tokens the KV cache holds (full-attention layers)
  uint32_t max_batch_tokens = 1;    // tokens of one device step (activations are sized for it)
  uint32_t extra_sliding_slots = 0; // sliding-window ring slots beyond the window (as KvCache::create)
  KvCacheType k_type = KvCacheType::kF16;  // the KV cache's K and V types (kv_type.h; the CUDA kernels read f16,
  KvCacheType v_type = KvCacheType::kF16;  // q8_0 and q4_0)
  /// (num_layers) ids of the experts the Plan puts on the GPU, per layer (gpu_experts_of_plan); empty: none.
  std::vector<std::vector<int32_t>> gpu_experts;
  // Scratch the kernels need (gpu_kernels/ops.h attention_scratch_floats / moe_scratch_floats for this batch and
  // context); passed in so the plan stays free of CUDA.
  int64_t attention_scratch_floats = 0;
  int64_t moe_scratch_floats = 0;
  uint64_t gemm_scratch_bytes = 0;  // prefill GEMM (f16 weights and activations); 0: no "scratch.gemm" buffer
};

struct DevicePlan {
  std::vector<DeviceBuffer> buffers;  // in arena order
  uint64_t budget_bytes = 0;
  uint64_t total_bytes = 0;           // arena bytes = end of the last buffer (≤ budget_bytes)
  uint64_t dense_bytes = 0;           // non-expert weights
  uint64_t kv_bytes = 0;              // K and V of every layer at kv_capacity slots, in k_type / v_type
  uint64_t activation_bytes = 0;      // activations and scratch
  uint64_t expert_bytes = 0;          // resident experts
  uint64_t bytes_per_expert = 0;      // one expert of one layer: gate, up, down and their biases
  std::vector<uint32_t> kv_capacity;                 // (num_layers) KV slots per layer
  KvCacheType k_type = KvCacheType::kF16;            // of the "kv.<layer>.k" buffers
  KvCacheType v_type = KvCacheType::kF16;            // of the "kv.<layer>.v" buffers
  std::vector<std::vector<int32_t>> gpu_experts;     // (num_layers) resident expert ids; index = device slot
  std::vector<std::vector<int32_t>> slot_of_expert;  // (num_layers, num_experts) device slot or −1 (CPU)
  std::vector<std::string> notes;                    // what stays on the CPU and why

  /// The buffer called `name`, or nullptr.
  const DeviceBuffer* find(std::string_view name) const;
  bool expert_on_gpu(uint32_t layer_idx, int32_t expert_idx) const {
    return slot_of_expert[layer_idx][static_cast<size_t>(expert_idx)] >= 0;
  }
  uint64_t num_gpu_experts_total() const;
  /// A short summary: "12 of 24·32 experts on the GPU, 5.1 GiB of 6 GiB (dense 1.4, KV 0.2 q8_0, experts 3.4 GiB)".
  std::string summary() const;
};

/// Plans the device arena for `desc` under options.vram_budget_bytes: dense weights (attention, norms, router,
/// output; the token embedding stays on the host: the step uploads one row per token), the KV cache (kv_capacity
/// slots per layer, K and V rows of options.k_type / v_type: kv_row_bytes), activations and scratch for
/// max_batch_tokens, then the experts of options.gpu_experts: per layer (slots, rows, cols) stacks, GGUF block layout.
/// When they do not all fit, they are taken rank by rank over the layers (within a layer by descending router bias,
/// ties to the lower id), so a tight budget spreads the resident experts evenly; the rest stay on the CPU and a note
/// says how many and why.
/// Errors: kInvalidArgument when the dense part (weights + KV + activations) exceeds the budget (the message names
/// both figures and suggests a smaller --ctx, a smaller KV type where one exists, or a larger --vram-budget), for
/// gpu_experts with another layer count, an expert id out of range or listed twice, a zero context or batch,
/// router_bias rows of the wrong size, or a quantized KV type that does not fit head_dim (check_kv_cache_type);
/// kUnsupported for an f32 KV type (no CUDA kernel reads it).
Expected<DevicePlan> plan_device_memory(const DeviceModelDesc& desc, const DevicePlanOptions& options);

/// The GPU-resident experts of a placement Plan as DevicePlanOptions::gpu_experts wants them, for the GPU pass,
/// which keeps every block's attention (norms, router, KV cache) and the unembedding on the GPU.
/// Errors: kInvalidArgument when the plan's shape (layers, experts, top-k) is not the model's; kUnsupported when the
/// plan keeps a block's attention or the unembedding on the CPU while using the GPU (the message names the block).
Expected<std::vector<std::vector<int32_t>>> gpu_experts_of_plan(const placement::Plan& plan, const ModelHparams& hp);

/// Human-readable bytes: "512 B", "3.2 MiB", "6.00 GiB".
std::string format_byte_size(uint64_t bytes);

}  // namespace hetmoe
