#include "profiler/memory_limit.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "profiler/bandwidth.h"

namespace hetmoe::profiler {
namespace {

// v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages); anything from 2^62 on is
// no limit a machine could have.
constexpr uint64_t kUnlimited = uint64_t{1} << 62;

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A file holding one number (or "max"): the number, kUnlimited for "max", nullopt when absent or malformed.
std::optional<uint64_t> read_number(const std::string& path) {
  auto text = read_text(path);
  if (!text) return std::nullopt;
  std::string_view t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
  if (t == "max") return kUnlimited;
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
  return v;
}

/// The value of `key` in a memory.stat file ("key value" lines); 0 when absent.
uint64_t stat_value(const std::string& path, std::string_view key) {
  auto text = read_text(path);
  if (!text) return 0;
  std::istringstream in(*text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

/// The cgroup directory of the v2 line ("0::/a/b") or of the v1 memory line ("4:memory:/a/b") of /proc/PID/cgroup.
std::optional<std::string> cgroup_path(std::string_view text, bool v2) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) continue;
    const size_t c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    const std::string_view id = line.substr(0, c1), controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string_view path = line.substr(c2 + 1);
    if (v2 && id == "0" && controllers.empty()) return std::string(path);
    if (!v2) {
      std::string_view rest = controllers;  // comma-separated, e.g. "cpu,cpuacct" or "memory"
      while (!rest.empty()) {
        const size_t comma = rest.find(',');
        if (rest.substr(0, comma) == "memory") return std::string(path);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
    }
  }
  return std::nullopt;
}

/// The cgroup directories from `dir` (relative, "/a/b") up to the root ("" = the mount itself), that exist.
std::vector<std::string> ancestors(const std::string& mount, std::string dir) {
  std::vector<std::string> out;
  while (true) {
    while (!dir.empty() && dir.back() == '/') dir.pop_back();
    std::error_code ec;
    if (std::filesystem::is_directory(mount + dir, ec)) out.push_back(dir);
    if (dir.empty()) break;
    const size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? std::string() : dir.substr(0, slash);
  }
  return out;
}

}  // namespace

uint64_t CgroupMemory::room_bytes() const {
  const uint64_t charged = usage_bytes > reclaimable_bytes ? usage_bytes - reclaimable_bytes : 0;
  return limit_bytes > charged ? limit_bytes - charged : 0;
}

std::optional<CgroupMemory> read_cgroup_memory(std::string_view proc_cgroup_text, const std::string& cgroup_root) {
  std::optional<CgroupMemory> best;
  const auto consider = [&](CgroupMemory c) {
    if (c.limit_bytes >= kUnlimited) return;
    if (!best || c.room_bytes() < best->room_bytes()) best = std::move(c);
  };
  const auto controllers = read_text(cgroup_root + "/cgroup.controllers");
  const bool v2 = controllers && (" " + *controllers + " ").find(" memory") != std::string::npos;
  if (v2) {
    auto path = cgroup_path(proc_cgroup_text, true);
    if (!path) return std::nullopt;
    for (const std::string& dir : ancestors(cgroup_root, *path)) {
      const std::string d = cgroup_root + dir;
      const auto max = read_number(d + "/memory.max"), high = read_number(d + "/memory.high");
      const auto current = read_number(d + "/memory.current");
      if ((!max && !high) || !current) continue;  // the root cgroup has neither
      CgroupMemory c;
      c.version = 2;
      c.dir = dir.empty() ? "/" : dir;
      c.limit_bytes = std::min(max.value_or(kUnlimited), high.value_or(kUnlimited));
      c.usage_bytes = *current;
      c.reclaimable_bytes = stat_value(d + "/memory.stat", "inactive_file");
      consider(std::move(c));
    }
    return best;
  }
  const std::string mount = cgroup_root + "/memory";
  auto path = cgroup_path(proc_cgroup_text, false);
  if (!path) return std::nullopt;
  for (const std::string& dir : ancestors(mount, *path)) {
    const std::string d = mount + dir;
    const auto limit = read_number(d + "/memory.limit_in_bytes"), usage = read_number(d + "/memory.usage_in_bytes");
    if (!limit || !usage) continue;
    CgroupMemory c;
    c.version = 1;
    c.dir = dir.empty() ? "/" : dir;
    c.limit_bytes = *limit;
    c.usage_bytes = *usage;
    c.reclaimable_bytes = stat_value(d + "/memory.stat", "total_inactive_file");
    consider(std::move(c));
  }
  return best;
}

std::optional<CgroupMemory> self_cgroup_memory() {
  const auto text = read_text("/proc/self/cgroup");
  if (!text) return std::nullopt;
  return read_cgroup_memory(*text, "/sys/fs/cgroup");
}

uint64_t MemoryRoom::bytes() const {
  if (!cgroup) return mem_available_bytes;
  if (mem_available_bytes == 0) return cgroup->room_bytes();
  return std::min(mem_available_bytes, cgroup->room_bytes());
}

std::string MemoryRoom::describe() const {
  const auto gib = [](uint64_t b) { return static_cast<double>(b) / static_cast<double>(uint64_t{1} << 30); };
  if (!cgroup) return fmt::format("{:.1f} GiB (MemAvailable; no cgroup limit)", gib(mem_available_bytes));
  return fmt::format("{:.1f} GiB (cgroup v{} {} limit {:.1f} GiB, {:.1f} GiB in use; MemAvailable {:.1f} GiB)",
                     gib(bytes()), cgroup->version, cgroup->dir, gib(cgroup->limit_bytes),
                     gib(cgroup->usage_bytes - std::min(cgroup->usage_bytes, cgroup->reclaimable_bytes)),
                     gib(mem_available_bytes));
}

uint64_t fitted_buffer_bytes(uint64_t wanted_bytes, uint64_t room_bytes, uint64_t min_bytes) {
  if (room_bytes == 0) return wanted_bytes;
  const uint64_t fitted = std::min(wanted_bytes, room_bytes / 4);
  return fitted < min_bytes ? 0 : fitted;
}

MemoryRoom memory_room() {
  MemoryRoom room;
  room.mem_available_bytes = mem_available_bytes();
  room.cgroup = self_cgroup_memory();
  return room;
}

}  // namespace hetmoe::profiler
