#include "runtime/model/synth.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_group.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>

#include "cpu_kernels/reference.h"
#include "runtime/base/ggml_types.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/tiktoken_vocab.h"

namespace hetmoe {
namespace {

// ---- presets ---------------------------------------------------------------------------------------------------

constexpr SynthSpecialToken kTinySpecials[] = {
    {4096, "<|startoftext|>"}, {4097, "<|endoftext|>"}, {4098, "<|return|>"}, {4099, "<|constrain|>"},
    {4100, "<|channel|>"},     {4101, "<|start|>"},     {4102, "<|end|>"},    {4103, "<|message|>"},
    {4104, "<|call|>"},        {4105, "<|endofprompt|>"},
};

// gpt-oss-spec.md §5: the harmony specials at their o200k_harmony ids; the other ids >= 199998 are reserved.
constexpr SynthSpecialToken kHarmonySpecials[] = {
    {199998, "<|startoftext|>"}, {199999, "<|endoftext|>"}, {200002, "<|return|>"}, {200003, "<|constrain|>"},
    {200005, "<|channel|>"},     {200006, "<|start|>"},     {200007, "<|end|>"},    {200008, "<|message|>"},
    {200012, "<|call|>"},        {200018, "<|endofprompt|>"},
};

/// llama.cpp's LLAMA_FTYPE_MOSTLY_MXFP4_MOE, the general.file_type of the published gpt-oss GGUFs (peers label the
/// file by it; the tiny fixture has none).
constexpr uint32_t kFileTypeMxfp4Moe = 38;

constexpr SynthPreset kPresets[] = {
    {.name = "tiny",
     .display_name = "synthetic gpt-oss tiny (random weights)",
     .num_layers = 4,
     .context_length = 131072,
     .hidden_dim = 256,
     .num_heads = 8,
     .num_kv_heads = 2,
     .head_dim = 32,
     .num_experts = 8,
     .num_experts_used = 2,
     .expert_ffn_dim = 256,
     .sliding_window = 128,
     .rope_freq_base = 150000.0f,
     .rms_eps = 1e-5f,
     .rope_scaling_factor = 32.0f,
     .rope_original_context_length = 4096,
     .vocab_size = 4106,
     .num_regular_tokens = 4096,
     .named_specials = kTinySpecials,
     .bos_token_id = 4096,
     .eos_token_id = 4098,
     .padding_token_id = 4097},
    {.name = "gpt-oss-20b",
     .display_name = "synthetic gpt-oss 20b (random weights)",
     .num_layers = 24,
     .context_length = 131072,
     .hidden_dim = 2880,
     .num_heads = 64,
     .num_kv_heads = 8,
     .head_dim = 64,
     .num_experts = 32,
     .num_experts_used = 4,
     .expert_ffn_dim = 2880,
     .sliding_window = 128,
     .rope_freq_base = 150000.0f,
     .rms_eps = 1e-5f,
     .rope_scaling_factor = 32.0f,
     .rope_original_context_length = 4096,
     .vocab_size = 201088,
     .num_regular_tokens = 199998,
     .named_specials = kHarmonySpecials,
     .bos_token_id = 199998,
     .eos_token_id = 200002,
     .padding_token_id = 199999,
     .file_type = kFileTypeMxfp4Moe},
    {.name = "gpt-oss-120b",
     .display_name = "synthetic gpt-oss 120b (random weights)",
     .num_layers = 36,
     .context_length = 131072,
     .hidden_dim = 2880,
     .num_heads = 64,
     .num_kv_heads = 8,
     .head_dim = 64,
     .num_experts = 128,
     .num_experts_used = 4,
     .expert_ffn_dim = 2880,
     .sliding_window = 128,
     .rope_freq_base = 150000.0f,
     .rms_eps = 1e-5f,
     .rope_scaling_factor = 32.0f,
     .rope_original_context_length = 4096,
     .vocab_size = 201088,
     .num_regular_tokens = 199998,
     .named_specials = kHarmonySpecials,
     .bos_token_id = 199998,
     .eos_token_id = 200002,
     .padding_token_id = 199999,
     .file_type = kFileTypeMxfp4Moe},
};

// ---- counter-based random numbers ------------------------------------------------------------------------------

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64's output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Draw number `counter` of the stream `key` (splitmix64 evaluated at an arbitrary position).
inline uint64_t draw(uint64_t key, uint64_t counter) { return mix64(key + (counter + 1) * kGolden); }

// Uniform in [0, 1) with 24 bits.
inline float unit_float(uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

uint64_t tensor_key(uint64_t seed, uint64_t tensor_idx) {
  return mix64(mix64(seed ^ 0x5EEDC0DE5EEDC0DEull) + (tensor_idx + 1) * kGolden);
}

// ---- tensor plan -----------------------------------------------------------------------------------------------

enum class Fill {
  kQ8_0,        // d constant, q uniform in [-127, 127]
  kMXFP4,       // nibbles uniform, e in {e0, e0 + 1}
  kUniform,     // F32 center + U(-half_width, half_width)
  kRouterBias,  // F32 -skew * ln(1 + rank) over a random permutation
};

// Standard deviation of integers uniform in [-127, 127]: sqrt(127 * 128 / 3).
constexpr double kQ8UniformStd = 73.61158;
// RMS of the E2M1 values {0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6} (two zeros) with uniform nibbles: sqrt(8.5625).
constexpr double kE2M1UniformRms = 2.9261749;
// Uniform noise of standard deviation 0.02 for biases: half width 0.02 * sqrt(3).
constexpr float kBiasHalfWidth = 0.034641f;

struct TensorPlan {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<uint64_t> shape;  // ggml order
  Fill fill = Fill::kUniform;
  uint64_t num_blocks = 0;   // Q8_0/MXFP4 blocks, or F32 elements
  uint32_t block_bytes = 0;  // 34, 17 or 4
  uint64_t offset = 0;       // in the data section, bytes
  // kQ8_0
  uint16_t q8_d_f16 = 0;
  // kMXFP4
  uint8_t mxfp4_e0 = 127;
  float mxfp4_p_high = 0.0f;  // probability of e0 + 1
  // kUniform
  float center = 0.0f;
  float half_width = 0.0f;
  // kRouterBias
  float router_skew = 0.0f;
};

TensorPlan plan_tensor(std::string name, TensorType type, std::vector<uint64_t> shape) {
  TensorPlan p;
  p.name = std::move(name);
  p.type = type;
  p.shape = std::move(shape);
  const auto& traits = tensor_type_traits(type);
  const uint64_t num_elements = std::accumulate(p.shape.begin(), p.shape.end(), uint64_t{1}, std::multiplies<>());
  p.num_blocks = num_elements / traits.block_elems;
  p.block_bytes = traits.block_bytes;
  return p;
}

TensorPlan plan_q8_0(std::string name, std::vector<uint64_t> shape, double std_dev) {
  TensorPlan p = plan_tensor(std::move(name), TensorType::kQ8_0, std::move(shape));
  p.fill = Fill::kQ8_0;
  p.q8_d_f16 = ref::f32_to_f16(static_cast<float>(std_dev / kQ8UniformStd));
  return p;
}

TensorPlan plan_mxfp4(std::string name, std::vector<uint64_t> shape, double std_dev) {
  TensorPlan p = plan_tensor(std::move(name), TensorType::kMXFP4, std::move(shape));
  p.fill = Fill::kMXFP4;
  const double scale = std_dev / kE2M1UniformRms;  // wanted RMS of 2^(e - 127)
  const int e0 = static_cast<int>(std::floor(std::log2(scale)));
  const double ratio = scale / std::ldexp(1.0, e0);  // in [1, 2)
  // Mean square (1 - p) * 4^e0 + p * 4^(e0 + 1) = scale^2.
  p.mxfp4_p_high = static_cast<float>((ratio * ratio - 1.0) / 3.0);
  p.mxfp4_e0 = static_cast<uint8_t>(std::clamp(e0 + 127, 1, 253));
  return p;
}

TensorPlan plan_f32(std::string name, std::vector<uint64_t> shape, float center, float half_width) {
  TensorPlan p = plan_tensor(std::move(name), TensorType::kF32, std::move(shape));
  p.fill = Fill::kUniform;
  p.center = center;
  p.half_width = half_width;
  return p;
}

std::vector<TensorPlan> plan_tensors(const SynthPreset& preset, float router_skew) {
  const uint64_t d = preset.hidden_dim, q = preset.q_dim(), kv = preset.kv_dim();
  const uint64_t f = preset.expert_ffn_dim, e = preset.num_experts, v = preset.vocab_size;
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  const double inv_sqrt_q = 1.0 / std::sqrt(static_cast<double>(q));
  const double inv_sqrt_f = 1.0 / std::sqrt(static_cast<double>(f));
  const float norm_half_width = 0.1f;

  std::vector<TensorPlan> plans;
  plans.push_back(plan_q8_0("token_embd.weight", {d, v}, 1.0));
  for (uint32_t l = 0; l < preset.num_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    plans.push_back(plan_f32(blk + "attn_norm.weight", {d}, 1.0f, norm_half_width));
    plans.push_back(plan_q8_0(blk + "attn_q.weight", {d, q}, inv_sqrt_d));
    plans.push_back(plan_f32(blk + "attn_q.bias", {q}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_q8_0(blk + "attn_k.weight", {d, kv}, inv_sqrt_d));
    plans.push_back(plan_f32(blk + "attn_k.bias", {kv}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_q8_0(blk + "attn_v.weight", {d, kv}, inv_sqrt_d));
    plans.push_back(plan_f32(blk + "attn_v.bias", {kv}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_q8_0(blk + "attn_output.weight", {q, d}, inv_sqrt_q));
    plans.push_back(plan_f32(blk + "attn_output.bias", {d}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_f32(blk + "attn_sinks.weight", {preset.num_heads}, 1.0f, 2.0f));
    plans.push_back(plan_f32(blk + "post_attention_norm.weight", {d}, 1.0f, norm_half_width));
    // Router weight: uniform with std 1/sqrt(D), half width sqrt(3)/sqrt(D).
    const auto router_half_width = static_cast<float>(std::sqrt(3.0) * inv_sqrt_d);
    plans.push_back(plan_f32(blk + "ffn_gate_inp.weight", {d, e}, 0.0f, router_half_width));
    TensorPlan router_bias = plan_f32(blk + "ffn_gate_inp.bias", {e}, 0.0f, 0.0f);
    router_bias.fill = Fill::kRouterBias;
    router_bias.router_skew = router_skew;
    plans.push_back(std::move(router_bias));
    plans.push_back(plan_mxfp4(blk + "ffn_gate_exps.weight", {d, f, e}, inv_sqrt_d));
    plans.push_back(plan_f32(blk + "ffn_gate_exps.bias", {f, e}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_mxfp4(blk + "ffn_up_exps.weight", {d, f, e}, inv_sqrt_d));
    plans.push_back(plan_f32(blk + "ffn_up_exps.bias", {f, e}, 0.0f, kBiasHalfWidth));
    plans.push_back(plan_mxfp4(blk + "ffn_down_exps.weight", {f, d, e}, inv_sqrt_f));
    plans.push_back(plan_f32(blk + "ffn_down_exps.bias", {d, e}, 0.0f, kBiasHalfWidth));
  }
  plans.push_back(plan_f32("output_norm.weight", {d}, 1.0f, norm_half_width));
  plans.push_back(plan_q8_0("output.weight", {d, v}, 3.0 * inv_sqrt_d));
  return plans;
}

// Writes blocks [block_begin, block_end) of `plan` to out ((block_end - block_begin) * block_bytes bytes).
// Block i uses only draws derived from (key, i), so any split of the tensor gives the same bytes.
void fill_blocks(const TensorPlan& plan, uint64_t key, uint64_t block_begin, uint64_t block_end, uint8_t* out) {
  switch (plan.fill) {
    case Fill::kQ8_0:
      for (uint64_t i = block_begin; i < block_end; ++i) {
        uint8_t* block = out + (i - block_begin) * kQ8_0BlockBytes;
        std::memcpy(block, &plan.q8_d_f16, 2);
        for (uint64_t j = 0; j < 8; ++j) {
          uint64_t bits = draw(key, i * 8 + j);
          for (int k = 0; k < 4; ++k, bits >>= 16) {
            const int q = static_cast<int>(((bits & 0xFFFF) * 255) >> 16) - 127;  // uniform in [-127, 127]
            block[2 + j * 4 + k] = static_cast<uint8_t>(static_cast<int8_t>(q));
          }
        }
      }
      break;
    case Fill::kMXFP4:
      for (uint64_t i = block_begin; i < block_end; ++i) {
        uint8_t* block = out + (i - block_begin) * kMXFP4BlockBytes;
        const bool high = unit_float(draw(key, i * 3 + 2)) < plan.mxfp4_p_high;
        block[0] = static_cast<uint8_t>(plan.mxfp4_e0 + (high ? 1 : 0));
        const uint64_t nibbles[2] = {draw(key, i * 3), draw(key, i * 3 + 1)};
        std::memcpy(block + 1, nibbles, 16);
      }
      break;
    case Fill::kUniform:
      for (uint64_t i = block_begin; i < block_end; ++i) {
        const float x = plan.center + plan.half_width * (2.0f * unit_float(draw(key, i)) - 1.0f);
        std::memcpy(out + (i - block_begin) * 4, &x, 4);
      }
      break;
    case Fill::kRouterBias: {
      // Small tensor (num_experts values): always generated whole.
      const uint64_t n = plan.num_blocks;
      std::vector<uint32_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0u);
      for (uint64_t r = n; r > 1; --r) std::swap(perm[r - 1], perm[draw(key, r) % r]);  // Fisher-Yates
      std::vector<float> bias(n);
      for (uint64_t r = 0; r < n; ++r)
        bias[perm[r]] = plan.router_skew == 0.0f ? 0.0f : -plan.router_skew * std::log(1.0f + static_cast<float>(r));
      for (uint64_t i = block_begin; i < block_end; ++i) std::memcpy(out + (i - block_begin) * 4, &bias[i], 4);
      break;
    }
  }
}

// ---- vocabulary ------------------------------------------------------------------------------------------------

// Pseudo-word tokens in the order described in synth.h; every token is accepted only if tiktoken's BPE over the
// tokens before it leaves exactly two ranked parts, so the merges derived from the list are consistent with it.
Expected<std::vector<std::string>> placeholder_tokens(uint32_t num_tokens) {
  if (num_tokens < 256)
    return make_error(ErrorCode::kInvalidArgument,
                      "placeholder vocabulary needs at least 256 regular tokens, not " + std::to_string(num_tokens));
  tiktoken::RankTable table;
  for (uint8_t b : tiktoken::byte_level_order()) table.add(std::string(1, static_cast<char>(b)));
  auto try_add = [&](std::string s) {
    if (table.size() >= num_tokens || table.find(s)) return;
    const std::vector<uint32_t> parts = table.merge_parts(s, table.size());
    if (parts.size() != 2) return;
    if (!table.find(std::string_view(s).substr(0, parts[0])) || !table.find(std::string_view(s).substr(parts[0])))
      return;
    table.add(std::move(s));
  };

  const std::string_view consonants = "bcdfghjklmnprstvwz";
  const std::string_view vowels = "aeiou";
  std::vector<std::string> open_syllables;    // consonant + vowel
  std::vector<std::string> closed_syllables;  // consonant + vowel + consonant
  for (char c : consonants)
    for (char v : vowels) open_syllables.push_back({c, v});
  for (const auto& cv : open_syllables)
    for (char c : consonants) closed_syllables.push_back(cv + c);

  for (const auto& cv : open_syllables) try_add(cv);
  for (char c : consonants) try_add(std::string(" ") + c);
  for (char v : vowels) try_add(std::string(" ") + v);
  for (const auto& cvc : closed_syllables) try_add(cvc);
  for (const auto& cv : open_syllables) try_add(" " + cv);
  for (const auto& cvc : closed_syllables) try_add(" " + cvc);

  // Two-syllable words, three in four with a leading space, in a fixed pseudo-random order.
  std::vector<std::string> syllables = open_syllables;
  syllables.insert(syllables.end(), closed_syllables.begin(), closed_syllables.end());
  constexpr uint64_t kWordKey = 0x706C616365686F6Cull;
  const uint64_t max_attempts = 64ull * num_tokens;
  for (uint64_t attempt = 0; table.size() < num_tokens; ++attempt) {
    if (attempt >= max_attempts)
      return make_error(ErrorCode::kInvalidArgument,
                        "placeholder vocabulary cannot reach " + std::to_string(num_tokens) + " tokens");
    const uint64_t bits = draw(kWordKey, attempt);
    const bool space = (bits & 3) != 0;
    const std::string& first = syllables[(bits >> 8) % syllables.size()];
    const std::string& second = syllables[(bits >> 32) % syllables.size()];
    try_add((space ? " " : "") + first + second);
  }
  std::vector<std::string> tokens(num_tokens);
  for (uint32_t r = 0; r < num_tokens; ++r) tokens[r] = table.token(r);
  return tokens;
}

// ---- writing ---------------------------------------------------------------------------------------------------

constexpr uint64_t kChunkBytes = 4u << 20;  // bytes generated, then written, per step

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

void add_metadata(gguf::Writer& writer, const SynthPreset& p, const SynthVocab& vocab) {
  writer.add_string("general.architecture", "gpt-oss");
  writer.add_string("general.name", p.display_name);
  writer.add_u32("general.alignment", gguf::kDefaultAlignment);
  if (p.file_type != 0) writer.add_u32("general.file_type", p.file_type);
  writer.add_u32("gpt-oss.block_count", p.num_layers);
  writer.add_u32("gpt-oss.context_length", p.context_length);
  writer.add_u32("gpt-oss.embedding_length", p.hidden_dim);
  writer.add_u32("gpt-oss.feed_forward_length", p.expert_ffn_dim);
  writer.add_u32("gpt-oss.attention.head_count", p.num_heads);
  writer.add_u32("gpt-oss.attention.head_count_kv", p.num_kv_heads);
  writer.add_u32("gpt-oss.attention.key_length", p.head_dim);
  writer.add_u32("gpt-oss.attention.value_length", p.head_dim);
  writer.add_f32("gpt-oss.rope.freq_base", p.rope_freq_base);
  writer.add_f32("gpt-oss.attention.layer_norm_rms_epsilon", p.rms_eps);
  writer.add_u32("gpt-oss.expert_count", p.num_experts);
  writer.add_u32("gpt-oss.expert_used_count", p.num_experts_used);
  writer.add_u32("gpt-oss.expert_feed_forward_length", p.expert_ffn_dim);
  writer.add_u32("gpt-oss.attention.sliding_window", p.sliding_window);
  writer.add_string("gpt-oss.rope.scaling.type", "yarn");
  writer.add_f32("gpt-oss.rope.scaling.factor", p.rope_scaling_factor);
  writer.add_u32("gpt-oss.rope.scaling.original_context_length", p.rope_original_context_length);
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string("tokenizer.ggml.pre", "gpt-4o");
  writer.add_string_array("tokenizer.ggml.tokens", vocab.tokens);
  writer.add_i32_array("tokenizer.ggml.token_type", vocab.token_types);
  writer.add_string_array("tokenizer.ggml.merges", vocab.merges);
  writer.add_u32("tokenizer.ggml.bos_token_id", p.bos_token_id);
  writer.add_u32("tokenizer.ggml.eos_token_id", p.eos_token_id);
  writer.add_u32("tokenizer.ggml.padding_token_id", p.padding_token_id);
}

Status write_model(const SynthOptions& options, const SynthPreset& preset, const SynthVocab& vocab,
                   const std::string& path, const SynthProgressFn& progress) {
  std::vector<TensorPlan> plans = plan_tensors(preset, options.router_skew);
  gguf::Writer writer(gguf::kDefaultAlignment);
  add_metadata(writer, preset, vocab);
  uint64_t data_bytes = 0;
  for (auto& plan : plans) {
    data_bytes = align_up(data_bytes, gguf::kDefaultAlignment);
    plan.offset = data_bytes;
    data_bytes += writer.add_tensor(plan.name, plan.type, plan.shape);
  }
  HETMOE_RETURN_IF_ERROR(writer.open_file(path));
  HETMOE_RETURN_IF_ERROR(writer.write_header());

  SynthProgress state;
  state.total_bytes = writer.total_bytes();
  state.num_tensors = static_cast<uint32_t>(plans.size());
  const uint64_t header_bytes = writer.header_bytes();
  state.bytes_written = header_bytes;
  const Error cancelled = make_error(ErrorCode::kInvalidArgument, path + ": cancelled");
  if (progress && !progress(state)) return cancelled;

  // The data as a list of chunks; chunk j + 1 is generated (on the TBB workers) while chunk j is written.
  struct Chunk {
    uint32_t tensor_idx;
    uint64_t block_begin, block_end;
  };
  std::vector<Chunk> chunks;
  for (uint32_t t = 0; t < plans.size(); ++t) {
    const uint64_t blocks_per_chunk = kChunkBytes / plans[t].block_bytes;
    for (uint64_t begin = 0; begin < plans[t].num_blocks; begin += blocks_per_chunk)
      chunks.push_back(Chunk{t, begin, std::min(plans[t].num_blocks, begin + blocks_per_chunk)});
  }
  auto generate = [&](const Chunk& c, uint8_t* out) {
    const TensorPlan& plan = plans[c.tensor_idx];
    const uint64_t key = tensor_key(options.seed, c.tensor_idx);
    constexpr uint64_t kGrainBlocks = 4096;
    if (c.block_end - c.block_begin <= kGrainBlocks) {
      fill_blocks(plan, key, c.block_begin, c.block_end, out);
      return;
    }
    tbb::parallel_for(tbb::blocked_range<uint64_t>(c.block_begin, c.block_end, kGrainBlocks),
                      [&](const tbb::blocked_range<uint64_t>& r) {
                        uint8_t* dst = out + (r.begin() - c.block_begin) * plan.block_bytes;
                        fill_blocks(plan, key, r.begin(), r.end(), dst);
                      });
  };

  std::vector<uint8_t> buffers[2] = {std::vector<uint8_t>(kChunkBytes), std::vector<uint8_t>(kChunkBytes)};
  if (!chunks.empty()) generate(chunks[0], buffers[0].data());
  tbb::task_group next_chunk;
  for (size_t j = 0; j < chunks.size(); ++j) {
    if (j + 1 < chunks.size()) next_chunk.run([&, j] { generate(chunks[j + 1], buffers[(j + 1) % 2].data()); });
    const Chunk& c = chunks[j];
    const TensorPlan& plan = plans[c.tensor_idx];
    const uint64_t num_bytes = (c.block_end - c.block_begin) * plan.block_bytes;
    Status written = writer.write_tensor_data({buffers[j % 2].data(), num_bytes});
    next_chunk.wait();
    if (!written) return written;
    state.bytes_written = header_bytes + plan.offset + c.block_end * plan.block_bytes;
    if (c.block_end == plan.num_blocks) state.num_tensors_done = c.tensor_idx + 1;
    if (progress && !progress(state)) return cancelled;
  }
  return writer.finish();
}

}  // namespace

std::span<const SynthPreset> synth_presets() { return kPresets; }

Expected<SynthPreset> synth_find_preset(std::string_view name) {
  std::string known;
  for (const auto& p : kPresets) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + std::string(p.name);
  }
  return make_error(ErrorCode::kInvalidArgument, "unknown preset '" + std::string(name) + "' (known: " + known + ")");
}

Expected<SynthVocab> synth_build_vocab(const SynthPreset& preset, const std::string& vocab_path) {
  std::vector<std::string> regular;
  if (vocab_path.empty()) {
    HETMOE_ASSIGN_OR_RETURN(regular, placeholder_tokens(preset.num_regular_tokens));
  } else {
    HETMOE_ASSIGN_OR_RETURN(regular, tiktoken::load_ranks(vocab_path));
    if (regular.size() < preset.num_regular_tokens)
      return make_error(ErrorCode::kInvalidArgument,
                        vocab_path + ": " + std::to_string(regular.size()) + " tokens, preset '" +
                            std::string(preset.name) + "' needs " + std::to_string(preset.num_regular_tokens));
    regular.resize(preset.num_regular_tokens);
  }
  auto merges = tiktoken::derive_merges(regular);
  if (!merges) {
    const std::string source = vocab_path.empty() ? std::string("placeholder vocabulary") : vocab_path;
    return make_error(merges.error().code, source + ": " + merges.error().message);
  }

  SynthVocab vocab;
  vocab.tokens.reserve(preset.vocab_size);
  vocab.token_types.reserve(preset.vocab_size);
  for (const auto& t : regular) {
    vocab.tokens.push_back(tiktoken::byte_level_encode(t));
    vocab.token_types.push_back(1);
  }
  for (uint32_t id = preset.num_regular_tokens; id < preset.vocab_size; ++id) {
    auto named = std::find_if(preset.named_specials.begin(), preset.named_specials.end(),
                              [&](const SynthSpecialToken& s) { return s.id == id; });
    vocab.tokens.push_back(named != preset.named_specials.end() ? std::string(named->text)
                                                                 : "<|reserved_" + std::to_string(id) + "|>");
    vocab.token_types.push_back(3);
  }
  vocab.merges.reserve(merges->size());
  for (const auto& m : *merges) vocab.merges.push_back(tiktoken::merge_text(regular, m));
  return vocab;
}

Status synth_write(const SynthOptions& options, const std::string& out_path, const SynthProgressFn& progress) {
  SynthPreset preset;
  HETMOE_ASSIGN_OR_RETURN(preset, synth_find_preset(options.preset));
  if (!std::isfinite(options.router_skew) || options.router_skew < 0.0f)
    return make_error(ErrorCode::kInvalidArgument,
                      "router skew must be a finite number >= 0, not " + std::to_string(options.router_skew));
  SynthVocab vocab;
  HETMOE_ASSIGN_OR_RETURN(vocab, synth_build_vocab(preset, options.vocab_path));

  const std::string tmp_path = out_path + ".tmp";
  if (Status s = write_model(options, preset, vocab, tmp_path, progress); !s) {
    std::remove(tmp_path.c_str());
    return s;
  }
  if (std::rename(tmp_path.c_str(), out_path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return make_error(ErrorCode::kIo, "cannot rename " + tmp_path + " to " + out_path + ": " + std::strerror(err));
  }
  return {};
}

}  // namespace hetmoe
