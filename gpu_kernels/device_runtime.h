#pragma once
// The device runtime pieces the GPU forward pass is built from: one device arena with a hard byte budget (bump
// placement by runtime/backend/device_plan.h), pinned host staging buffers with a pageable fallback, and RAII streams and
// events. Every CUDA failure becomes an Error naming the call and cudaGetErrorString. CUDA builds only.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/device_plan.h"
#include "runtime/base/expected.h"

namespace hetmoe::gpu {

/// OK for cudaSuccess; otherwise kIo "<what>: <cudaGetErrorString>" (and clears the sticky last error).
Status cuda_status(cudaError_t err, const char* what);

/// The device's free memory minus `reserve_bytes` (0 if less is free): the default --vram-budget.
/// Errors: cuda_status's (cudaSetDevice, cudaMemGetInfo).
Expected<uint64_t> default_vram_budget(int device_idx, uint64_t reserve_bytes);

/// One cudaMalloc of a plan's total_bytes; buffers live at their planned offsets. Move-only; frees on destruction.
class DeviceArena {
 public:
  /// Errors: kInvalidArgument (cudaErrorMemoryAllocation: "cannot allocate N bytes of device memory (budget …)");
  /// kIo for other CUDA errors.
  static Expected<DeviceArena> create(uint64_t bytes);
  DeviceArena(DeviceArena&& other) noexcept : base_(other.base_), bytes_(other.bytes_) { other.base_ = nullptr; }
  DeviceArena& operator=(DeviceArena&& other) noexcept;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena();

  /// Device pointer of a planned buffer (offset + bytes ≤ the arena; the plan guarantees it).
  void* at(const DeviceBuffer& buffer) const { return static_cast<uint8_t*>(base_) + buffer.offset; }
  uint64_t bytes() const { return bytes_; }

 private:
  DeviceArena(void* base, uint64_t bytes) : base_(base), bytes_(bytes) {}
  void* base_ = nullptr;
  uint64_t bytes_ = 0;
};

/// Host memory for asynchronous copies: page-locked (cudaHostAlloc) when the driver gives it, else ordinary
/// pageable memory (copies then are synchronous with respect to the host) and `pinned()` is false.
class PinnedBuffer {
 public:
  /// Never fails for want of pinned memory: falls back to pageable memory and appends a warning to `notes`.
  /// Errors: kInvalidArgument when not even pageable memory of `bytes` can be had.
  static Expected<PinnedBuffer> create(size_t bytes, const char* what, std::vector<std::string>* notes);
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  void* data() const { return data_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  bool pinned() const { return pinned_; }

 private:
  void release();
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

/// A non-blocking CUDA stream (cudaStreamNonBlocking: no implicit synchronization with the legacy default stream).
class Stream {
 public:
  static Expected<Stream> create();
  Stream(Stream&& other) noexcept : s_(other.s_) { other.s_ = nullptr; }
  Stream& operator=(Stream&&) = delete;
  Stream(const Stream&) = delete;
  ~Stream();
  cudaStream_t get() const { return s_; }

 private:
  explicit Stream(cudaStream_t s) : s_(s) {}
  cudaStream_t s_ = nullptr;
};

/// A CUDA event without timing (cudaEventDisableTiming: the cheapest hand-off between streams and the host).
class Event {
 public:
  /// with_timing: the event can be timed with cudaEventElapsedTime (traces); without, it only orders work.
  static Expected<Event> create(bool with_timing = false);
  Event(Event&& other) noexcept : e_(other.e_) { other.e_ = nullptr; }
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  ~Event();
  cudaEvent_t get() const { return e_; }

 private:
  explicit Event(cudaEvent_t e) : e_(e) {}
  cudaEvent_t e_ = nullptr;
};

}  // namespace hetmoe::gpu
