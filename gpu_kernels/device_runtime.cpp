#include "gpu_kernels/device_runtime.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace hetmoe::gpu {

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return {};
  (void)cudaGetLastError();
  return make_error(ErrorCode::kIo, fmt::format("{}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

Expected<uint64_t> default_vram_budget(int device_idx, uint64_t reserve_bytes) {
  HETMOE_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device_idx), "cudaSetDevice"));
  size_t free_bytes = 0, total_bytes = 0;
  HETMOE_RETURN_IF_ERROR(cuda_status(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  return free_bytes > reserve_bytes ? static_cast<uint64_t>(free_bytes) - reserve_bytes : 0;
}

Expected<DeviceArena> DeviceArena::create(uint64_t bytes) {
  void* base = nullptr;
  const cudaError_t err = cudaMalloc(&base, std::max<uint64_t>(bytes, 1));
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot allocate {} of device memory for the planned arena (another process may "
                                  "hold it); use a smaller --vram-budget",
                                  format_byte_size(bytes)));
  }
  HETMOE_RETURN_IF_ERROR(cuda_status(err, "cudaMalloc (device arena)"));
  return DeviceArena(base, bytes);
}

DeviceArena& DeviceArena::operator=(DeviceArena&& other) noexcept {
  if (this != &other) {
    if (base_) cudaFree(base_);
    base_ = other.base_;
    bytes_ = other.bytes_;
    other.base_ = nullptr;
  }
  return *this;
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);
}

Expected<PinnedBuffer> PinnedBuffer::create(size_t bytes, const char* what, std::vector<std::string>* notes) {
  PinnedBuffer b;
  b.bytes_ = bytes;
  const cudaError_t err = cudaHostAlloc(&b.data_, std::max<size_t>(bytes, 1), cudaHostAllocDefault);
  if (err == cudaSuccess) {
    b.pinned_ = true;
    return b;
  }
  (void)cudaGetLastError();
  b.data_ = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
  if (!b.data_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot allocate {} of host memory for the {} staging buffer", format_byte_size(bytes),
                                  what));
  if (notes)
    notes->push_back(fmt::format("warning: pinned host memory for the {} staging buffer is not available ({}); "
                                 "using pageable memory: copies will not overlap with compute",
                                 what, cudaGetErrorString(err)));
  return b;
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_), pinned_(other.pinned_) {
  other.data_ = nullptr;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    bytes_ = other.bytes_;
    pinned_ = other.pinned_;
    other.data_ = nullptr;
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() { release(); }

void PinnedBuffer::release() {
  if (!data_) return;
  if (pinned_) cudaFreeHost(data_);
  else std::free(data_);
  data_ = nullptr;
}

Expected<Stream> Stream::create() {
  cudaStream_t s = nullptr;
  HETMOE_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"));
  return Stream(s);
}

Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}

Expected<Event> Event::create(bool with_timing) {
  cudaEvent_t e = nullptr;
  HETMOE_RETURN_IF_ERROR(cuda_status(
      cudaEventCreateWithFlags(&e, with_timing ? cudaEventDefault : cudaEventDisableTiming), "cudaEventCreate"));
  return Event(e);
}

Event::~Event() {
  if (e_) cudaEventDestroy(e_);
}

}  // namespace hetmoe::gpu
