#pragma once
// How much memory this process can still use: MemAvailable (the whole machine) and the limit of the memory cgroup
// the process runs in (cgroup v2 memory.max / memory.high, v1 memory.limit_in_bytes), with the usage already charged
// to it. A laptop's desktop and browser show up in MemAvailable; a container, a systemd slice or
// scripts/laptop16.sh show up as a cgroup limit that MemAvailable does not see. Going over a cgroup limit gets the
// process killed (no swap) or reclaimed to a crawl, so loading decisions use the smaller of the two.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hetmoe::profiler {

/// The tightest memory cgroup among the process's cgroup and its ancestors. Bytes.
struct CgroupMemory {
  int version = 0;                  // 1 or 2
  std::string dir;                  // the limiting cgroup's directory (under the cgroup file-system root)
  uint64_t limit_bytes = 0;         // v2 min(memory.max, memory.high); v1 memory.limit_in_bytes
  uint64_t usage_bytes = 0;         // v2 memory.current; v1 memory.usage_in_bytes (page cache included)
  uint64_t reclaimable_bytes = 0;   // inactive file pages charged to it (memory.stat inactive_file / total_...)

  /// limit − (usage − reclaimable), 0 when over: what can still be charged without forcing out active pages.
  uint64_t room_bytes() const;
};

/// Reads the cgroup limits that apply to a process whose /proc/PID/cgroup reads `proc_cgroup_text`, with the cgroup
/// file systems mounted under `cgroup_root` (normally "/sys/fs/cgroup": v2 unified there when it has
/// cgroup.controllers listing "memory", else v1 at cgroup_root/memory). Walks from the process's cgroup up to the
/// root (a directory that does not exist, as inside a container's namespace, is skipped) and returns the one with the
/// least room. nullopt when no cgroup on the way sets a limit (v1's "unlimited" 2^63-page value, v2's "max"), or
/// none can be read. Never fails: unreadable or malformed files count as "no limit there".
std::optional<CgroupMemory> read_cgroup_memory(std::string_view proc_cgroup_text, const std::string& cgroup_root);

/// read_cgroup_memory for this process (/proc/self/cgroup, /sys/fs/cgroup).
std::optional<CgroupMemory> self_cgroup_memory();

/// What this process can use now, in bytes.
struct MemoryRoom {
  uint64_t mem_available_bytes = 0;     // /proc/meminfo MemAvailable; 0 if unreadable
  std::optional<CgroupMemory> cgroup;   // the limiting cgroup, if any
  /// min(MemAvailable, the cgroup's room); 0 when neither is known.
  uint64_t bytes() const;
  /// "9.8 GiB (cgroup /x limit 10.0 GiB, MemAvailable 21.3 GiB)" style text for start-up lines and plans.
  std::string describe() const;
};

/// A measurement buffer that cannot push the process over its limit: min(wanted, room / 4) bytes, or 0 (skip the
/// measurement) when that is below min_bytes. room_bytes 0 (unknown): wanted.
uint64_t fitted_buffer_bytes(uint64_t wanted_bytes, uint64_t room_bytes, uint64_t min_bytes);

/// MemAvailable and the cgroup of this process, read now.
MemoryRoom memory_room();

}  // namespace hetmoe::profiler
