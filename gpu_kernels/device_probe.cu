#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_kernels/device_probe.h"

namespace hetmoe::gpu {
namespace {

constexpr size_t kReadBytes = size_t{256} << 20;  // device read buffer
constexpr size_t kCopyBytes = size_t{64} << 20;   // bandwidth copies
constexpr size_t kSmallBytes = size_t{4} << 10;   // latency copies
constexpr int kBandwidthReps = 5;
constexpr int kLatencyReps = 64;

/// Reads n 16-byte words with a grid-stride loop; one XOR per block goes to out[blockIdx.x] so nothing is elided.
__global__ void read_words(const uint4* in, size_t n, uint32_t* out) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = in[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  __shared__ uint32_t block_acc;
  if (threadIdx.x == 0) block_acc = 0;
  __syncthreads();
  atomicXor(&block_acc, acc);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = block_acc;
}

Error cuda_error(const char* call, cudaError_t e) {
  return make_error(ErrorCode::kIo, std::string(call) + ": " + cudaGetErrorString(e));
}

/// Owns what a probe allocates; frees it on every path.
struct Resources {
  void* host = nullptr;        // pinned, kCopyBytes
  void* dev_copy = nullptr;    // kCopyBytes
  void* dev_read = nullptr;    // kReadBytes
  uint32_t* dev_out = nullptr; // (num_blocks)
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~Resources() {
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
    if (stream) cudaStreamDestroy(stream);
    if (dev_out) cudaFree(dev_out);
    if (dev_read) cudaFree(dev_read);
    if (dev_copy) cudaFree(dev_copy);
    if (host) cudaFreeHost(host);
  }
};

#define HETMOE_CUDA_TRY(call)                              \
  do {                                                     \
    if (const cudaError_t e_ = (call); e_ != cudaSuccess) { \
      (void)cudaGetLastError();                            \
      return cuda_error(#call, e_);                        \
    }                                                      \
  } while (0)

/// Seconds between r.start and r.stop after the work recorded between them.
Expected<double> elapsed_s(Resources& r) {
  HETMOE_CUDA_TRY(cudaEventSynchronize(r.stop));
  float ms = 0;
  HETMOE_CUDA_TRY(cudaEventElapsedTime(&ms, r.start, r.stop));
  return static_cast<double>(ms) * 1e-3;
}

/// Best bandwidth of kBandwidthReps copies of kCopyBytes in direction `kind`.
Expected<double> copy_bandwidth(Resources& r, cudaMemcpyKind kind) {
  void* dst = kind == cudaMemcpyHostToDevice ? r.dev_copy : r.host;
  const void* src = kind == cudaMemcpyHostToDevice ? r.host : r.dev_copy;
  double best = 0;
  for (int rep = -1; rep < kBandwidthReps; ++rep) {  // rep -1 warms up
    HETMOE_CUDA_TRY(cudaEventRecord(r.start, r.stream));
    HETMOE_CUDA_TRY(cudaMemcpyAsync(dst, src, kCopyBytes, kind, r.stream));
    HETMOE_CUDA_TRY(cudaEventRecord(r.stop, r.stream));
    auto s = elapsed_s(r);
    if (!s) return s.error();
    if (rep >= 0 && *s > 0) best = std::max(best, static_cast<double>(kCopyBytes) / *s);
  }
  return best;
}

/// Median time of one kSmallBytes copy in direction `kind`.
Expected<double> copy_latency(Resources& r, cudaMemcpyKind kind) {
  void* dst = kind == cudaMemcpyHostToDevice ? r.dev_copy : r.host;
  const void* src = kind == cudaMemcpyHostToDevice ? r.host : r.dev_copy;
  std::vector<double> times;
  for (int rep = -1; rep < kLatencyReps; ++rep) {
    HETMOE_CUDA_TRY(cudaEventRecord(r.start, r.stream));
    HETMOE_CUDA_TRY(cudaMemcpyAsync(dst, src, kSmallBytes, kind, r.stream));
    HETMOE_CUDA_TRY(cudaEventRecord(r.stop, r.stream));
    auto s = elapsed_s(r);
    if (!s) return s.error();
    if (rep >= 0) times.push_back(*s);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

Expected<DeviceProbe> probe_device(int device_idx) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    (void)cudaGetLastError();
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
      return make_error(ErrorCode::kInvalidArgument, std::string("no CUDA device: ") + cudaGetErrorString(e));
    return cuda_error("cudaGetDeviceCount", e);
  }
  if (device_idx < 0 || device_idx >= count)
    return make_error(ErrorCode::kInvalidArgument, "CUDA device " + std::to_string(device_idx) + " does not exist (" +
                                                       std::to_string(count) + " devices)");
  DeviceProbe probe;
  probe.device_idx = device_idx;
  cudaDeviceProp prop{};
  HETMOE_CUDA_TRY(cudaGetDeviceProperties(&prop, device_idx));
  probe.name = prop.name;
  HETMOE_CUDA_TRY(cudaSetDevice(device_idx));

  Resources r;
  const int num_blocks = std::max(1, prop.multiProcessorCount) * 8;
  HETMOE_CUDA_TRY(cudaHostAlloc(&r.host, kCopyBytes, cudaHostAllocDefault));
  HETMOE_CUDA_TRY(cudaMalloc(&r.dev_copy, kCopyBytes));
  HETMOE_CUDA_TRY(cudaMalloc(&r.dev_read, kReadBytes));
  HETMOE_CUDA_TRY(cudaMalloc(reinterpret_cast<void**>(&r.dev_out), num_blocks * sizeof(uint32_t)));
  HETMOE_CUDA_TRY(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  HETMOE_CUDA_TRY(cudaEventCreate(&r.start));
  HETMOE_CUDA_TRY(cudaEventCreate(&r.stop));
  std::fill_n(static_cast<uint8_t*>(r.host), kCopyBytes, uint8_t{0x5a});
  HETMOE_CUDA_TRY(cudaMemsetAsync(r.dev_read, 0x33, kReadBytes, r.stream));
  HETMOE_CUDA_TRY(cudaMemsetAsync(r.dev_copy, 0x11, kCopyBytes, r.stream));

  double best_read = 0;
  for (int rep = -1; rep < kBandwidthReps; ++rep) {
    HETMOE_CUDA_TRY(cudaEventRecord(r.start, r.stream));
    read_words<<<num_blocks, 256, 0, r.stream>>>(static_cast<const uint4*>(r.dev_read), kReadBytes / sizeof(uint4),
                                                 r.dev_out);
    HETMOE_CUDA_TRY(cudaGetLastError());
    HETMOE_CUDA_TRY(cudaEventRecord(r.stop, r.stream));
    auto s = elapsed_s(r);
    if (!s) return s.error();
    if (rep >= 0 && *s > 0) best_read = std::max(best_read, static_cast<double>(kReadBytes) / *s);
  }
  probe.memory_read_bytes_per_s = best_read;

  auto h2d = copy_bandwidth(r, cudaMemcpyHostToDevice);
  if (!h2d) return h2d.error();
  auto d2h = copy_bandwidth(r, cudaMemcpyDeviceToHost);
  if (!d2h) return d2h.error();
  auto h2d_lat = copy_latency(r, cudaMemcpyHostToDevice);
  if (!h2d_lat) return h2d_lat.error();
  auto d2h_lat = copy_latency(r, cudaMemcpyDeviceToHost);
  if (!d2h_lat) return d2h_lat.error();
  probe.h2d_bytes_per_s = *h2d;
  probe.d2h_bytes_per_s = *d2h;
  probe.h2d_latency_s = *h2d_lat;
  probe.d2h_latency_s = *d2h_lat;
  return probe;
}

}  // namespace hetmoe::gpu
