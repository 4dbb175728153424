#pragma once
// Classes of gpt-oss weights and where each class is placed by default. Placement decides per class (and per
// expert) which device holds a tensor; this file names the classes and sums their bytes.

#include <array>
#include <cstdint>
#include <string_view>

#include "runtime/model/gguf.h"

namespace hetmoe::placement {

enum class TensorClass {
  kExperts,    // blk.N.ffn_{gate,up,down}_exps.{weight,bias}: the MoE experts, placed per expert
  kAttention,  // blk.N.attn_{q,k,v,output}.{weight,bias}, attn_sinks
  kRouter,     // blk.N.ffn_gate_inp.{weight,bias}
  kNorm,       // attn_norm, post_attention_norm, output_norm
  kEmbedding,  // token_embd.weight: one row is read per token
  kOutput,     // output.weight: the unembedding matrix
  kOther,      // anything else
};
inline constexpr int kNumTensorClasses = 7;

/// Device class a tensor class belongs to in a hybrid plan: experts are split CPU/GPU per expert; dense weights
/// (attention, router, norms, output) go to the GPU when one is used; the embedding table stays on the CPU.
enum class DeviceClass { kExperts, kDense, kEmbedding };
inline constexpr int kNumDeviceClasses = 3;

TensorClass classify_tensor(std::string_view name);
DeviceClass device_class(TensorClass c);
std::string_view tensor_class_name(TensorClass c);
std::string_view device_class_name(DeviceClass c);

/// Bytes (and tensor counts) of a file's tensors, by class.
struct WeightBytes {
  std::array<uint64_t, kNumTensorClasses> bytes_by_class{};
  std::array<uint64_t, kNumTensorClasses> tensors_by_class{};
  std::array<uint64_t, kNumDeviceClasses> bytes_by_device_class{};
  uint64_t total_bytes = 0;
};
WeightBytes weight_bytes(const gguf::File& file);

}  // namespace hetmoe::placement
