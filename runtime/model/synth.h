#pragma once
// Synthetic gpt-oss GGUF files: random weights in the exact layout of the published gpt-oss GGUF (gpt-oss-spec.md
// §1, §2, §5), for tests and benchmarks without the real 12 GB / 65 GB downloads.
//
// Layout written (the metadata keys, key order, value types, tensor order, names, shapes and types of
// tests/data/gpt-oss-tiny.gguf, scaled to the preset; gpt-oss-spec.md §2 for the published file):
//   metadata  general.architecture "gpt-oss", general.name, general.alignment (u32 32), gpt-oss.block_count,
//             .context_length, .embedding_length, .feed_forward_length, .attention.head_count, .head_count_kv,
//             .key_length, .value_length, .rope.freq_base (f32), .attention.layer_norm_rms_epsilon (f32),
//             .expert_count, .expert_used_count, .expert_feed_forward_length, .attention.sliding_window,
//             .rope.scaling.type "yarn", .rope.scaling.factor (f32), .rope.scaling.original_context_length,
//             tokenizer.ggml.model "gpt2", .pre "gpt-4o", .tokens, .token_type (INT32: 1 normal, 3 control),
//             .merges, .bos_token_id, .eos_token_id, .padding_token_id; every integer hparam UINT32.
//   tensors   token_embd.weight, then per layer blk.N.{attn_norm.weight, attn_q.weight, attn_q.bias, attn_k.weight,
//             attn_k.bias, attn_v.weight, attn_v.bias, attn_output.weight, attn_output.bias, attn_sinks.weight,
//             post_attention_norm.weight, ffn_gate_inp.weight, ffn_gate_inp.bias, ffn_gate_exps.weight,
//             ffn_gate_exps.bias, ffn_up_exps.weight, ffn_up_exps.bias, ffn_down_exps.weight, ffn_down_exps.bias},
//             then output_norm.weight, output.weight. Experts MXFP4; other matrices Q8_0; norms, biases, sinks and
//             the router F32.
//
// Weights (D = hidden size, Q = heads x head dim, F = expert FFN size; "std" is the standard deviation of the
// dequantized values; a matvec with unit-RMS input then gives outputs of about the stated std):
//   token_embd            Q8_0   std 1                  (the residual stream starts at unit RMS)
//   attn_q/k/v            Q8_0   std 1/sqrt(D)          (q, k, v elements ~ unit variance)
//   attn_output           Q8_0   std 1/sqrt(Q)
//   output                Q8_0   std 3/sqrt(D)          (logits std ~3)
//   ffn_gate_exps/up_exps MXFP4  std 1/sqrt(D)          (SwiGLU inputs ~ unit variance, rarely clamped at 7)
//   ffn_down_exps         MXFP4  std 1/sqrt(F)
//   ffn_gate_inp (router) F32    std 1/sqrt(D)          (router logits ~ unit variance)
//   *_norm                F32    1 + U(-0.1, 0.1)
//   attn/expert biases    F32    U(-a, a), std 0.02
//   attn_sinks            F32    U(-1, 3)               (logits on the scale of the attention scores: sinks take a
//                                                         large share of attention at the first positions)
//   ffn_gate_inp.bias     F32    the router skew below (all zero for skew 0)
// Q8_0 blocks: d = std / 73.61 (as f16, the same for the whole tensor), q uniform in [-127, 127] (std 73.61).
// MXFP4 blocks: nibbles uniform (E2M1 RMS 2.926); e = e0 or e0 + 1 at random, with e0 and the probability of
// e0 + 1 chosen so the mean square of 2.926 * 2^(e - 127) equals std^2.
// Values are a pure function of (seed, tensor index, element index): the file is the same for a seed whatever the
// chunking or thread count, and different seeds give different weights.
//
// Router skew S >= 0: for layer l, a random permutation perm_l of the E experts (drawn from the seed and the
// tensor index) ranks them by "hotness"; ffn_gate_inp.bias[perm_l[r]] = -S * ln(1 + r), r = 0..E-1. With equal raw
// router logits the selection odds of the expert of rank r then follow a Zipf law of exponent S (1 / (1 + r)^S);
// S = 0 leaves the bias zero.
//
// Vocabulary: ids [0, num_regular_tokens) are regular (type 1), the rest control tokens (type 3): the named
// specials of the preset, every other one "<|reserved_ID|>". With a .tiktoken ranks file the regular tokens are the
// lowest ranks, in rank order, in GPT-2 byte-level text, and the merges are derived from the ranks
// (runtime/model/tiktoken_vocab.h). Without one, a placeholder vocabulary (the same for every seed): the 256 single bytes
// in byte-level order, then pseudo-word syllables and words ("ba", "Ġko", "rem", "Ġtakir", ...) each formed by one
// merge of two earlier tokens; its merges are derived by the same tiktoken rule, so they are consistent with the
// tokens. A random model's output then reads as pseudo-words.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe {

/// A special token at a fixed id.
struct SynthSpecialToken {
  uint32_t id = 0;
  std::string_view text;
};

/// Hyperparameters of a synthetic model (gpt-oss-spec.md §1). Plain data.
struct SynthPreset {
  std::string_view name;          // "tiny", "gpt-oss-20b", "gpt-oss-120b"
  std::string_view display_name;  // general.name
  uint32_t num_layers = 0;        // block_count
  uint32_t context_length = 0;    // tokens
  uint32_t hidden_dim = 0;        // embedding_length D
  uint32_t num_heads = 0;         // attention.head_count
  uint32_t num_kv_heads = 0;      // attention.head_count_kv
  uint32_t head_dim = 0;          // attention.key_length = value_length
  uint32_t num_experts = 0;       // expert_count E
  uint32_t num_experts_used = 0;  // expert_used_count (top-k)
  uint32_t expert_ffn_dim = 0;    // expert_feed_forward_length F (also written as feed_forward_length)
  uint32_t sliding_window = 0;    // tokens
  float rope_freq_base = 0.0f;
  float rms_eps = 0.0f;
  float rope_scaling_factor = 0.0f;          // YaRN factor
  uint32_t rope_original_context_length = 0;  // YaRN original context, tokens
  uint32_t vocab_size = 0;          // rows of token_embd / output
  uint32_t num_regular_tokens = 0;  // ids below are ordinary BPE tokens; the rest are control tokens
  std::span<const SynthSpecialToken> named_specials;  // ids in [num_regular_tokens, vocab_size)
  uint32_t bos_token_id = 0;
  uint32_t eos_token_id = 0;
  uint32_t padding_token_id = 0;
  uint32_t file_type = 0;          // general.file_type: llama.cpp's llama_ftype (38 MXFP4 MoE); 0: not written

  uint32_t q_dim() const { return num_heads * head_dim; }
  uint32_t kv_dim() const { return num_kv_heads * head_dim; }
};

/// The built-in presets: "tiny" (the layout of tests/data/gpt-oss-tiny.gguf: 4 layers, D 256, 8 heads of 32,
/// 2 KV heads, 8 experts top-2, F 256, vocab 4106 with the 10 harmony specials at 4096..4105), "gpt-oss-20b"
/// (24 layers, 32 experts) and "gpt-oss-120b" (36 layers, 128 experts), both D 2880, 64 heads of 64, 8 KV heads,
/// top-4, F 2880, vocab 201088 with the harmony specials at their real ids 199998.. (bos 199998, eos 200002,
/// pad 199999).
std::span<const SynthPreset> synth_presets();

/// The preset called `name`. Errors: kInvalidArgument naming the known presets.
Expected<SynthPreset> synth_find_preset(std::string_view name);

/// What to write. Plain data.
struct SynthOptions {
  std::string preset = "tiny";  // a synth_presets() name
  uint64_t seed = 0;            // weights are a pure function of the seed
  float router_skew = 0.0f;     // S >= 0, see the header comment
  std::string vocab_path;       // .tiktoken ranks file; empty: placeholder vocabulary
};

/// A vocabulary as written to tokenizer.ggml.*.
struct SynthVocab {
  std::vector<std::string> tokens;   // (vocab_size) byte-level text; specials literal
  std::vector<int32_t> token_types;  // (vocab_size) 1 normal, 3 control
  std::vector<std::string> merges;   // "A B", rank = index
};

/// Builds the vocabulary of `preset`: from the ranks file at vocab_path (its lowest num_regular_tokens ranks), or
/// the placeholder vocabulary if vocab_path is empty. Errors: those of tiktoken::load_ranks and
/// tiktoken::derive_merges (kIo, kFormat); kInvalidArgument if the ranks file has fewer than num_regular_tokens
/// tokens.
Expected<SynthVocab> synth_build_vocab(const SynthPreset& preset, const std::string& vocab_path);

/// Progress of synth_write(), reported after the header and after each chunk of tensor data.
struct SynthProgress {
  uint64_t bytes_written = 0;  // file bytes so far, header included
  uint64_t total_bytes = 0;    // final file size
  uint32_t num_tensors_done = 0;
  uint32_t num_tensors = 0;
};
/// Returns true to go on, false to cancel the write (synth_write then fails with kInvalidArgument "cancelled").
using SynthProgressFn = std::function<bool(const SynthProgress&)>;

/// Writes the synthetic model to `out_path`. The file is streamed in chunks of a few MB (memory use is bounded
/// by the vocabulary plus a few chunk buffers, whatever the model size) to `out_path` + ".tmp", which is renamed
/// to `out_path` on success and deleted on failure. Chunks are generated in parallel (oneTBB) while the previous
/// chunk is written. `progress` (may be empty) is called from the calling thread. Errors: kInvalidArgument (unknown
/// preset, router_skew negative or not finite, ranks file too small, cancelled by `progress`), kIo (create/write/
/// rename failed; the message names the path and errno text), kFormat (bad ranks file). On error no file is left at
/// out_path + ".tmp"; an existing out_path is left unchanged.
Status synth_write(const SynthOptions& options, const std::string& out_path, const SynthProgressFn& progress = {});

}  // namespace hetmoe
