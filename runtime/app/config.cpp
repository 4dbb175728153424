#include "runtime/app/config.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>

namespace hetmoe {
namespace {

constexpr uint64_t kMaxByteSize = 1ull << 60;
constexpr int64_t kMaxCpuId = 65535;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// Levenshtein distance, case-insensitive.
size_t edit_distance(std::string_view a_in, std::string_view b_in) {
  const std::string a = lower(a_in), b = lower(b_in);
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

/// The candidate closest to `word` if it is within max(1, min(3, |candidate| / 3)) edits, else "".
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    const size_t limit = std::max<size_t>(1, std::min<size_t>(3, c.size() / 3));
    if (d <= limit && d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

std::string quoted(std::string_view s) {
  std::ostringstream os;
  os << toml::value<std::string>(std::string(s));
  return os.str();
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? std::string(sep) : "") + items[i];
  return out;
}

/// "integer 5", "string \"x\"", ...: what the file holds, for "got ..." in messages.
std::string describe(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::integer: return fmt::format("integer {}", n.as_integer()->get());
    case toml::node_type::floating_point: return fmt::format("float {}", n.as_floating_point()->get());
    case toml::node_type::string: return "string " + quoted(n.as_string()->get());
    case toml::node_type::boolean: return n.as_boolean()->get() ? "boolean true" : "boolean false";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

/// The key tree the parser knows: table path → its keys (a key that is itself a table or an array of tables is
/// listed in its parent and has its own entry).
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> s = {
      {"", {"threads", "numa", "gpu", "model", "placement", "trace", "server"}},
      {"threads", {"count", "per_node", "cores", "smt"}},
      {"numa", {"policy"}},
      {"gpu", {"id", "vram_budget", "ram_budget"}},
      {"model", {"context", "kv_type", "kv_type_k", "kv_type_v", "attention_bf16"}},
      {"placement", {"mode", "num_gpu_experts", "prefill_crossover", "overrides", "tensor_overrides", "dynamic"}},
      {"placement.overrides", {"layer", "expert", "device"}},
      {"placement.tensor_overrides", {"name", "device"}},
      {"placement.dynamic", {"decay", "replan_interval", "max_migrations_per_step", "hysteresis"}},
      {"trace", {"output"}},
      {"server", {"host", "port", "parallel", "n_predict", "max_body", "max_queue", "timeout", "api_key", "alias",
                  "cors_origin", "prefill_chunk", "cache_reuse", "cache_prompt"}},
  };
  return s;
}

const std::vector<std::string>& keys_of(const std::string& table_path) {
  for (const auto& [path, keys] : schema())
    if (path == table_path) return keys;
  static const std::vector<std::string> none;
  return none;
}

struct Problem {
  uint32_t line = 0, column = 0;
  std::string text;
};

class Parser {
 public:
  explicit Parser(std::string_view source_name) : source_(source_name) {}

  void parse(const toml::table& root, bool across_keys) {
    walk(root, "", [&](const std::string& key, const toml::node& n, const std::string& path) {
      const toml::table* t = n.as_table();
      if (!t) return fail(n, path, fmt::format("expected a table [{}]", path));
      if (key == "threads") return walk(*t, path, [&](auto& k, auto& v, auto& p) { threads(k, v, p); });
      if (key == "numa") return walk(*t, path, [&](auto& k, auto& v, auto& p) { numa(k, v, p); });
      if (key == "gpu") return walk(*t, path, [&](auto& k, auto& v, auto& p) { gpu(k, v, p); });
      if (key == "model") return walk(*t, path, [&](auto& k, auto& v, auto& p) { model(k, v, p); });
      if (key == "placement") return walk(*t, path, [&](auto& k, auto& v, auto& p) { placement(k, v, p); });
      if (key == "trace") return walk(*t, path, [&](auto& k, auto& v, auto& p) { trace(k, v, p); });
      if (key == "server") return walk(*t, path, [&](auto& k, auto& v, auto& p) { server(k, v, p); });
    });
    if (across_keys) check_across_keys(root);
  }

  Expected<RuntimeConfig> result() {
    if (problems_.empty()) return config_;
    std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
      return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    std::vector<std::string> lines;
    for (const auto& p : problems_) lines.push_back(p.text);
    return make_error(ErrorCode::kFormat, join(lines, "\n"));
  }

 private:
  using Handler = std::function<void(const std::string& key, const toml::node& value, const std::string& path)>;

  /// The rules between keys that the commands apply (runtime/app/runtime_options.h, runtime/cli/plan_options.h),
  /// so `hetmoe config --check` refuses every file a command would refuse.
  void check_across_keys(const toml::table& root) {
    const RuntimeConfig::Threads& t = config_.threads;
    if (t.count && t.per_node)
      if (const toml::node* n = root.at_path("threads.per_node").node())
        add(n->source(), "threads.per_node: excludes threads.count (per_node sets the count per NUMA node); set one "
                         "of them");
    if (t.count && t.cores && t.cores->size() != static_cast<size_t>(*t.count))
      if (const toml::node* n = root.at_path("threads.cores").node())
        add(n->source(), fmt::format("threads.cores: lists {} CPUs but threads.count is {}: one worker runs on each "
                                     "listed CPU", t.cores->size(), *t.count));
    if (t.per_node && t.cores)
      if (const toml::node* n = root.at_path("threads.cores").node())
        add(n->source(), "threads.cores: excludes threads.per_node (the listed CPUs are the workers)");
  }

  std::string where(const toml::source_region& r) const {
    return fmt::format("{}:{}:{}", source_, r.begin.line, r.begin.column);
  }
  void add(const toml::source_region& r, std::string text) {
    problems_.push_back({r.begin.line, r.begin.column, where(r) + ": " + std::move(text)});
  }
  /// "SOURCE:L:C: KEY: EXPECTED, got WHAT".
  void fail(const toml::node& n, const std::string& path, const std::string& expected) {
    add(n.source(), fmt::format("{}: {}, got {}", path, expected, describe(n)));
  }

  /// Calls `handler` for every known key of table `t` (at `table_path` in the schema, named `display_path` in
  /// messages: an array entry "placement.overrides[2]"); reports unknown keys.
  void walk(const toml::table& t, const std::string& table_path, const Handler& handler,
            const std::string& display_path = "") {
    const std::string& shown = display_path.empty() ? table_path : display_path;
    const std::vector<std::string>& known = keys_of(table_path);
    for (auto&& [k, v] : t) {
      const std::string key(k.str());
      const std::string path = shown.empty() ? key : shown + "." + key;
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        unknown(k, key, path, table_path, shown, known);
        continue;
      }
      handler(key, v, path);
    }
  }

  void unknown(const toml::key& k, const std::string& key, const std::string& path, const std::string& table_path,
               const std::string& shown, const std::vector<std::string>& known) {
    std::string text = fmt::format("unknown key '{}'", path);
    const std::string table_name = table_path.empty() ? "at the top level" : "in [" + table_path + "]";
    text += fmt::format(" (known {}: {})", table_name, join(known, ", "));
    std::string suggestion = closest(key, known);
    if (!suggestion.empty()) {
      if (!shown.empty()) suggestion = shown + "." + suggestion;
    } else {
      // The same key in another table ("context" at the top level → "model.context").
      for (const std::string& p : config_key_paths()) {
        const size_t dot = p.rfind('.');
        if (p.substr(dot == std::string::npos ? 0 : dot + 1) == key && p != path) {
          suggestion = p;
          break;
        }
      }
    }
    if (!suggestion.empty()) text += fmt::format("; did you mean '{}'?", suggestion);
    add(k.source(), std::move(text));
  }

  // ---- typed values ----

  std::optional<int64_t> integer(const toml::node& n, const std::string& path, int64_t lo, int64_t hi,
                                 std::string_view unit = "") {
    const std::string expected =
        fmt::format("expected an integer in {}..{}{}{}", lo, hi, unit.empty() ? "" : " ", unit);
    const auto* v = n.as_integer();
    if (!v || v->get() < lo || v->get() > hi) {
      fail(n, path, expected);
      return std::nullopt;
    }
    return v->get();
  }

  /// A float (an integer is accepted) in [lo, hi], or (lo, hi] when lo_open.
  std::optional<double> number(const toml::node& n, const std::string& path, double lo, double hi, bool lo_open) {
    std::optional<double> x;
    if (const auto* f = n.as_floating_point()) x = f->get();
    if (const auto* i = n.as_integer()) x = static_cast<double>(i->get());
    if (!x || !std::isfinite(*x) || *x > hi || (lo_open ? *x <= lo : *x < lo)) {
      fail(n, path, fmt::format("expected a number in {}{}, {}]", lo_open ? "(" : "[", lo, hi));
      return std::nullopt;
    }
    return x;
  }

  std::optional<bool> boolean(const toml::node& n, const std::string& path) {
    if (const auto* b = n.as_boolean()) return b->get();
    fail(n, path, "expected a boolean (true or false)");
    return std::nullopt;
  }

  /// One of `choices` (exactly, lower case); the index.
  std::optional<size_t> choice(const toml::node& n, const std::string& path, const std::vector<std::string>& choices) {
    std::vector<std::string> q;
    for (const auto& c : choices) q.push_back(quoted(c));
    std::string expected = "expected one of " + join(q, ", ");
    if (const auto* s = n.as_string()) {
      for (size_t i = 0; i < choices.size(); ++i)
        if (s->get() == choices[i]) return i;
      if (const std::string c = closest(s->get(), choices); !c.empty()) {
        fail(n, path, expected);
        problems_.back().text += fmt::format("; did you mean '{}'?", c);
        return std::nullopt;
      }
    }
    fail(n, path, expected);
    return std::nullopt;
  }

  std::optional<uint64_t> byte_size(const toml::node& n, const std::string& path) {
    const std::string expected = fmt::format(
        "expected a byte size: an integer number of bytes in 0..2^60 or a string like \"6GiB\", \"512MiB\", \"1.5GB\"");
    if (const auto* i = n.as_integer()) {
      if (i->get() >= 0 && static_cast<uint64_t>(i->get()) <= kMaxByteSize) return static_cast<uint64_t>(i->get());
    } else if (const auto* s = n.as_string()) {
      auto bytes = parse_byte_size(s->get());
      if (bytes) return *bytes;
      fail(n, path, expected + " (" + bytes.error().message + ")");
      return std::nullopt;
    }
    fail(n, path, expected);
    return std::nullopt;
  }

  std::optional<std::string> nonempty_string(const toml::node& n, const std::string& path, std::string_view what) {
    if (const auto* s = n.as_string(); s && !s->get().empty()) return s->get();
    fail(n, path, fmt::format("expected a non-empty string ({})", what));
    return std::nullopt;
  }

  std::optional<DeviceKind> device(const toml::node& n, const std::string& path) {
    const auto idx = choice(n, path, {"cpu", "gpu"});
    if (!idx) return std::nullopt;
    return *idx == 0 ? DeviceKind::kCpu : DeviceKind::kGpu;
  }

  template <class T>
  void set(std::optional<T>& field, auto value) {
    if (value) field = static_cast<T>(*value);
  }

  // ---- tables ----

  void threads(const std::string& key, const toml::node& v, const std::string& path) {
    auto& t = config_.threads;
    if (key == "count") set(t.count, integer(v, path, 1, 4096, "threads"));
    if (key == "per_node") set(t.per_node, integer(v, path, 1, 4096, "threads"));
    if (key == "smt") set(t.smt, boolean(v, path));
    if (key == "cores") t.cores = cores(v, path);
  }

  std::optional<std::vector<int>> cores(const toml::node& v, const std::string& path) {
    const std::string expected = fmt::format(
        "expected an array of distinct CPU ids in 0..{} or a CPU list string like \"0-7,16-23\"", kMaxCpuId);
    if (const auto* s = v.as_string()) {
      auto list = parse_cpu_list(s->get());
      if (list) return *list;
      fail(v, path, expected + " (" + list.error().message + ")");
      return std::nullopt;
    }
    const auto* a = v.as_array();
    if (!a) {
      fail(v, path, expected);
      return std::nullopt;
    }
    std::vector<int> ids;
    bool ok = true;
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      const std::string elem_path = fmt::format("{}[{}]", path, i);
      const auto id = integer(e, elem_path, 0, kMaxCpuId, "(a CPU id)");
      if (!id) {
        ok = false;
        continue;
      }
      if (std::find(ids.begin(), ids.end(), static_cast<int>(*id)) != ids.end()) {
        fail(e, elem_path, "expected distinct CPU ids (this one is listed twice)");
        ok = false;
        continue;
      }
      ids.push_back(static_cast<int>(*id));
    }
    if (!ok) return std::nullopt;
    if (ids.empty()) {
      fail(v, path, expected + " (at least one)");
      return std::nullopt;
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  void numa(const std::string& key, const toml::node& v, const std::string& path) {
    if (key == "policy")
      if (auto i = choice(v, path, {"interleave", "local", "none"}))
        config_.numa.policy = *i == 0 ? NumaPolicy::kInterleave : *i == 1 ? NumaPolicy::kLocal : NumaPolicy::kNone;
  }

  void gpu(const std::string& key, const toml::node& v, const std::string& path) {
    auto& g = config_.gpu;
    if (key == "id") set(g.id, integer(v, path, 0, 1023, "(a CUDA device index)"));
    if (key == "vram_budget") set(g.vram_budget_bytes, byte_size(v, path));
    if (key == "ram_budget") set(g.ram_budget_bytes, byte_size(v, path));
  }

  void model(const std::string& key, const toml::node& v, const std::string& path) {
    auto& m = config_.model;
    if (key == "context") set(m.context_length, integer(v, path, 1, 1 << 24, "tokens"));
    // The choices in KvCacheType's order (kv_type.h).
    constexpr KvCacheType kTypes[] = {KvCacheType::kF16, KvCacheType::kF32, KvCacheType::kQ8_0, KvCacheType::kQ4_0};
    const auto kv_type = [&](std::optional<KvCacheType>& field) {
      if (auto i = choice(v, path, {"f16", "f32", "q8_0", "q4_0"})) field = kTypes[*i];
    };
    if (key == "kv_type") kv_type(m.kv_type);
    if (key == "kv_type_k") kv_type(m.kv_type_k);
    if (key == "kv_type_v") kv_type(m.kv_type_v);
    if (key == "attention_bf16") set(m.attention_bf16, boolean(v, path));
  }

  void placement(const std::string& key, const toml::node& v, const std::string& path) {
    auto& p = config_.placement;
    if (key == "mode")
      if (auto i = choice(v, path, {"static", "dynamic"}))
        p.mode = *i == 0 ? PlacementMode::kStatic : PlacementMode::kDynamic;
    if (key == "num_gpu_experts") set(p.num_gpu_experts, integer(v, path, 0, 1 << 20, "experts"));
    if (key == "prefill_crossover") set(p.prefill_crossover, integer(v, path, 1, 1 << 20, "tokens"));
    if (key == "overrides" || key == "tensor_overrides") array_of_tables(key, v, path);
    if (key == "dynamic") {
      const toml::table* t = v.as_table();
      if (!t) return fail(v, path, "expected a table [placement.dynamic]");
      walk(*t, path, [&](const std::string& k, const toml::node& n, const std::string& kp) { dynamic(k, n, kp); });
    }
  }

  /// placement.overrides = [{layer, expert, device}, ...] and placement.tensor_overrides = [{name, device}, ...]
  /// (inline tables or [[placement.overrides]] sections); every key of an entry is required.
  void array_of_tables(const std::string& key, const toml::node& v, const std::string& path) {
    const bool experts = key == "overrides";
    const std::string entry_help = experts ? "{layer = L, expert = E, device = \"cpu\" | \"gpu\"}"
                                           : "{name = \"blk.*.ffn_*_exps.weight\", device = \"cpu\" | \"gpu\"}";
    const auto* a = v.as_array();
    if (!a) return fail(v, path, "expected an array of tables " + entry_help);
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      const std::string entry_path = fmt::format("{}[{}]", path, i);
      const toml::table* t = e.as_table();
      if (!t) {
        fail(e, entry_path, "expected a table " + entry_help);
        continue;
      }
      std::optional<int64_t> layer, expert;
      std::optional<std::string> name;
      std::optional<DeviceKind> dev;
      bool bad_value = false;
      walk(
          *t, path,
          [&](const std::string& k, const toml::node& n, const std::string& kp) {
            if (k == "layer") bad_value |= !(layer = integer(n, kp, 0, 4095, "(a layer index)"));
            if (k == "expert") bad_value |= !(expert = integer(n, kp, 0, 65535, "(an expert index)"));
            if (k == "name")
              bad_value |= !(name = nonempty_string(n, kp, "a tensor name; * and ? match any characters"));
            if (k == "device") bad_value |= !(dev = device(n, kp));
          },
          entry_path);
      std::vector<std::string> missing;
      for (const std::string& k : keys_of(path))
        if (!t->contains(k)) missing.push_back("'" + k + "'");
      if (!missing.empty()) {
        add(e.source(), fmt::format("{}: missing key{} {} (expected {})", entry_path, missing.size() > 1 ? "s" : "",
                                    join(missing, ", "), entry_help));
        continue;
      }
      if (bad_value) continue;
      if (experts)
        config_.placement.expert_overrides.push_back(
            {static_cast<uint32_t>(*layer), static_cast<uint32_t>(*expert), *dev});
      else
        config_.placement.tensor_overrides.push_back({*name, *dev});
    }
  }

  void dynamic(const std::string& key, const toml::node& v, const std::string& path) {
    auto& d = config_.placement.dynamic;
    if (key == "decay") set(d.decay, number(v, path, 0.0, 1.0, /*lo_open=*/true));
    if (key == "replan_interval") set(d.replan_interval, integer(v, path, 1, 1 << 20, "tokens"));
    if (key == "max_migrations_per_step") set(d.max_migrations_per_step, integer(v, path, 0, 4096, "experts"));
    if (key == "hysteresis") set(d.hysteresis, number(v, path, 0.0, 1.0, /*lo_open=*/false));
  }

  void trace(const std::string& key, const toml::node& v, const std::string& path) {
    if (key == "output") set(config_.trace.output, nonempty_string(v, path, "a file path"));
  }

  void server(const std::string& key, const toml::node& v, const std::string& path) {
    auto& s = config_.server;
    auto int_key = [&](std::optional<int>& out, int64_t lo, int64_t hi, std::string_view unit) {
      if (auto x = integer(v, path, lo, hi, unit)) out = static_cast<int>(*x);
    };
    if (key == "host") set(s.host, nonempty_string(v, path, "an address"));
    if (key == "port") int_key(s.port, 0, 65535, "");
    if (key == "parallel") int_key(s.parallel, 1, 256, "slots");
    if (key == "n_predict") int_key(s.n_predict, 0, 1 << 24, "tokens");
    if (key == "max_body") set(s.max_body_bytes, byte_size(v, path));
    if (key == "max_queue") int_key(s.max_queue, 0, 4096, "requests");
    if (key == "timeout") set(s.timeout_seconds, number(v, path, 0.0, 1e7, /*lo_open=*/false));
    if (key == "api_key") set(s.api_key, nonempty_string(v, path, "a key"));
    if (key == "alias") set(s.alias, nonempty_string(v, path, "a model id"));
    if (key == "cors_origin") set(s.cors_origin, nonempty_string(v, path, "an origin"));
    if (key == "prefill_chunk") int_key(s.prefill_chunk, 1, 1 << 16, "tokens");
    if (key == "cache_reuse") int_key(s.cache_reuse, 0, 1 << 24, "positions");
    if (key == "cache_prompt") set(s.cache_prompt, boolean(v, path));
  }

  std::string source_;
  RuntimeConfig config_;
  std::vector<Problem> problems_;
};

std::string float_text(double x) {
  std::string s = fmt::format("{}", x);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

}  // namespace


Expected<std::vector<int>> parse_cpu_list(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return make_error(ErrorCode::kInvalidArgument, fmt::format("CPU list \"{}\": {}", text, why));
  };
  std::vector<int> ids;
  size_t i = 0;
  const auto skip_spaces = [&] {
    while (i < text.size() && text[i] == ' ') ++i;
  };
  const auto read_id = [&]() -> std::optional<int64_t> {
    skip_spaces();
    const size_t begin = i;
    int64_t v = 0;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i)
      if (v <= kMaxCpuId) v = v * 10 + (text[i] - '0');  // stops growing past the limit, still above it
    if (i == begin) return std::nullopt;
    skip_spaces();
    return v;
  };
  for (;;) {
    const auto lo = read_id();
    if (!lo) return bad("expected a CPU id or a range like 0-7");
    int64_t hi = *lo;
    if (i < text.size() && text[i] == '-') {
      ++i;
      const auto h = read_id();
      if (!h) return bad("expected the end of the range after '-'");
      hi = *h;
    }
    if (*lo > kMaxCpuId || hi > kMaxCpuId) return bad(fmt::format("CPU ids go up to {}", kMaxCpuId));
    if (hi < *lo) return bad(fmt::format("range {}-{} ends below its start", *lo, hi));
    for (int64_t id = *lo; id <= hi; ++id) {
      if (std::find(ids.begin(), ids.end(), static_cast<int>(id)) != ids.end())
        return bad(fmt::format("CPU {} is listed twice", id));
      ids.push_back(static_cast<int>(id));
    }
    if (i < text.size() && text[i] == ',') {
      ++i;
      continue;
    }
    break;
  }
  if (i < text.size()) return bad(fmt::format("unexpected '{}' (entries are separated by ',')", text[i]));
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<std::string> config_key_paths() {
  std::vector<std::string> paths;
  for (const auto& [table, keys] : schema()) {
    if (table.empty()) continue;
    for (const auto& k : keys) {
      const std::string p = table + "." + k;
      if (keys_of(p).empty()) paths.push_back(p);  // tables have their own entries
    }
  }
  return paths;
}

Expected<RuntimeConfig> parse_config(std::string_view text, std::string_view source_name, bool check_across_keys) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kFormat, fmt::format("{}:{}:{}: TOML syntax error: {}", source_name,
                                                      e.source().begin.line, e.source().begin.column, e.description()));
  }
  Parser parser(source_name);
  parser.parse(root, check_across_keys);
  return parser.result();
}

Expected<RuntimeConfig> load_config(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return make_error(ErrorCode::kIo, fmt::format("{}: is a directory, not a config file", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open the config file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, fmt::format("{}: cannot read the config file", path));
  return parse_config(ss.str(), path, /*check_across_keys=*/true);
}

std::string format_config(const RuntimeConfig& c) {
  std::string out;
  std::vector<std::string> lines;
  const auto table = [&](std::string_view header) {
    if (!lines.empty()) out += fmt::format("{}[{}]\n{}", out.empty() ? "" : "\n", header, join(lines, ""));
    lines.clear();
  };
  const auto kv = [&](std::string_view key, const std::string& value) {
    lines.push_back(fmt::format("{} = {}\n", key, value));
  };
  if (c.threads.count) kv("count", std::to_string(*c.threads.count));
  if (c.threads.per_node) kv("per_node", std::to_string(*c.threads.per_node));
  if (c.threads.cores) kv("cores", "[" + fmt::format("{}", fmt::join(*c.threads.cores, ", ")) + "]");
  if (c.threads.smt) kv("smt", *c.threads.smt ? "true" : "false");
  table("threads");
  if (c.numa.policy) kv("policy", quoted(numa_policy_name(*c.numa.policy)));
  table("numa");
  if (c.gpu.id) kv("id", std::to_string(*c.gpu.id));
  if (c.gpu.vram_budget_bytes) kv("vram_budget", std::to_string(*c.gpu.vram_budget_bytes));
  if (c.gpu.ram_budget_bytes) kv("ram_budget", std::to_string(*c.gpu.ram_budget_bytes));
  table("gpu");
  if (c.model.context_length) kv("context", std::to_string(*c.model.context_length));
  if (c.model.kv_type) kv("kv_type", quoted(kv_cache_type_name(*c.model.kv_type)));
  if (c.model.kv_type_k) kv("kv_type_k", quoted(kv_cache_type_name(*c.model.kv_type_k)));
  if (c.model.kv_type_v) kv("kv_type_v", quoted(kv_cache_type_name(*c.model.kv_type_v)));
  if (c.model.attention_bf16) kv("attention_bf16", *c.model.attention_bf16 ? "true" : "false");
  table("model");
  const auto& p = c.placement;
  if (p.mode) kv("mode", quoted(placement_mode_name(*p.mode)));
  if (p.num_gpu_experts) kv("num_gpu_experts", std::to_string(*p.num_gpu_experts));
  if (p.prefill_crossover) kv("prefill_crossover", std::to_string(*p.prefill_crossover));
  std::vector<std::string> entries;
  for (const auto& o : p.expert_overrides)
    entries.push_back(fmt::format("{{layer = {}, expert = {}, device = {}}}", o.layer_idx, o.expert_idx,
                                  quoted(device_kind_name(o.device))));
  if (!entries.empty()) kv("overrides", "[\n  " + join(entries, ",\n  ") + ",\n]");
  entries.clear();
  for (const auto& o : p.tensor_overrides)
    entries.push_back(
        fmt::format("{{name = {}, device = {}}}", quoted(o.name_pattern), quoted(device_kind_name(o.device))));
  if (!entries.empty()) kv("tensor_overrides", "[\n  " + join(entries, ",\n  ") + ",\n]");
  table("placement");
  const auto& d = p.dynamic;
  if (d.decay) kv("decay", float_text(*d.decay));
  if (d.replan_interval) kv("replan_interval", std::to_string(*d.replan_interval));
  if (d.max_migrations_per_step) kv("max_migrations_per_step", std::to_string(*d.max_migrations_per_step));
  if (d.hysteresis) kv("hysteresis", float_text(*d.hysteresis));
  table("placement.dynamic");
  if (c.trace.output) kv("output", quoted(*c.trace.output));
  table("trace");
  const auto& sv = c.server;
  if (sv.host) kv("host", quoted(*sv.host));
  if (sv.port) kv("port", std::to_string(*sv.port));
  if (sv.parallel) kv("parallel", std::to_string(*sv.parallel));
  if (sv.n_predict) kv("n_predict", std::to_string(*sv.n_predict));
  if (sv.max_body_bytes) kv("max_body", std::to_string(*sv.max_body_bytes));
  if (sv.max_queue) kv("max_queue", std::to_string(*sv.max_queue));
  if (sv.timeout_seconds) kv("timeout", float_text(*sv.timeout_seconds));
  if (sv.api_key) kv("api_key", quoted(*sv.api_key));
  if (sv.alias) kv("alias", quoted(*sv.alias));
  if (sv.cors_origin) kv("cors_origin", quoted(*sv.cors_origin));
  if (sv.prefill_chunk) kv("prefill_chunk", std::to_string(*sv.prefill_chunk));
  if (sv.cache_reuse) kv("cache_reuse", std::to_string(*sv.cache_reuse));
  if (sv.cache_prompt) kv("cache_prompt", *sv.cache_prompt ? "true" : "false");
  table("server");
  return out;
}

std::string default_config_text() {
  return R"(# hetmoe configuration file (TOML): hetmoe generate|chat|bench|eval --config FILE.
# Every key is optional: a key left out keeps its default. Command-line flags override the file.
# Check a file with: hetmoe config --check FILE
#
# Every key is in effect except placement.tensor_overrides (read and validated; the runtime places whole blocks and
# experts). bench and eval use the [threads] layout keys, [numa], [gpu] and [placement], not threads.count or
# [model] (their own flags set those).
#
# Byte sizes: an integer number of bytes or a string with a unit, e.g. "6GiB", "512MiB", "1.5GB"
# (KB, MB, GB, TB = powers of 1000; KiB, MiB, GiB, TiB = powers of 1024).

[threads]
# CPU worker threads in all (in effect, as -t). Integer 1..4096. Default: all hardware threads.
# count = 8
# Worker threads per NUMA node (not together with count; -t overrides it). Integer 1..4096. Default: count
# divided evenly over the nodes.
# per_node = 8
# CPUs the workers may run on: an array of CPU ids or a list string. Default: every CPU this process may use.
# cores = "0-7"
# Use both hardware threads of each core (SMT). Boolean. Default: true.
# smt = true

[numa]
# Where expert weights are bound with several NUMA nodes: "local" (each node's experts in its own memory),
# "none" (the kernel's first-touch placement) or "interleave" (not implemented yet: as "none", with a note).
# Default: "local".
# policy = "local"

[gpu]
# CUDA device index. Integer 0..1023. Default: 0.
# id = 0
# Device memory hetmoe may allocate (byte size; = --vram-budget). Default: the free device memory minus 512 MiB.
# vram_budget = "6GiB"
# Host memory the placement plan may keep weights and KV cache in (byte size; = --ram-budget). Default: no limit.
# ram_budget = "12GiB"

[model]
# Context length in tokens (in effect, as -c). Integer 1..16777216, at most the model's trained context.
# Default: 8192.
# context = 8192
# KV cache element type of K and V (in effect, as --kv-type): "f16", "f32", "q8_0" or "q4_0" (ggml's 32-value
# blocks: q8_0 takes 53 %, q4_0 28 % of f16's bytes; the CPU and GPU passes read them; f32 runs on the CPU pass
# only). Default: "f16".
# kv_type = "f16"
# K's or V's type alone (as -ctk / -ctv), over kv_type. Same choices. Default: kv_type.
# kv_type_k = "q8_0"
# kv_type_v = "q8_0"
# CPU attention multiplies in bf16 where the CPU has AVX512_BF16 (= --attention-bf16; gpt-oss's training precision,
# faster at depth, logits further from f32 attention's). Default: false.
# attention_bf16 = true

[placement]
# "static" (placement chosen once at start) or "dynamic" (re-planned from the expert statistics while running;
# = --placement). Stored in the plan; the GPU runtime does not migrate experts yet. Default: "dynamic".
# mode = "dynamic"
# Experts per layer kept on the GPU, by router bias (= --n-gpu-experts). Integer 0..1048576. Default: the
# placement optimizer decides.
# num_gpu_experts = 8
# Prompt length in tokens from which prefill streams the experts to the GPU rather than computing them on the
# CPU (stored in the plan; prefill streaming is not implemented yet). Integer 1..1048576. Default: the cost
# model's crossover.
# prefill_crossover = 32
# Pin experts to a device: an array of {layer, expert, device}, device "cpu" or "gpu" (layer 0..4095, expert
# 0..65535, checked against the model when the plan is made), applied after the optimizer within the budgets
# (the least probable GPU experts make room; an error when the pins cannot fit). Either inline, as in
# "overrides = [{...}, {...}]", or one section per entry:
# [[placement.overrides]]
# layer = 0
# expert = 3
# device = "gpu"
# Pin tensors to a device by GGUF name ('*' matches any characters, '?' one): an array of {name, device}.
# [[placement.tensor_overrides]]
# name = "output.weight"
# device = "cpu"

[placement.dynamic]
# Dynamic placement (mode = "dynamic"):
# Per-token decay of the expert activation counts (the plan's half-life = ln 2 / -ln decay). Number in (0, 1].
# Default: 0.9973 (a half-life of 256 tokens).
# decay = 0.9973
# Tokens between re-plans. Integer 1..1048576. Default: 32.
# replan_interval = 32
# Experts moved per re-plan at most. Integer 0..4096. Default: 4.
# max_migrations_per_step = 4
# Relative margin a candidate expert's score must beat the resident's by. Number in [0, 1]. Default: 0.25.
# hysteresis = 0.25

[trace]
# Write a trace of the run (Perfetto-readable) to this file. Default: no trace.
# output = "hetmoe-trace.json"

[server]
# `hetmoe serve` (docs/serving.md); the flags of the same name override these keys.
# Address to listen on. Default: "127.0.0.1" (this machine only).
# host = "127.0.0.1"
# TCP port; 0 = any free port. Integer 0..65535. Default: 8080.
# port = 8080
# Requests served at once, each in a slot with its own KV cache. Integer 1..256. Default: 1.
# parallel = 4
# Server-side cap on the tokens generated per request; 0 = none (the context). Integer 0..16777216. Default: 0.
# n_predict = 4096
# Largest request body. Byte size. Default: "16MiB".
# max_body = "16MiB"
# Requests that may wait for a slot; one more gets 503 with Retry-After. Integer 0..4096. Default: 16.
# max_queue = 16
# Request time limit in seconds; 0 = none. Number in [0, 1e7]. Default: 0.
# timeout = 600
# Require "Authorization: Bearer KEY". Default: $HETMOE_API_KEY, else none.
# api_key = "change-me"
# Model id in /v1/models and in answers. Default: the model file's stem.
# alias = "gpt-oss-20b"
# Send CORS headers that allow this origin (a browser app on another origin). Default: no CORS headers.
# cors_origin = "http://localhost:3000"
# Prompt tokens per slot per scheduler step. Integer 1..65536. Default: 256.
# prefill_chunk = 256
# Positions a slot may go back to reuse a cached prompt prefix (sliding-window ring slots). Integer 0..16777216.
# Default: 2048.
# cache_reuse = 2048
# Reuse a slot's KV cache for a prompt that shares its prefix. Boolean. Default: true.
# cache_prompt = true
)";
}

}  // namespace hetmoe
