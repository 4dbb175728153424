#pragma once
// NUMA memory placement of weights (libnuma and the mbind/move_pages system calls): a byte range of the memory-
// mapped or in-memory model bound to one node, or copied into memory allocated on a node, so that the workers of
// that node (runtime/exec/worker_pool.h) read local memory only.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/expected.h"

namespace hetmoe::placement {

/// How strictly bind_to_numa_node places pages.
enum class NumaPolicy {
  kBind,       // MPOL_BIND: pages only on the node (allocation fails there rather than spilling)
  kPreferred,  // MPOL_PREFERRED: on the node while it has free memory, elsewhere after
};

struct NumaBindResult {
  bool applied = false;       // false: nothing was changed; `reason` says why (not an error)
  std::string reason;         // why not applied, e.g. "the kernel has no NUMA support (ENOSYS)"
  uint64_t num_bytes = 0;     // bytes covered: the whole pages inside the range
};

/// Number of NUMA nodes the kernel reports (numa_max_node() + 1), 1 where the kernel has no NUMA support.
int numa_num_nodes();

/// Sets the memory policy of the whole pages inside [addr, addr + num_bytes) to `policy` on `numa_node` (OS index)
/// and moves pages already present there (MPOL_MF_MOVE: pages only this process maps). The partial pages at either
/// end keep their policy, so neighbouring tensors bound to other nodes are not affected.
/// Not applied (no error) where the kernel has no NUMA support (ENOSYS), refuses the move (EPERM, EIO: pages
/// shared with another process or pinned) or the policy for this kind of mapping (EINVAL), or the range holds no
/// whole page.
/// Errors: kInvalidArgument for a node that does not exist (the message names it and the nodes there are) or a
/// null address with num_bytes > 0; kIo for other mbind failures (errno text).
Expected<NumaBindResult> bind_to_numa_node(void* addr, uint64_t num_bytes, int numa_node,
                                           NumaPolicy policy = NumaPolicy::kBind);

/// The node holding the page at `addr` (touching nothing: move_pages with no target), or -1 when the page is not
/// present or the kernel does not say.
int numa_node_of_page(const void* addr);

/// Memory from numa_alloc_onnode, freed with numa_free.
struct NumaBufferDeleter {
  uint64_t num_bytes = 0;
  void operator()(uint8_t* p) const;
};
using NumaBuffer = std::unique_ptr<uint8_t[], NumaBufferDeleter>;

/// A copy of src[num_bytes] in memory allocated on `numa_node` (first touched by the copy, so its pages are there).
/// Errors: kInvalidArgument for a node that does not exist or num_bytes 0; kIo when the allocation fails.
Expected<NumaBuffer> copy_to_numa_node(const void* src, uint64_t num_bytes, int numa_node);

/// Runs body() on the calling thread restricted to `pus` (OS indexes) with its memory policy bound to `numa_node`
/// (MPOL_BIND; skipped where the kernel has no NUMA support), then restores the thread's previous CPU affinity and
/// memory policy. Threads body() starts inherit both, so a measurement's threads run and allocate on the node.
/// Errors: kInvalidArgument for an empty PU list or a node that does not exist; kIo when the affinity cannot be
/// set (the message carries errno text).
Status run_on_numa_node(const std::vector<int>& pus, int numa_node, const std::function<void()>& body);

}  // namespace hetmoe::placement
