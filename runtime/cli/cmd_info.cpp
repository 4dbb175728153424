// hetmoe info -m MODEL [-c N]: metadata, tensor table, weight bytes per device class, KV cache bytes per token and
// at the context for each KV cache type.
#include <fmt/format.h>

#include <algorithm>

#include "gpu_kernels/cuda_device.h"
#include "placement/tensor_class.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/model/gguf.h"
#include "runtime/exec/kv_cache.h"
#include "runtime/model/model.h"

namespace hetmoe::cli {
namespace {

std::string value_to_string(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::kUint8: case ValueType::kUint16: case ValueType::kUint32: case ValueType::kUint64:
      return std::to_string(v.u64);
    case ValueType::kInt8: case ValueType::kInt16: case ValueType::kInt32: case ValueType::kInt64:
      return std::to_string(v.i64);
    case ValueType::kFloat32: case ValueType::kFloat64:
      return fmt::format("{}", v.f64);
    case ValueType::kBool:
      return v.u64 ? "true" : "false";
    case ValueType::kString: {
      std::string s(v.str.substr(0, 80));
      return fmt::format("\"{}\"{}", s, v.str.size() > 80 ? "..." : "");
    }
    case ValueType::kArray: {
      std::string s = fmt::format("[{} x {}]", gguf::value_type_name(static_cast<uint32_t>(v.array_type)),
                                  v.array_count);
      if (v.array_type == ValueType::kString && !v.array_strings.empty()) {
        s += " {";
        for (size_t i = 0; i < std::min<size_t>(v.array_strings.size(), 4); ++i)
          s += fmt::format("{}\"{}\"", i ? ", " : "", v.array_strings[i].substr(0, 24));
        s += v.array_strings.size() > 4 ? ", ...}" : "}";
      }
      return s;
    }
  }
  return "?";
}

int run_info(const std::string& model_path, bool show_tensors, uint32_t context_length) {
  if (auto s = check_input_file("-m", model_path); !s) return report_error("info", s.error());
  auto file = gguf::File::open(model_path);
  if (!file) return report_error("info", file.error());
  const gguf::File& f = *file;
  fmt::print("file: {}\nGGUF version {}, {} tensors, {} metadata keys, alignment {}, {}\n\n", f.path(), f.version(),
             f.tensors().size(), f.metadata().size(), f.alignment(), format_bytes(f.file_size()));

  fmt::print("metadata:\n");
  for (const auto& kv : f.metadata()) fmt::print("  {:<48} {}\n", kv.key, value_to_string(kv.value));

  if (show_tensors) {
    fmt::print("\ntensors:\n  {:<36} {:<6} {:<24} {:>14}\n", "name", "type", "shape", "bytes");
    for (const auto& t : f.tensors()) {
      std::string shape = "{";
      for (uint32_t d = 0; d < t.n_dims; ++d) shape += (d ? ", " : "") + std::to_string(t.ne[d]);
      shape += "}";
      fmt::print("  {:<36} {:<6} {:<24} {:>14}\n", t.name, tensor_type_name(static_cast<uint32_t>(t.type)), shape,
                 t.num_bytes);
    }
  }

  const placement::WeightBytes wb = placement::weight_bytes(f);
  fmt::print("\nweight bytes by class:\n");
  for (int c = 0; c < placement::kNumTensorClasses; ++c) {
    if (wb.tensors_by_class[c] == 0) continue;
    fmt::print("  {:<12} {:>5} tensors {:>12}\n", placement::tensor_class_name(static_cast<placement::TensorClass>(c)),
               wb.tensors_by_class[c], format_bytes(wb.bytes_by_class[c]));
  }
  fmt::print("weight bytes by device class:\n");
  for (int c = 0; c < placement::kNumDeviceClasses; ++c)
    fmt::print("  {:<58} {:>12}\n", placement::device_class_name(static_cast<placement::DeviceClass>(c)),
               format_bytes(wb.bytes_by_device_class[c]));
  fmt::print("  {:<58} {:>12}\n", "total", format_bytes(wb.total_bytes));

  // Model view: only for gpt-oss files (a vocabulary-only GGUF has no hparams).
  auto hp = read_hparams(f);
  if (!hp) {
    fmt::print("\nnot a loadable gpt-oss model: {}\n", hp.error().to_string());
  } else {
    uint32_t num_full = 0, num_sliding = 0;
    for (uint32_t l = 0; l < hp->num_layers; ++l) (hp->is_sliding(l) ? num_sliding : num_full)++;
    fmt::print("\nmodel: {} layers ({} full attention, {} sliding window {}), hidden {}, {} heads x {} (KV {}), "
               "{} experts (top {}), expert FFN {}, vocab {}, trained context {}\n",
               hp->num_layers, num_full, num_sliding, hp->sliding_window, hp->hidden_dim, hp->num_heads, hp->head_dim,
               hp->num_kv_heads, hp->num_experts, hp->num_experts_used, hp->expert_ffn_dim, hp->vocab_size,
               hp->context_length);
    // Per KV cache type (K and V of one type; mixed -ctk/-ctv is the mean of two rows): bytes of one position in
    // every layer, and the whole cache at the chosen context and at the trained one (sliding layers keep at most
    // their window).
    const uint32_t ctx = std::min(context_length, hp->context_length);
    fmt::print("KV cache ({} full-attention layers grow with the context, {} sliding layers hold at most {} positions):\n",
               num_full, num_sliding, hp->sliding_window);
    fmt::print("  {:<6} {:>14} {:>16} {:>18}\n", "type", "bytes/token", fmt::format("at ctx {}", ctx),
               fmt::format("at ctx {}", hp->context_length));
    for (KvCacheType type : {KvCacheType::kF16, KvCacheType::kQ8_0, KvCacheType::kQ4_0, KvCacheType::kF32}) {
      if (!check_kv_cache_type(*hp, type, "")) continue;  // head_dim not a multiple of 32
      fmt::print("  {:<6} {:>14} {:>16} {:>18}\n", kv_cache_type_name(type),
                 kv_bytes_per_position(*hp, type) * hp->num_layers,
                 format_bytes(kv_cache_bytes(*hp, ctx, type, type)),
                 format_bytes(kv_cache_bytes(*hp, hp->context_length, type, type)));
    }
  }

  auto gpus = gpu::list_devices();
  if (!gpus) {
    fmt::print("GPU: none usable ({})\n", gpus.error().to_string());
  } else if (gpus->empty()) {
    fmt::print("GPU: no CUDA device found\n");
  } else {
    for (const auto& d : *gpus) {
      auto free_bytes = gpu::device_free_bytes(d.device_idx);
      fmt::print("GPU {}: {} (sm_{}{}), {} total, {} free\n", d.device_idx, d.name, d.compute_major, d.compute_minor,
                 format_bytes(d.total_bytes), free_bytes ? format_bytes(*free_bytes) : free_bytes.error().message);
    }
  }
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("info", "Print a GGUF file's metadata, tensor table, weight bytes per device class "
                                         "and KV cache bytes per token and at a context, per KV type");
  auto model_path = std::make_shared<std::string>();
  auto no_tensors = std::make_shared<bool>(false);
  cmd->add_option("-m,--model", *model_path, "GGUF file")->required();
  cmd->add_flag("--no-tensors", *no_tensors, "Omit the tensor table");
  auto context_length = std::make_shared<uint32_t>(8192);
  cmd->add_option("-c,--ctx,--ctx-size", *context_length, "Context for the KV cache sizes (capped at the trained one)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd->callback([model_path, no_tensors, context_length, &exit_code] {
    exit_code = run_info(*model_path, !*no_tensors, *context_length);
  });
}

}  // namespace hetmoe::cli
