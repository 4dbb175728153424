#pragma once
// KV-cache rows of every device cache type (gpu_kernels/ops.h KvType) written and read on the host with the CPU
// cache's scalar functions (cpu::quantize_kv_* / dequantize_kv_*, ref::f32_to_f16 / f16_to_f32): the reference the
// CUDA KV store and attention kernels are tested against (tests/test_cuda_kernels.cpp, and on the host
// tests/test_kv_blocks_device_code.cu). Tests only; C++17 (nvcc builds one of its users).

#include <cstdint>
#include <cstring>

#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"
#include "gpu_kernels/ops.h"

namespace hetmoe::test {

inline const char* kv_type_name(gpu::KvType type) {
  return type == gpu::KvType::kF16 ? "f16" : type == gpu::KvType::kQ8_0 ? "q8_0" : "q4_0";
}

/// x[head_dim] → one row of `type` (kv_type_row_bytes bytes): ref::f32_to_f16 per value, or cpu::quantize_kv_q8_0 /
/// quantize_kv_q4_0 (the CPU KV cache's store).
inline void host_kv_row_store(gpu::KvType type, const float* x, int64_t head_dim, uint8_t* row) {
  switch (type) {
    case gpu::KvType::kF16:
      for (int64_t d = 0; d < head_dim; ++d) {
        const uint16_t h = ref::f32_to_f16(x[d]);
        std::memcpy(row + 2 * d, &h, 2);
      }
      return;
    case gpu::KvType::kQ8_0:
      cpu::quantize_kv_q8_0(x, row, head_dim);
      return;
    case gpu::KvType::kQ4_0:
      cpu::quantize_kv_q4_0(x, row, head_dim);
      return;
  }
}

/// One row of `type` → out[head_dim] f32: ref::f16_to_f32, or cpu::dequantize_kv_q8_0 / dequantize_kv_q4_0.
inline void host_kv_row_load(gpu::KvType type, const uint8_t* row, int64_t head_dim, float* out) {
  switch (type) {
    case gpu::KvType::kF16:
      for (int64_t d = 0; d < head_dim; ++d) {
        uint16_t h;
        std::memcpy(&h, row + 2 * d, 2);
        out[d] = ref::f16_to_f32(h);
      }
      return;
    case gpu::KvType::kQ8_0:
      cpu::dequantize_kv_q8_0(row, out, head_dim);
      return;
    case gpu::KvType::kQ4_0:
      cpu::dequantize_kv_q4_0(row, out, head_dim);
      return;
  }
}

}  // namespace hetmoe::test
