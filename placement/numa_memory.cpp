#include "placement/numa_memory.h"

#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace hetmoe::placement {
namespace {

bool kernel_has_numa() { return numa_available() >= 0; }

/// kInvalidArgument unless `numa_node` is a node the kernel knows (node 0 only, without NUMA support).
Status check_node(int numa_node) {
  const int max_node = kernel_has_numa() ? numa_max_node() : 0;
  const bool exists =
      numa_node >= 0 && numa_node <= max_node &&
      (!kernel_has_numa() || numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(numa_node)));
  if (!exists)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("NUMA node {} does not exist (this machine has nodes 0..{})", numa_node, max_node));
  return {};
}

}  // namespace

int numa_num_nodes() { return kernel_has_numa() ? numa_max_node() + 1 : 1; }

Expected<NumaBindResult> bind_to_numa_node(void* addr, uint64_t num_bytes, int numa_node, NumaPolicy policy) {
  HETMOE_RETURN_IF_ERROR(check_node(numa_node));
  if (addr == nullptr && num_bytes > 0)
    return make_error(ErrorCode::kInvalidArgument, "bind_to_numa_node: null address with a non-empty range");
  NumaBindResult result;
  if (!kernel_has_numa()) {
    result.reason = "the kernel has no NUMA support (ENOSYS)";
    return result;
  }
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(addr) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(addr) + num_bytes) / page * page;
  if (end <= begin) {
    result.reason = "the range holds no whole page";
    return result;
  }
  // nodemask: one bit per node; maxnode counts bits (the kernel reads maxnode - 1 of them).
  const auto num_bits = static_cast<unsigned long>(numa_max_node() + 2);
  std::vector<unsigned long> mask((num_bits + 8 * sizeof(unsigned long) - 1) / (8 * sizeof(unsigned long)), 0);
  mask[static_cast<size_t>(numa_node) / (8 * sizeof(unsigned long))] |=
      1ul << (static_cast<unsigned>(numa_node) % (8 * sizeof(unsigned long)));
  const int mode = policy == NumaPolicy::kBind ? MPOL_BIND : MPOL_PREFERRED;
  if (::mbind(reinterpret_cast<void*>(begin), end - begin, mode, mask.data(), num_bits, MPOL_MF_MOVE) != 0) {
    const int err = errno;
    // The range and node were checked above, so EINVAL means the kernel will not apply a policy to this mapping.
    if (err == ENOSYS || err == EPERM || err == EIO || err == EINVAL) {
      result.reason = fmt::format("mbind refused: {} ({})", std::strerror(err),
                                  err == ENOSYS  ? "ENOSYS"
                                  : err == EPERM ? "EPERM"
                                  : err == EIO   ? "EIO"
                                                 : "EINVAL");
      return result;
    }
    return make_error(ErrorCode::kIo, fmt::format("mbind of {} bytes at {} to NUMA node {}: {}", end - begin,
                                                  reinterpret_cast<void*>(begin), numa_node, std::strerror(err)));
  }
  result.applied = true;
  result.num_bytes = end - begin;
  return result;
}

int numa_node_of_page(const void* addr) {
  if (!kernel_has_numa() || addr == nullptr) return -1;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  void* pages[1] = {reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(addr) / page * page)};
  int status[1] = {-1};
  if (::move_pages(0, 1, pages, nullptr, status, 0) != 0) return -1;
  return status[0] >= 0 ? status[0] : -1;
}

void NumaBufferDeleter::operator()(uint8_t* p) const {
  if (p) numa_free(p, num_bytes);
}

Expected<NumaBuffer> copy_to_numa_node(const void* src, uint64_t num_bytes, int numa_node) {
  HETMOE_RETURN_IF_ERROR(check_node(numa_node));
  if (num_bytes == 0) return make_error(ErrorCode::kInvalidArgument, "copy_to_numa_node: 0 bytes");
  void* p = numa_alloc_onnode(num_bytes, numa_node);
  if (!p)
    return make_error(ErrorCode::kIo, fmt::format("numa_alloc_onnode({} bytes, node {}) failed", num_bytes, numa_node));
  std::memcpy(p, src, num_bytes);
  return NumaBuffer(static_cast<uint8_t*>(p), NumaBufferDeleter{num_bytes});
}

Status run_on_numa_node(const std::vector<int>& pus, int numa_node, const std::function<void()>& body) {
  HETMOE_RETURN_IF_ERROR(check_node(numa_node));
  if (pus.empty()) return make_error(ErrorCode::kInvalidArgument, "run_on_numa_node: no PU given");
  cpu_set_t old_cpus, cpus;
  CPU_ZERO(&cpus);
  for (int pu : pus) {
    if (pu < 0 || pu >= CPU_SETSIZE)
      return make_error(ErrorCode::kInvalidArgument, fmt::format("run_on_numa_node: PU {} out of range", pu));
    CPU_SET(pu, &cpus);
  }
  if (::sched_getaffinity(0, sizeof old_cpus, &old_cpus) != 0 || ::sched_setaffinity(0, sizeof cpus, &cpus) != 0)
    return make_error(ErrorCode::kIo, fmt::format("sched_setaffinity to the PUs of NUMA node {}: {}", numa_node,
                                                  std::strerror(errno)));
  // The previous policy: get_mempolicy fills mode and mask; a failure leaves the policy alone.
  const bool numa = kernel_has_numa();
  int old_mode = MPOL_DEFAULT;
  const auto num_bits = static_cast<unsigned long>(numa ? numa_max_node() + 2 : 2);
  const size_t words = (num_bits + 8 * sizeof(unsigned long) - 1) / (8 * sizeof(unsigned long));
  std::vector<unsigned long> old_mask(words, 0), mask(words, 0);
  bool policy_set = false;
  if (numa && ::get_mempolicy(&old_mode, old_mask.data(), num_bits, nullptr, 0) == 0) {
    mask[static_cast<size_t>(numa_node) / (8 * sizeof(unsigned long))] |=
        1ul << (static_cast<unsigned>(numa_node) % (8 * sizeof(unsigned long)));
    policy_set = ::set_mempolicy(MPOL_BIND, mask.data(), num_bits) == 0;
  }
  body();
  if (policy_set) ::set_mempolicy(old_mode, old_mode == MPOL_DEFAULT ? nullptr : old_mask.data(), num_bits);
  ::sched_setaffinity(0, sizeof old_cpus, &old_cpus);
  return {};
}

}  // namespace hetmoe::placement
