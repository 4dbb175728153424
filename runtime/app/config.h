#pragma once
// The runtime configuration file (TOML, `--config hetmoe.toml`): plain data, every key optional, every value
// validated. The tables and keys (default_config_text() prints them with their meaning):
//
//   [threads]            count (int, 1..4096), per_node (int, 1..4096), cores (array of CPU ids or a list string
//                        like "0-7,16-23"), smt (bool)
//   [numa]               policy ("interleave" | "local" | "none")
//   [gpu]                id (int, 0..1023), vram_budget and ram_budget (byte sizes)
//   [model]              context (int, 1..16777216 tokens), kv_type, kv_type_k, kv_type_v ("f16" | "f32" | "q8_0" |
//                        "q4_0")
//   [placement]          mode ("static" | "dynamic"), num_gpu_experts (int, 0..1048576), prefill_crossover (int,
//                        1..1048576 tokens), overrides (array of {layer, expert, device}), tensor_overrides (array of
//                        {name, device})
//   [placement.dynamic]  decay (float in (0, 1]), replan_interval (int, 1..1048576 tokens), max_migrations_per_step
//                        (int, 0..4096), hysteresis (float in [0, 1])
//   [trace]              output (non-empty path)
//   [server]             host (non-empty string), port (int, 0..65535), parallel (int, 1..256), n_predict (int,
//                        0..16777216), max_body (byte size), max_queue (int, 0..4096), timeout (float seconds in
//                        [0, 1e7]), api_key, alias, cors_origin (non-empty strings), prefill_chunk (int, 1..65536),
//                        cache_reuse (int, 0..16777216), cache_prompt (bool)   (`hetmoe serve`, docs/serving.md)
//
// Byte sizes are a non-negative integer (bytes) or a string: a number with a unit, "6GiB", "512 MiB", "1.5GB"
// (B, KB/MB/GB/TB = powers of 1000, KiB/MiB/GiB/TiB = powers of 1024; the unit is case-insensitive).
// A device is "cpu" or "gpu".

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/byte_size.h"
#include "runtime/base/expected.h"
#include "runtime/model/kv_type.h"
#include "placement/settings.h"

namespace hetmoe {

/// Everything the file can set; an empty optional (or an empty override list) = the key was not in the file.
struct RuntimeConfig {
  struct Threads {
    std::optional<int> count;               // total CPU worker threads (= -t)
    std::optional<int> per_node;            // worker threads per NUMA node
    std::optional<std::vector<int>> cores;  // CPU ids (OS numbering) the workers may run on, ascending, unique
    std::optional<bool> smt;                // use both hardware threads of a core
    bool operator==(const Threads&) const = default;
  } threads;
  struct Numa {
    std::optional<NumaPolicy> policy;  // where expert weights are bound
    bool operator==(const Numa&) const = default;
  } numa;
  struct Gpu {
    std::optional<int> id;                      // CUDA device index
    std::optional<uint64_t> vram_budget_bytes;  // device memory hetmoe may allocate
    std::optional<uint64_t> ram_budget_bytes;   // host memory (weights, KV cache, pinned buffers) hetmoe may use
    bool operator==(const Gpu&) const = default;
  } gpu;
  struct Model {
    std::optional<uint32_t> context_length;  // tokens (= -c)
    std::optional<KvCacheType> kv_type;      // K and V (= --kv-type)
    std::optional<KvCacheType> kv_type_k;    // K alone, over kv_type (= -ctk)
    std::optional<KvCacheType> kv_type_v;    // V alone, over kv_type (= -ctv)
    std::optional<bool> attention_bf16;      // CPU attention products in bf16 (= --attention-bf16)
    bool operator==(const Model&) const = default;
  } model;
  using Placement = placement::PlacementSettings;
  Placement placement;
  struct Trace {
    std::optional<std::string> output;  // trace file path
    bool operator==(const Trace&) const = default;
  } trace;
  struct Server {                              // `hetmoe serve` (flags of the same name override them)
    std::optional<std::string> host;
    std::optional<int> port;
    std::optional<int> parallel;               // slots
    std::optional<int> n_predict;              // server-side cap on generated tokens per request; 0: none
    std::optional<uint64_t> max_body_bytes;
    std::optional<int> max_queue;
    std::optional<double> timeout_seconds;     // request time limit; 0: none
    std::optional<std::string> api_key;
    std::optional<std::string> alias;
    std::optional<std::string> cors_origin;
    std::optional<int> prefill_chunk;
    std::optional<int> cache_reuse;
    std::optional<bool> cache_prompt;
    bool operator==(const Server&) const = default;
  } server;

  bool operator==(const RuntimeConfig&) const = default;
};

/// Parses TOML `text`; `source_name` names it in error messages (a file path, "<string>").
/// Errors (kFormat): a TOML syntax error, an unknown table or key, a value of the wrong type or out of range, a
/// duplicate core id, an override entry without layer/expert/device. The message holds one line per problem found
/// (all of them, not only the first), each "SOURCE:LINE:COLUMN: KEY: expected ..., got ..." and, for an unknown key,
/// "did you mean 'x'?" when a known key is within a small edit distance. With `check_across_keys`, also the rules
/// between keys that the commands apply, each reported at its key's line: threads.count with threads.per_node,
/// threads.cores with threads.per_node or with a threads.count of another size.
Expected<RuntimeConfig> parse_config(std::string_view text, std::string_view source_name,
                                     bool check_across_keys = false);

/// Reads and parses the file at `path` with check_across_keys, so a file `hetmoe config --check` passes is one the
/// commands accept. Errors: kIo when it cannot be read or is a directory; parse_config's.
Expected<RuntimeConfig> load_config(const std::string& path);

/// The commented default file: every table and key with its meaning, type, range and default, each key commented
/// out (so the text parses to an empty RuntimeConfig). Example assignments are the lines starting "# key = " or
/// "# [[", prose lines never do.
std::string default_config_text();

/// The keys set in `config` as TOML (tables in the order of default_config_text()); parse_config of the result
/// gives `config` back.
std::string format_config(const RuntimeConfig& config);

/// Every key path the parser knows ("threads.count", "placement.overrides.layer", ...), in file order.
std::vector<std::string> config_key_paths();


/// Parses a CPU list such as "0-3,8,10-11" into ascending unique ids. Errors (kInvalidArgument): bad syntax, a range
/// whose end is below its start, an id above 65535, a duplicate.
Expected<std::vector<int>> parse_cpu_list(std::string_view text);


}  // namespace hetmoe
