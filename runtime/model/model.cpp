#include "runtime/model/model.h"

#include <fmt/format.h>

#include "cpu_kernels/reference.h"

namespace hetmoe {
namespace {

constexpr std::string_view kArch = "gpt-oss";

std::string key(std::string_view suffix) { return fmt::format("{}.{}", kArch, suffix); }

std::string shape_str(const gguf::TensorInfo& t) {
  std::string s = "{";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "}";
}

std::string shape_str(std::initializer_list<uint64_t> dims) {
  std::string s = "{";
  bool first = true;
  for (uint64_t d : dims) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "}";
}

/// A required u32 key, checked against [min_value, max_value].
Expected<uint32_t> required_u32(const gguf::File& f, std::string_view k, uint32_t min_value, uint32_t max_value) {
  auto v = f.get_u32(k);
  if (!v) return v.error();
  if (*v < min_value || *v > max_value)
    return make_error(ErrorCode::kFormat,
                      fmt::format("{}: key '{}' = {} is out of range (expected {}..{})", f.path(), k, *v, min_value,
                                  max_value));
  return *v;
}

/// An optional u32 key (default when absent), range-checked when present.
Expected<uint32_t> optional_u32(const gguf::File& f, std::string_view k, uint32_t default_value, uint32_t min_value,
                                uint32_t max_value) {
  if (!f.find(k)) return default_value;
  return required_u32(f, k, min_value, max_value);
}

/// An optional f32 key, which must be finite and inside (min_value, max_value] when present.
Expected<float> optional_f32(const gguf::File& f, std::string_view k, float default_value, float min_value,
                             float max_value) {
  if (!f.find(k)) return default_value;
  auto v = f.get_f32(k);
  if (!v) return v.error();
  if (!(*v > min_value && *v <= max_value))
    return make_error(ErrorCode::kFormat, fmt::format("{}: key '{}' = {} is out of range (expected > {} and <= {})",
                                                      f.path(), k, *v, min_value, max_value));
  return *v;
}

const gguf::TensorInfo* find_tensor(const gguf::File& f, const std::string& name) { return f.find_tensor(name); }

Error missing_tensor(const gguf::File& f, const std::string& name) {
  return make_error(ErrorCode::kMissing, fmt::format("{}: tensor '{}' is missing", f.path(), name));
}

/// Binds a matrix {num_cols, num_rows} or an expert stack {num_cols, num_rows, num_experts} (num_experts > 0).
Expected<WeightView> bind_matrix(const gguf::File& f, const std::string& name, uint64_t num_cols, uint64_t num_rows,
                                 uint64_t num_experts = 0) {
  const gguf::TensorInfo* t = find_tensor(f, name);
  if (!t) return missing_tensor(f, name);
  const uint32_t want_dims = num_experts ? 3 : 2;
  const bool ok = t->n_dims == want_dims && t->ne[0] == num_cols && t->ne[1] == num_rows &&
                  (num_experts == 0 || t->ne[2] == num_experts);
  if (!ok) {
    const std::string want = num_experts ? shape_str({num_cols, num_rows, num_experts}) : shape_str({num_cols, num_rows});
    return make_error(ErrorCode::kShape,
                      fmt::format("{}: tensor '{}' has shape {}, expected {}", f.path(), name, shape_str(*t), want));
  }
  WeightView w;
  w.info = t;
  w.type = t->type;
  w.data = t->data;
  w.num_cols = num_cols;
  w.num_rows = num_rows;
  w.row_bytes = tensor_row_bytes(t->type, num_cols);
  return w;
}

/// Binds a small tensor with `num_elements` values in shape {ne0} or {ne0, ne1} and dequantizes it to f32.
Expected<std::vector<float>> bind_vector(const gguf::File& f, const std::string& name,
                                         std::initializer_list<uint64_t> dims) {
  const gguf::TensorInfo* t = find_tensor(f, name);
  if (!t) return missing_tensor(f, name);
  bool ok = t->n_dims == dims.size();
  uint64_t num_elements = 1;
  uint32_t d = 0;
  for (uint64_t want : dims) {
    ok = ok && t->ne[d++] == want;
    num_elements *= want;
  }
  if (!ok)
    return make_error(ErrorCode::kShape,
                      fmt::format("{}: tensor '{}' has shape {}, expected {}", f.path(), name, shape_str(*t),
                                  shape_str(dims)));
  std::vector<float> out(num_elements);
  ref::dequantize_row(t->type, t->data, out.data(), static_cast<int64_t>(num_elements));
  return out;
}

}  // namespace

ref::RopeYarnParams rope_params(const ModelHparams& hp) {
  ref::RopeYarnParams rope;
  rope.num_rot_dims = static_cast<int32_t>(hp.head_dim);
  rope.freq_base = hp.rope_freq_base;
  rope.freq_scale = 1.0f / hp.yarn_factor;
  rope.original_context = static_cast<int32_t>(hp.yarn_original_context);
  rope.beta_fast = hp.yarn_beta_fast;
  rope.beta_slow = hp.yarn_beta_slow;
  rope.ext_factor = hp.yarn_factor != 1.0f ? 1.0f : 0.0f;
  return rope;
}

Expected<ModelHparams> read_hparams(const gguf::File& f) {
  auto arch = f.get_string("general.architecture");
  if (!arch) return arch.error();
  if (*arch != kArch)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("{}: general.architecture is '{}', expected '{}'", f.path(), *arch, kArch));

  ModelHparams hp;
  HETMOE_ASSIGN_OR_RETURN(hp.num_layers, required_u32(f, key("block_count"), 1, 4096));
  HETMOE_ASSIGN_OR_RETURN(hp.hidden_dim, required_u32(f, key("embedding_length"), 1, 1u << 20));
  HETMOE_ASSIGN_OR_RETURN(hp.num_heads, required_u32(f, key("attention.head_count"), 1, 4096));
  HETMOE_ASSIGN_OR_RETURN(hp.num_kv_heads, optional_u32(f, key("attention.head_count_kv"), hp.num_heads, 1, 4096));
  HETMOE_ASSIGN_OR_RETURN(hp.head_dim,
                          optional_u32(f, key("attention.key_length"), hp.hidden_dim / hp.num_heads, 2, 1024));
  HETMOE_ASSIGN_OR_RETURN(const uint32_t value_length,
                          optional_u32(f, key("attention.value_length"), hp.head_dim, 1, 1024));
  HETMOE_ASSIGN_OR_RETURN(hp.num_experts, required_u32(f, key("expert_count"), 1, 4096));
  HETMOE_ASSIGN_OR_RETURN(hp.num_experts_used, required_u32(f, key("expert_used_count"), 1, hp.num_experts));
  uint32_t ffn_fallback = 0;
  if (f.find(key("feed_forward_length"))) {
    HETMOE_ASSIGN_OR_RETURN(ffn_fallback, required_u32(f, key("feed_forward_length"), 1, 1u << 20));
  }
  if (f.find(key("expert_feed_forward_length")) || ffn_fallback == 0) {
    HETMOE_ASSIGN_OR_RETURN(hp.expert_ffn_dim, required_u32(f, key("expert_feed_forward_length"), 1, 1u << 20));
  } else {
    hp.expert_ffn_dim = ffn_fallback;
  }
  HETMOE_ASSIGN_OR_RETURN(hp.context_length, optional_u32(f, key("context_length"), 131072, 1, 1u << 24));
  HETMOE_ASSIGN_OR_RETURN(hp.sliding_window, optional_u32(f, key("attention.sliding_window"), 128, 1, 1u << 24));
  HETMOE_ASSIGN_OR_RETURN(hp.sliding_window_pattern,
                          optional_u32(f, key("attention.sliding_window_pattern"), 2, 0, 4096));
  HETMOE_ASSIGN_OR_RETURN(hp.rope_freq_base, optional_f32(f, key("rope.freq_base"), 150000.0f, 1.0f, 1e12f));
  HETMOE_ASSIGN_OR_RETURN(hp.rms_eps, optional_f32(f, key("attention.layer_norm_rms_epsilon"), 1e-5f, 0.0f, 1.0f));

  std::string_view scaling = "none";
  if (f.find(key("rope.scaling.type"))) {
    HETMOE_ASSIGN_OR_RETURN(scaling, f.get_string(key("rope.scaling.type")));
  }
  if (scaling == "yarn") {
    auto factor = f.get_f32(key("rope.scaling.factor"));
    if (!factor) return factor.error();
    HETMOE_ASSIGN_OR_RETURN(hp.yarn_factor, optional_f32(f, key("rope.scaling.factor"), 1.0f, 0.0f, 1e6f));
    HETMOE_ASSIGN_OR_RETURN(hp.yarn_original_context,
                            required_u32(f, key("rope.scaling.original_context_length"), 1, 1u << 24));
    HETMOE_ASSIGN_OR_RETURN(hp.yarn_beta_fast, optional_f32(f, key("rope.scaling.yarn_beta_fast"), 32.0f, 0.0f, 1e6f));
    HETMOE_ASSIGN_OR_RETURN(hp.yarn_beta_slow, optional_f32(f, key("rope.scaling.yarn_beta_slow"), 1.0f, 0.0f, 1e6f));
  } else if (scaling != "none") {
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("{}: key '{}' = '{}' is not supported (expected 'yarn' or 'none')", f.path(),
                                  key("rope.scaling.type"), scaling));
  }

  if (hp.num_heads % hp.num_kv_heads != 0)
    return make_error(ErrorCode::kFormat,
                      fmt::format("{}: head_count {} is not a multiple of head_count_kv {}", f.path(), hp.num_heads,
                                  hp.num_kv_heads));
  if (hp.head_dim % 2 != 0 || value_length != hp.head_dim)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("{}: key_length {} and value_length {} must be equal and even", f.path(),
                                  hp.head_dim, value_length));

  const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) return missing_tensor(f, "token_embd.weight");
  if (embd->n_dims != 2 || embd->ne[0] != hp.hidden_dim || embd->ne[1] == 0 || embd->ne[1] > (1u << 24))
    return make_error(ErrorCode::kShape, fmt::format("{}: tensor 'token_embd.weight' has shape {}, expected {{{}, "
                                                     "vocab_size}}",
                                                     f.path(), shape_str(*embd), hp.hidden_dim));
  hp.vocab_size = static_cast<uint32_t>(embd->ne[1]);
  if (const gguf::KeyValue* tokens = f.find("tokenizer.ggml.tokens"); tokens && tokens->value.array_count != hp.vocab_size)
    return make_error(ErrorCode::kShape,
                      fmt::format("{}: tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows",
                                  f.path(), tokens->value.array_count, hp.vocab_size));
  return hp;
}

Expected<Model> Model::load(const std::string& path, gguf::File::LoadMode mode,
                            const gguf::File::LoadProgress& progress, uint64_t reserve_bytes) {
  auto file = gguf::File::open(path, mode, progress, reserve_bytes);
  if (!file) return file.error();
  return from_file(std::move(*file));
}

Expected<Model> Model::from_file(gguf::File file_in) {
  Model m;
  m.file = std::make_unique<gguf::File>(std::move(file_in));
  const gguf::File& f = *m.file;
  HETMOE_ASSIGN_OR_RETURN(m.hparams, read_hparams(f));
  const ModelHparams& hp = m.hparams;

  HETMOE_ASSIGN_OR_RETURN(m.token_embd, bind_matrix(f, "token_embd.weight", hp.hidden_dim, hp.vocab_size));
  HETMOE_ASSIGN_OR_RETURN(m.output_norm, bind_vector(f, "output_norm.weight", {hp.hidden_dim}));
  if (f.find_tensor("output.weight")) {
    HETMOE_ASSIGN_OR_RETURN(m.output, bind_matrix(f, "output.weight", hp.hidden_dim, hp.vocab_size));
  } else {
    m.output = m.token_embd;  // tied embeddings, as llama.cpp falls back
  }

  const uint64_t d = hp.hidden_dim, q = hp.q_dim(), kv = hp.kv_dim(), ffn = hp.expert_ffn_dim, ne = hp.num_experts;
  m.layers.resize(hp.num_layers);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    LayerWeights& w = m.layers[l];
    const auto n = [l](std::string_view suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    HETMOE_ASSIGN_OR_RETURN(w.attn_norm, bind_vector(f, n("attn_norm.weight"), {d}));
    HETMOE_ASSIGN_OR_RETURN(w.wq, bind_matrix(f, n("attn_q.weight"), d, q));
    HETMOE_ASSIGN_OR_RETURN(w.bq, bind_vector(f, n("attn_q.bias"), {q}));
    HETMOE_ASSIGN_OR_RETURN(w.wk, bind_matrix(f, n("attn_k.weight"), d, kv));
    HETMOE_ASSIGN_OR_RETURN(w.bk, bind_vector(f, n("attn_k.bias"), {kv}));
    HETMOE_ASSIGN_OR_RETURN(w.wv, bind_matrix(f, n("attn_v.weight"), d, kv));
    HETMOE_ASSIGN_OR_RETURN(w.bv, bind_vector(f, n("attn_v.bias"), {kv}));
    HETMOE_ASSIGN_OR_RETURN(w.wo, bind_matrix(f, n("attn_output.weight"), q, d));
    HETMOE_ASSIGN_OR_RETURN(w.bo, bind_vector(f, n("attn_output.bias"), {d}));
    HETMOE_ASSIGN_OR_RETURN(w.sinks, bind_vector(f, n("attn_sinks.weight"), {hp.num_heads}));
    HETMOE_ASSIGN_OR_RETURN(w.post_attn_norm, bind_vector(f, n("post_attention_norm.weight"), {d}));
    HETMOE_ASSIGN_OR_RETURN(w.router, bind_matrix(f, n("ffn_gate_inp.weight"), d, ne));
    HETMOE_ASSIGN_OR_RETURN(w.router_bias, bind_vector(f, n("ffn_gate_inp.bias"), {ne}));
    HETMOE_ASSIGN_OR_RETURN(w.gate_exps, bind_matrix(f, n("ffn_gate_exps.weight"), d, ffn, ne));
    HETMOE_ASSIGN_OR_RETURN(w.gate_bias, bind_vector(f, n("ffn_gate_exps.bias"), {ffn, ne}));
    HETMOE_ASSIGN_OR_RETURN(w.up_exps, bind_matrix(f, n("ffn_up_exps.weight"), d, ffn, ne));
    HETMOE_ASSIGN_OR_RETURN(w.up_bias, bind_vector(f, n("ffn_up_exps.bias"), {ffn, ne}));
    HETMOE_ASSIGN_OR_RETURN(w.down_exps, bind_matrix(f, n("ffn_down_exps.weight"), ffn, d, ne));
    HETMOE_ASSIGN_OR_RETURN(w.down_bias, bind_vector(f, n("ffn_down_exps.bias"), {d, ne}));
  }
  return m;
}

}  // namespace hetmoe
