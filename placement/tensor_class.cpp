#include "placement/tensor_class.h"

namespace hetmoe::placement {

TensorClass classify_tensor(std::string_view name) {
  const auto has = [name](std::string_view part) { return name.find(part) != std::string_view::npos; };
  if (name == "token_embd.weight") return TensorClass::kEmbedding;
  if (name == "output.weight") return TensorClass::kOutput;
  if (has("_exps.")) return TensorClass::kExperts;
  if (has("ffn_gate_inp.")) return TensorClass::kRouter;
  if (has("_norm.")) return TensorClass::kNorm;
  if (has(".attn_")) return TensorClass::kAttention;
  return TensorClass::kOther;
}

DeviceClass device_class(TensorClass c) {
  switch (c) {
    case TensorClass::kExperts: return DeviceClass::kExperts;
    case TensorClass::kEmbedding: return DeviceClass::kEmbedding;
    default: return DeviceClass::kDense;
  }
}

std::string_view tensor_class_name(TensorClass c) {
  switch (c) {
    case TensorClass::kExperts: return "experts";
    case TensorClass::kAttention: return "attention";
    case TensorClass::kRouter: return "router";
    case TensorClass::kNorm: return "norm";
    case TensorClass::kEmbedding: return "embedding";
    case TensorClass::kOutput: return "output";
    case TensorClass::kOther: return "other";
  }
  return "other";
}

std::string_view device_class_name(DeviceClass c) {
  switch (c) {
    case DeviceClass::kExperts: return "experts (CPU or GPU, per expert)";
    case DeviceClass::kDense: return "dense: attention, router, norms, output (GPU when used)";
    case DeviceClass::kEmbedding: return "embedding rows (CPU)";
  }
  return "other";
}

WeightBytes weight_bytes(const gguf::File& file) {
  WeightBytes w;
  for (const auto& t : file.tensors()) {
    const TensorClass c = classify_tensor(t.name);
    w.bytes_by_class[static_cast<int>(c)] += t.num_bytes;
    w.tensors_by_class[static_cast<int>(c)] += 1;
    w.bytes_by_device_class[static_cast<int>(device_class(c))] += t.num_bytes;
    w.total_bytes += t.num_bytes;
  }
  return w;
}

}  // namespace hetmoe::placement
