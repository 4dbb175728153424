#pragma once
// gpt-oss model: hyperparameters from GGUF metadata and weights bound by name, with shape and type checks
// (gpt-oss-spec.md §1, §2). Works for any layer/expert count (gpt-oss-20b, gpt-oss-120b, the tiny fixture).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cpu_kernels/reference.h"
#include "runtime/base/expected.h"
#include "runtime/base/ggml_types.h"
#include "runtime/model/gguf.h"

namespace hetmoe {

/// Hyperparameters (GGUF keys under "gpt-oss."; defaults where the spec says a key may be absent).
struct ModelHparams {
  uint32_t num_layers = 0;         // block_count
  uint32_t hidden_dim = 0;         // embedding_length (2880)
  uint32_t num_heads = 0;          // attention.head_count (64)
  uint32_t num_kv_heads = 0;       // attention.head_count_kv (8)
  uint32_t head_dim = 0;           // attention.key_length (= value_length; 64)
  uint32_t num_experts = 0;        // expert_count (32 / 128)
  uint32_t num_experts_used = 0;   // expert_used_count (top-k, 4)
  uint32_t expert_ffn_dim = 0;     // expert_feed_forward_length (2880)
  uint32_t vocab_size = 0;         // rows of token_embd.weight (201088)
  uint32_t context_length = 0;     // context_length the model was trained for (131072)
  uint32_t sliding_window = 128;   // attention.sliding_window
  uint32_t sliding_window_pattern = 2;  // attention.sliding_window_pattern: layer l slides iff l % pattern == 0
  float rope_freq_base = 150000.0f;     // rope.freq_base
  float rms_eps = 1e-5f;                // attention.layer_norm_rms_epsilon
  float yarn_factor = 1.0f;             // rope.scaling.factor (32 with type "yarn"; 1 = no scaling)
  uint32_t yarn_original_context = 4096;  // rope.scaling.original_context_length
  float yarn_beta_fast = 32.0f;         // rope.scaling.yarn_beta_fast
  float yarn_beta_slow = 1.0f;          // rope.scaling.yarn_beta_slow

  /// Even layers (pattern 2) use the sliding window; the others attend to the whole context.
  bool is_sliding(uint32_t layer_idx) const {
    return sliding_window_pattern > 0 && layer_idx % sliding_window_pattern == 0;
  }
  uint32_t q_dim() const { return num_heads * head_dim; }      // 4096
  uint32_t kv_dim() const { return num_kv_heads * head_dim; }  // 512
};

/// A weight tensor: a zero-copy view into the mapped GGUF. Shape in ggml order (ne[0] contiguous):
/// a matrix {K, N} is N rows of K; an expert stack {K, N, E} is E matrices of N rows of K.
struct WeightView {
  const gguf::TensorInfo* info = nullptr;
  TensorType type = TensorType::kF32;
  const uint8_t* data = nullptr;
  uint64_t num_cols = 0;    // ne[0] = K
  uint64_t num_rows = 0;    // ne[1] = N
  uint64_t row_bytes = 0;   // bytes of one row of K values
  /// Experts whose rows are in kMXFP4_R16 while `type` is kMXFP4: a RAM tier repacks only its resident experts
  /// (runtime/model/weights_repack.h). Empty, or one flag per expert (1: repacked).
  std::vector<uint8_t> r16_experts{};
  /// Row n of expert e (e = 0 for a plain matrix).
  const uint8_t* row(uint64_t n, uint64_t e = 0) const { return data + (e * num_rows + n) * row_bytes; }
  /// The layout of expert e's rows: `type`, or kMXFP4_R16 where r16_experts marks e.
  TensorType expert_type(uint64_t e) const {
    return e < r16_experts.size() && r16_experts[e] != 0 ? TensorType::kMXFP4_R16 : type;
  }
};

/// Weights of one transformer block. Small vectors are dequantized to f32 at load time.
struct LayerWeights {
  std::vector<float> attn_norm;        // (hidden_dim)
  WeightView wq;                       // {hidden_dim, q_dim}
  std::vector<float> bq;               // (q_dim)
  WeightView wk;                       // {hidden_dim, kv_dim}
  std::vector<float> bk;               // (kv_dim)
  WeightView wv;                       // {hidden_dim, kv_dim}
  std::vector<float> bv;               // (kv_dim)
  WeightView wo;                       // {q_dim, hidden_dim}
  std::vector<float> bo;               // (hidden_dim)
  std::vector<float> sinks;            // (num_heads) raw logits
  std::vector<float> post_attn_norm;   // (hidden_dim) the pre-MoE norm
  WeightView router;                   // {hidden_dim, num_experts}
  std::vector<float> router_bias;      // (num_experts)
  WeightView gate_exps;                // {hidden_dim, expert_ffn_dim, num_experts}
  std::vector<float> gate_bias;        // (num_experts, expert_ffn_dim)
  WeightView up_exps;                  // {hidden_dim, expert_ffn_dim, num_experts}
  std::vector<float> up_bias;          // (num_experts, expert_ffn_dim)
  WeightView down_exps;                // {expert_ffn_dim, hidden_dim, num_experts}
  std::vector<float> down_bias;        // (num_experts, hidden_dim)
};

/// A loaded gpt-oss model. Owns the GGUF mapping; weight views point into it. Move-only.
struct Model {
  std::unique_ptr<gguf::File> file;
  ModelHparams hparams;
  WeightView token_embd;            // {hidden_dim, vocab_size}
  std::vector<float> output_norm;   // (hidden_dim)
  WeightView output;                // {hidden_dim, vocab_size}; token_embd when output.weight is absent
  std::vector<LayerWeights> layers; // (num_layers)

  /// Opens and validates a gpt-oss GGUF. Errors: the reader's (kIo/kFormat/kUnsupported); kUnsupported if
  /// general.architecture is not "gpt-oss" or rope.scaling.type is neither absent, "none" nor "yarn";
  /// kMissing for a missing key or tensor (named); kShape for a tensor whose shape or type does not fit
  /// (names the tensor, the shape found and the shape expected); kFormat for out-of-range hparams.
  /// `mode`: how the file's bytes are made addressable (gguf::File::LoadMode; kAuto copies the weights into
  /// huge-page memory when they fit in RAM, else maps the file).
  /// `progress`: gguf::File::open's, while the weights are read into memory.
  /// `reserve_bytes`: what kAuto keeps free beside the weights (gguf::File::choose_load_mode).
  static Expected<Model> load(const std::string& path, gguf::File::LoadMode mode = gguf::File::LoadMode::kAuto,
                              const gguf::File::LoadProgress& progress = {},
                              uint64_t reserve_bytes = gguf::File::kDefaultReserveBytes);
  /// Same, from an already-opened file.
  static Expected<Model> from_file(gguf::File file);
};

/// The YaRN RoPE parameters of a model (gpt-oss-spec.md §3 step 3): rotated dims = head_dim, freq_scale =
/// 1 / rope.scaling.factor, the ramp on (ext_factor 1) only when the factor is not 1.
ref::RopeYarnParams rope_params(const ModelHparams& hp);

/// Reads and validates the hyperparameters only (no tensors bound). Same errors as Model::load.
Expected<ModelHparams> read_hparams(const gguf::File& file);

}  // namespace hetmoe
