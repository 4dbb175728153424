#include "placement/plan.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <sstream>

#include "runtime/model/kv_type.h"

namespace hetmoe::placement {
namespace {

constexpr const char* kFormatName = "hetmoe-plan";
constexpr int kVersion = 1;

Error format_error(const std::string& source, const std::string& what) {
  return make_error(ErrorCode::kFormat, fmt::format("{}: {}", source, what));
}

/// A JSON object reader that names the path of every key in its errors.
struct Reader {
  const nlohmann::json& j;
  std::string path;    // e.g. "layers[3]"
  const std::string& source;

  std::string where(const char* key) const { return path.empty() ? key : path + "." + key; }
  Expected<const nlohmann::json*> field(const char* key) const {
    if (!j.is_object() || !j.contains(key)) return format_error(source, fmt::format("missing key '{}'", where(key)));
    return &j[key];
  }
  Expected<uint64_t> u64(const char* key, uint64_t max = UINT64_MAX) const {
    const nlohmann::json* v = nullptr;
    HETMOE_ASSIGN_OR_RETURN(v, field(key));
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<uint64_t>() > max)
      return format_error(source, fmt::format("key '{}' must be an integer in 0..{}", where(key), max));
    return v->get<uint64_t>();
  }
  Expected<double> number(const char* key) const {
    const nlohmann::json* v = nullptr;
    HETMOE_ASSIGN_OR_RETURN(v, field(key));
    if (!v->is_number() || v->get<double>() < 0)
      return format_error(source, fmt::format("key '{}' must be a number >= 0", where(key)));
    return v->get<double>();
  }
  Expected<std::string> string(const char* key) const {
    const nlohmann::json* v = nullptr;
    HETMOE_ASSIGN_OR_RETURN(v, field(key));
    if (!v->is_string()) return format_error(source, fmt::format("key '{}' must be a string", where(key)));
    return v->get<std::string>();
  }
  Expected<Device> device(const char* key) const {
    std::string s;
    HETMOE_ASSIGN_OR_RETURN(s, string(key));
    if (s == "cpu") return Device::kCpu;
    if (s == "gpu") return Device::kGpu;
    return format_error(source, fmt::format("key '{}' is '{}', expected \"cpu\" or \"gpu\"", where(key), s));
  }
};

}  // namespace

bool Plan::same_placement(const Plan& o) const {
  if (num_layers != o.num_layers || num_experts != o.num_experts || num_experts_used != o.num_experts_used ||
      context_length != o.context_length || kv_type != o.kv_type || embedding != o.embedding ||
      output != o.output || num_cpu_threads != o.num_cpu_threads || layers.size() != o.layers.size() ||
      prefill_crossover_tokens != o.prefill_crossover_tokens ||
      dynamic.enabled != o.dynamic.enabled || dynamic.half_life_tokens != o.dynamic.half_life_tokens ||
      dynamic.replan_interval_tokens != o.dynamic.replan_interval_tokens ||
      dynamic.max_migrations_per_step != o.dynamic.max_migrations_per_step ||
      dynamic.hysteresis != o.dynamic.hysteresis || dynamic.min_score_gap != o.dynamic.min_score_gap)
    return false;
  for (size_t l = 0; l < layers.size(); ++l)
    if (layers[l].attention != o.layers[l].attention || layers[l].experts != o.layers[l].experts ||
        layers[l].expert_numa_nodes != o.layers[l].expert_numa_nodes ||
        layers[l].paged_experts != o.layers[l].paged_experts)
      return false;
  return true;
}

Plan all_cpu_plan(uint32_t num_layers, uint32_t num_experts, uint32_t num_experts_used, uint32_t context_length) {
  Plan p;
  p.num_layers = num_layers;
  p.num_experts = num_experts;
  p.num_experts_used = num_experts_used;
  p.context_length = context_length;
  p.layers.resize(num_layers);
  for (LayerPlan& l : p.layers) l.experts.assign(num_experts, Device::kCpu);
  return p;
}

nlohmann::json plan_to_json(const Plan& p) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerPlan& l : p.layers) {
    std::vector<uint32_t> gpu, cpu;
    for (uint32_t e = 0; e < l.experts.size(); ++e) (l.experts[e] == Device::kGpu ? gpu : cpu).push_back(e);
    nlohmann::json jl = {{"attention", device_name(l.attention)},
                         {"gpu_experts", gpu},
                         {"cpu_experts", cpu},
                         {"gpu_bytes", l.gpu_bytes},
                         {"cpu_bytes", l.cpu_bytes},
                         {"gpu_time_s", l.gpu_time_s},
                         {"cpu_time_s", l.cpu_time_s},
                         {"sync_time_s", l.sync_time_s},
                         {"step_time_s", l.step_time_s}};
    if (!l.expert_numa_nodes.empty()) jl["numa_nodes"] = l.expert_numa_nodes;
    if (!l.paged_experts.empty()) jl["paged_experts"] = l.paged_experts;
    layers.push_back(std::move(jl));
  }
  const PlanTotals& t = p.totals;
  const PlanPrediction& r = p.prediction;
  nlohmann::json out = {
      {"format", kFormatName},
      {"version", kVersion},
      {"model", p.model_name},
      {"num_layers", p.num_layers},
      {"num_experts", p.num_experts},
      {"num_experts_used", p.num_experts_used},
      {"context_length", p.context_length},
      {"kv_type", p.kv_type},
      {"strategy", p.strategy},
      {"embedding", device_name(p.embedding)},
      {"output", device_name(p.output)},
      {"num_cpu_threads", p.num_cpu_threads},
      {"budgets", {{"vram_bytes", p.vram_budget_bytes}, {"ram_bytes", p.ram_budget_bytes}}},
      {"prefill_crossover_tokens", p.prefill_crossover_tokens},
      {"dynamic_placement",
       {{"enabled", p.dynamic.enabled},
        {"half_life_tokens", p.dynamic.half_life_tokens},
        {"replan_interval_tokens", p.dynamic.replan_interval_tokens},
        {"max_migrations_per_step", p.dynamic.max_migrations_per_step},
        {"hysteresis", p.dynamic.hysteresis},
        {"min_score_gap", p.dynamic.min_score_gap}}},
      {"layers", std::move(layers)},
      {"totals",
       {{"gpu_bytes", t.gpu_bytes},
        {"cpu_bytes", t.cpu_bytes},
        {"gpu_kv_bytes", t.gpu_kv_bytes},
        {"cpu_kv_bytes", t.cpu_kv_bytes},
        {"gpu_workspace_bytes", t.gpu_workspace_bytes},
        {"num_gpu_experts", t.num_gpu_experts},
        {"num_cpu_experts", t.num_cpu_experts}}},
      {"prediction",
       {{"depth", r.depth},
        {"decode_time_s", r.decode_time_s},
        {"decode_tok_s", r.decode_tok_s},
        {"gpu_time_s", r.gpu_time_s},
        {"cpu_time_s", r.cpu_time_s},
        {"output_time_s", r.output_time_s},
        {"prefill_batch", r.prefill_batch},
        {"prefill_tok_s", r.prefill_tok_s},
        {"prefill_crossover_batch", r.prefill_crossover_batch}}},
      {"notes", p.notes},
  };
  if (p.ram_tier.enabled) {
    const RamTier& rt = p.ram_tier;
    out["ram_tier"] = {{"enabled", rt.enabled},
                       {"lock", rt.lock},
                       {"room_bytes", rt.room_bytes},
                       {"resident_bytes", rt.resident_bytes},
                       {"paged_bytes", rt.paged_bytes},
                       {"num_paged_experts", rt.num_paged_experts},
                       {"disk_read_bytes_per_s", rt.disk_read_bytes_per_s},
                       {"paged_loads_per_token", rt.paged_loads_per_token},
                       {"paged_time_s", rt.paged_time_s}};
  }
  return out;
}

Expected<Plan> plan_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return format_error(source, "expected a JSON object (a plan)");
  Reader top{j, "", source};
  Plan p;
  std::string s;
  HETMOE_ASSIGN_OR_RETURN(s, top.string("format"));
  if (s != kFormatName) return format_error(source, fmt::format("key 'format' is '{}', expected '{}'", s, kFormatName));
  uint64_t v = 0;
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("version"));
  if (v != kVersion) return format_error(source, fmt::format("key 'version' is {}, expected {}", v, kVersion));
  HETMOE_ASSIGN_OR_RETURN(p.model_name, top.string("model"));
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("num_layers", 4096));
  p.num_layers = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("num_experts", 4096));
  p.num_experts = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("num_experts_used", p.num_experts));
  p.num_experts_used = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("context_length", 1u << 24));
  p.context_length = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(p.kv_type, top.string("kv_type"));
  {
    // One type for K and V ("q8_0"), or K's and V's ("q8_0/q4_0"), as a run records it.
    const std::string_view text = p.kv_type;
    const size_t slash = text.find('/');
    const bool ok = slash == std::string_view::npos
                        ? parse_kv_cache_type(text).has_value()
                        : parse_kv_cache_type(text.substr(0, slash)).has_value() &&
                              parse_kv_cache_type(text.substr(slash + 1)).has_value();
    if (!ok)
      return format_error(source, fmt::format("key 'kv_type' is '{}', expected f16, f32, q8_0 or q4_0, or K/V "
                                              "types such as q8_0/q4_0",
                                              p.kv_type));
  }
  HETMOE_ASSIGN_OR_RETURN(p.strategy, top.string("strategy"));
  HETMOE_ASSIGN_OR_RETURN(p.embedding, top.device("embedding"));
  HETMOE_ASSIGN_OR_RETURN(p.output, top.device("output"));
  HETMOE_ASSIGN_OR_RETURN(v, top.u64("num_cpu_threads", 1u << 16));
  p.num_cpu_threads = static_cast<int>(v);
  const nlohmann::json* f = nullptr;
  HETMOE_ASSIGN_OR_RETURN(f, top.field("budgets"));
  Reader budgets{*f, "budgets", source};
  HETMOE_ASSIGN_OR_RETURN(p.vram_budget_bytes, budgets.u64("vram_bytes"));
  HETMOE_ASSIGN_OR_RETURN(p.ram_budget_bytes, budgets.u64("ram_bytes"));
  if (j.contains("prefill_crossover_tokens")) {
    HETMOE_ASSIGN_OR_RETURN(v, top.u64("prefill_crossover_tokens", 1u << 20));
    p.prefill_crossover_tokens = static_cast<uint32_t>(v);
  }
  HETMOE_ASSIGN_OR_RETURN(f, top.field("dynamic_placement"));
  Reader dyn{*f, "dynamic_placement", source};
  const nlohmann::json* enabled = nullptr;
  HETMOE_ASSIGN_OR_RETURN(enabled, dyn.field("enabled"));
  if (!enabled->is_boolean()) return format_error(source, "key 'dynamic_placement.enabled' must be true or false");
  p.dynamic.enabled = enabled->get<bool>();
  HETMOE_ASSIGN_OR_RETURN(p.dynamic.half_life_tokens, dyn.number("half_life_tokens"));
  HETMOE_ASSIGN_OR_RETURN(v, dyn.u64("replan_interval_tokens", UINT32_MAX));
  p.dynamic.replan_interval_tokens = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, dyn.u64("max_migrations_per_step", UINT32_MAX));
  p.dynamic.max_migrations_per_step = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(p.dynamic.hysteresis, dyn.number("hysteresis"));
  HETMOE_ASSIGN_OR_RETURN(p.dynamic.min_score_gap, dyn.number("min_score_gap"));
  if (!(p.dynamic.half_life_tokens > 0) || p.dynamic.replan_interval_tokens == 0)
    return format_error(source, "dynamic_placement: half_life_tokens and replan_interval_tokens must be > 0");

  HETMOE_ASSIGN_OR_RETURN(f, top.field("layers"));
  if (!f->is_array() || f->size() != p.num_layers)
    return format_error(source, fmt::format("key 'layers' must be an array of num_layers = {} entries", p.num_layers));
  p.layers.resize(p.num_layers);
  for (uint32_t l = 0; l < p.num_layers; ++l) {
    Reader r{(*f)[l], fmt::format("layers[{}]", l), source};
    if (!r.j.is_object()) return format_error(source, fmt::format("{} must be an object", r.path));
    LayerPlan& lp = p.layers[l];
    HETMOE_ASSIGN_OR_RETURN(lp.attention, r.device("attention"));
    lp.experts.assign(p.num_experts, Device::kCpu);
    std::vector<uint8_t> seen(p.num_experts, 0);
    for (const char* key : {"gpu_experts", "cpu_experts"}) {
      const nlohmann::json* ids = nullptr;
      HETMOE_ASSIGN_OR_RETURN(ids, r.field(key));
      if (!ids->is_array()) return format_error(source, fmt::format("key '{}' must be an array", r.where(key)));
      for (const auto& id : *ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() >= p.num_experts)
          return format_error(source, fmt::format("key '{}' has an expert id that is not in 0..{}", r.where(key),
                                                  p.num_experts - 1));
        const auto e = id.get<uint32_t>();
        if (seen[e]++)
          return format_error(source, fmt::format("{}: expert {} is listed twice", r.path, e));
        lp.experts[e] = std::strcmp(key, "gpu_experts") == 0 ? Device::kGpu : Device::kCpu;
      }
    }
    for (uint32_t e = 0; e < p.num_experts; ++e)
      if (!seen[e])
        return format_error(source, fmt::format("{}: expert {} is in neither gpu_experts nor cpu_experts", r.path, e));
    if (r.j.contains("numa_nodes")) {
      const nlohmann::json& nodes = r.j["numa_nodes"];
      if (!nodes.is_array() || nodes.size() != p.num_experts)
        return format_error(source, fmt::format("key '{}' must be an array of num_experts = {} integers",
                                                r.where("numa_nodes"), p.num_experts));
      for (const auto& n : nodes) {
        if (!n.is_number_integer() || n.get<int64_t>() < -1 || n.get<int64_t>() > 4096)
          return format_error(source, fmt::format("key '{}' has an entry outside -1..4096", r.where("numa_nodes")));
        lp.expert_numa_nodes.push_back(n.get<int32_t>());
      }
    }
    if (r.j.contains("paged_experts")) {
      const nlohmann::json& paged = r.j["paged_experts"];
      if (!paged.is_array()) return format_error(source, fmt::format("key '{}' must be an array", r.where("paged_experts")));
      for (const auto& id : paged) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() >= p.num_experts ||
            lp.experts[id.get<uint32_t>()] != Device::kCpu)
          return format_error(source, fmt::format("key '{}' has an id that is not a CPU expert of 0..{}",
                                                  r.where("paged_experts"), p.num_experts - 1));
        lp.paged_experts.push_back(id.get<int32_t>());
      }
    }
    HETMOE_ASSIGN_OR_RETURN(lp.gpu_bytes, r.u64("gpu_bytes"));
    HETMOE_ASSIGN_OR_RETURN(lp.cpu_bytes, r.u64("cpu_bytes"));
    HETMOE_ASSIGN_OR_RETURN(lp.gpu_time_s, r.number("gpu_time_s"));
    HETMOE_ASSIGN_OR_RETURN(lp.cpu_time_s, r.number("cpu_time_s"));
    HETMOE_ASSIGN_OR_RETURN(lp.sync_time_s, r.number("sync_time_s"));
    HETMOE_ASSIGN_OR_RETURN(lp.step_time_s, r.number("step_time_s"));
  }

  if (j.contains("ram_tier")) {
    Reader rt{j["ram_tier"], "ram_tier", source};
    if (!rt.j.is_object()) return format_error(source, "key 'ram_tier' must be an object");
    const nlohmann::json* flag = nullptr;
    for (const char* key : {"enabled", "lock"}) {
      HETMOE_ASSIGN_OR_RETURN(flag, rt.field(key));
      if (!flag->is_boolean()) return format_error(source, fmt::format("key '{}' must be true or false", rt.where(key)));
      (std::strcmp(key, "enabled") == 0 ? p.ram_tier.enabled : p.ram_tier.lock) = flag->get<bool>();
    }
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.room_bytes, rt.u64("room_bytes"));
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.resident_bytes, rt.u64("resident_bytes"));
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.paged_bytes, rt.u64("paged_bytes"));
    HETMOE_ASSIGN_OR_RETURN(v, rt.u64("num_paged_experts", UINT32_MAX));
    p.ram_tier.num_paged_experts = static_cast<uint32_t>(v);
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.disk_read_bytes_per_s, rt.number("disk_read_bytes_per_s"));
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.paged_loads_per_token, rt.number("paged_loads_per_token"));
    HETMOE_ASSIGN_OR_RETURN(p.ram_tier.paged_time_s, rt.number("paged_time_s"));
  }

  HETMOE_ASSIGN_OR_RETURN(f, top.field("totals"));
  Reader t{*f, "totals", source};
  HETMOE_ASSIGN_OR_RETURN(p.totals.gpu_bytes, t.u64("gpu_bytes"));
  HETMOE_ASSIGN_OR_RETURN(p.totals.cpu_bytes, t.u64("cpu_bytes"));
  HETMOE_ASSIGN_OR_RETURN(p.totals.gpu_kv_bytes, t.u64("gpu_kv_bytes"));
  HETMOE_ASSIGN_OR_RETURN(p.totals.cpu_kv_bytes, t.u64("cpu_kv_bytes"));
  HETMOE_ASSIGN_OR_RETURN(p.totals.gpu_workspace_bytes, t.u64("gpu_workspace_bytes"));
  HETMOE_ASSIGN_OR_RETURN(v, t.u64("num_gpu_experts", UINT32_MAX));
  p.totals.num_gpu_experts = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, t.u64("num_cpu_experts", UINT32_MAX));
  p.totals.num_cpu_experts = static_cast<uint32_t>(v);

  HETMOE_ASSIGN_OR_RETURN(f, top.field("prediction"));
  Reader r{*f, "prediction", source};
  PlanPrediction& pr = p.prediction;
  HETMOE_ASSIGN_OR_RETURN(v, r.u64("depth", UINT32_MAX));
  pr.depth = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(pr.decode_time_s, r.number("decode_time_s"));
  HETMOE_ASSIGN_OR_RETURN(pr.decode_tok_s, r.number("decode_tok_s"));
  HETMOE_ASSIGN_OR_RETURN(pr.gpu_time_s, r.number("gpu_time_s"));
  HETMOE_ASSIGN_OR_RETURN(pr.cpu_time_s, r.number("cpu_time_s"));
  HETMOE_ASSIGN_OR_RETURN(pr.output_time_s, r.number("output_time_s"));
  HETMOE_ASSIGN_OR_RETURN(v, r.u64("prefill_batch", UINT32_MAX));
  pr.prefill_batch = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(pr.prefill_tok_s, r.number("prefill_tok_s"));
  HETMOE_ASSIGN_OR_RETURN(v, r.u64("prefill_crossover_batch", UINT32_MAX));
  pr.prefill_crossover_batch = static_cast<uint32_t>(v);

  if (j.contains("notes")) {
    if (!j["notes"].is_array()) return format_error(source, "key 'notes' must be an array of strings");
    for (const auto& n : j["notes"]) {
      if (!n.is_string()) return format_error(source, "key 'notes' must be an array of strings");
      p.notes.push_back(n.get<std::string>());
    }
  }
  return p;
}

Expected<Plan> plan_load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return format_error(path, "not valid JSON");
  return plan_from_json(j, path);
}

Status plan_save(const Plan& plan, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return make_error(ErrorCode::kIo, fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
  out << plan_to_json(plan).dump(1) << "\n";
  out.close();
  if (!out) return make_error(ErrorCode::kIo, fmt::format("{}: write failed", path));
  return {};
}

}  // namespace hetmoe::placement
