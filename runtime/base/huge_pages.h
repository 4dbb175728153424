#pragma once
// A buffer in 2 MiB-aligned memory advised for transparent huge pages, the way hetmoe holds its loaded weights and KV
// cache: probes and benchmarks that stream a working set use it, so they measure what the runtime sees (with 4 KiB
// pages the hardware prefetchers stop at every page and the TLB misses cost a share of the read rate).

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace hetmoe {

class HugePageBuffer {
 public:
  static constexpr uint64_t kHugePageBytes = uint64_t{2} << 20;

  HugePageBuffer() = default;
  /// num_bytes (rounded up to whole huge pages in the allocation; size() is num_bytes), uninitialized. data() is
  /// nullptr when the allocation failed. The advice is only advice: 4 KiB pages where THP is off.
  explicit HugePageBuffer(uint64_t num_bytes) {
    const uint64_t alloc_bytes = (num_bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    if (alloc_bytes == 0) return;
    p_.reset(static_cast<uint8_t*>(std::aligned_alloc(kHugePageBytes, alloc_bytes)));
    if (p_ == nullptr) return;
    ::madvise(p_.get(), alloc_bytes, MADV_HUGEPAGE);
    num_bytes_ = num_bytes;
  }

  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  uint64_t size() const { return num_bytes_; }
  bool empty() const { return num_bytes_ == 0; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> p_;
  uint64_t num_bytes_ = 0;
};

}  // namespace hetmoe
