#include "placement/expert_stats.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hetmoe::placement {
namespace {

constexpr const char* kFormatName = "hetmoe-expert-stats";
constexpr int kVersion = 1;

Error format_error(const std::string& source, const std::string& what) {
  return make_error(ErrorCode::kFormat, fmt::format("{}: {}", source, what));
}

}  // namespace

ExpertStats ExpertStats::zeros(uint32_t num_layers, uint32_t num_experts, uint32_t num_experts_used) {
  ExpertStats s;
  s.num_layers = num_layers;
  s.num_experts = num_experts;
  s.num_experts_used = num_experts_used;
  s.counts.assign(static_cast<size_t>(num_layers) * num_experts, 0);
  return s;
}

std::vector<double> ExpertStats::selection_probabilities() const {
  std::vector<double> p(counts.size());
  const double uniform = num_experts > 0 ? static_cast<double>(num_experts_used) / num_experts : 0.0;
  for (size_t i = 0; i < counts.size(); ++i)
    p[i] = num_tokens > 0 ? std::min(1.0, static_cast<double>(counts[i]) / static_cast<double>(num_tokens)) : uniform;
  return p;
}

Status ExpertStats::check_model(const ModelHparams& hp) const {
  if (num_layers != hp.num_layers || num_experts != hp.num_experts || num_experts_used != hp.num_experts_used)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("expert statistics of '{}' are for {} layers × {} experts (top-{}), the model has "
                                  "{} layers × {} experts (top-{})",
                                  model_name, num_layers, num_experts, num_experts_used, hp.num_layers,
                                  hp.num_experts, hp.num_experts_used));
  return {};
}

nlohmann::json expert_stats_to_json(const ExpertStats& s) {
  nlohmann::json rows = nlohmann::json::array();
  for (uint32_t l = 0; l < s.num_layers; ++l)
    rows.push_back(std::vector<uint64_t>(s.counts.begin() + static_cast<ptrdiff_t>(l) * s.num_experts,
                                         s.counts.begin() + static_cast<ptrdiff_t>(l + 1) * s.num_experts));
  return {{"format", kFormatName},          {"version", kVersion},
          {"model", s.model_name},          {"num_layers", s.num_layers},
          {"num_experts", s.num_experts},   {"num_experts_used", s.num_experts_used},
          {"num_tokens", s.num_tokens},     {"counts", std::move(rows)}};
}

Expected<ExpertStats> expert_stats_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return format_error(source, "expected a JSON object");
  if (!j.contains("format") || j["format"] != kFormatName)
    return format_error(source, fmt::format("key 'format' must be \"{}\"", kFormatName));
  if (!j.contains("version") || j["version"] != kVersion)
    return format_error(source, fmt::format("key 'version' must be {}", kVersion));
  auto get_uint = [&](const char* key, uint64_t max) -> Expected<uint64_t> {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0 || j[key].get<uint64_t>() > max)
      return format_error(source, fmt::format("key '{}' must be an integer in 0..{}", key, max));
    return j[key].get<uint64_t>();
  };
  ExpertStats s;
  uint64_t v = 0;
  HETMOE_ASSIGN_OR_RETURN(v, get_uint("num_layers", 4096));
  s.num_layers = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, get_uint("num_experts", 4096));
  s.num_experts = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(v, get_uint("num_experts_used", s.num_experts));
  s.num_experts_used = static_cast<uint32_t>(v);
  HETMOE_ASSIGN_OR_RETURN(s.num_tokens, get_uint("num_tokens", uint64_t{1} << 50));
  if (j.contains("model") && j["model"].is_string()) s.model_name = j["model"].get<std::string>();
  if (!j.contains("counts") || !j["counts"].is_array() || j["counts"].size() != s.num_layers)
    return format_error(source, fmt::format("key 'counts' must be an array of num_layers = {} rows", s.num_layers));
  s.counts.reserve(static_cast<size_t>(s.num_layers) * s.num_experts);
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    const nlohmann::json& row = j["counts"][l];
    if (!row.is_array() || row.size() != s.num_experts)
      return format_error(source, fmt::format("counts[{}] must be an array of num_experts = {} integers", l,
                                              s.num_experts));
    uint64_t sum = 0;
    for (const auto& c : row) {
      if (!c.is_number_integer() || c.get<int64_t>() < 0) return format_error(source, fmt::format("counts[{}] has a non-integer entry", l));
      const uint64_t n = c.get<uint64_t>();
      if (n > s.num_tokens)
        return format_error(source, fmt::format("counts[{}] has {} > num_tokens = {}", l, n, s.num_tokens));
      s.counts.push_back(n);
      sum += n;
    }
    if (sum != s.num_tokens * s.num_experts_used)
      return format_error(source, fmt::format("counts[{}] sums to {}, expected num_tokens × num_experts_used = {}", l,
                                              sum, s.num_tokens * s.num_experts_used));
  }
  return s;
}

Status expert_stats_save(const ExpertStats& stats, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return make_error(ErrorCode::kIo, fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
  out << expert_stats_to_json(stats).dump() << "\n";
  out.close();
  if (!out) return make_error(ErrorCode::kIo, fmt::format("{}: write failed", path));
  return {};
}

Expected<ExpertStats> expert_stats_load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return format_error(path, "not valid JSON");
  return expert_stats_from_json(j, path);
}

Expected<ExpertStats> expert_stats_merge(const ExpertStats& a, const ExpertStats& b) {
  if (a.num_layers != b.num_layers || a.num_experts != b.num_experts || a.num_experts_used != b.num_experts_used)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot merge expert statistics of different shapes: {} layers × {} experts "
                                  "(top-{}) and {} layers × {} experts (top-{})",
                                  a.num_layers, a.num_experts, a.num_experts_used, b.num_layers, b.num_experts,
                                  b.num_experts_used));
  ExpertStats m = a;
  if (m.model_name.empty()) m.model_name = b.model_name;
  m.num_tokens += b.num_tokens;
  for (size_t i = 0; i < m.counts.size(); ++i) m.counts[i] += b.counts[i];
  return m;
}

std::vector<double> prior_from_router_biases(std::span<const float> biases, uint32_t num_layers,
                                             uint32_t num_experts, uint32_t num_experts_used) {
  std::vector<double> p(static_cast<size_t>(num_layers) * num_experts, 0.0);
  const double k = std::min(num_experts_used, num_experts);
  for (uint32_t l = 0; l < num_layers; ++l) {
    const float* b = biases.data() + static_cast<size_t>(l) * num_experts;
    double* pl = p.data() + static_cast<size_t>(l) * num_experts;
    const double max_b = *std::max_element(b, b + num_experts);
    std::vector<double> q(num_experts);
    for (uint32_t e = 0; e < num_experts; ++e) q[e] = std::exp(static_cast<double>(b[e]) - max_b);
    // Water-filling: cap at 1, rescale the uncapped rest to the probability mass left (at most E rounds).
    std::vector<bool> capped(num_experts, false);
    for (uint32_t round = 0; round <= num_experts; ++round) {
      double mass_left = k, q_sum = 0;
      for (uint32_t e = 0; e < num_experts; ++e) {
        if (capped[e]) mass_left -= 1.0;
        else q_sum += q[e];
      }
      bool changed = false;
      for (uint32_t e = 0; e < num_experts; ++e) {
        if (capped[e]) continue;
        pl[e] = q_sum > 0 ? mass_left * q[e] / q_sum : 0.0;
        if (pl[e] > 1.0) capped[e] = changed = true;
      }
      if (!changed) break;
    }
    for (uint32_t e = 0; e < num_experts; ++e)
      if (capped[e]) pl[e] = 1.0;
  }
  return p;
}

Expected<std::vector<double>> router_bias_prior(const gguf::File& file, const ModelHparams& hp) {
  std::vector<float> biases(static_cast<size_t>(hp.num_layers) * hp.num_experts, 0.0f);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    const std::string name = fmt::format("blk.{}.ffn_gate_inp.bias", l);
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (!t) continue;
    if (t->type != TensorType::kF32 || t->num_elements != hp.num_experts || !t->data)
      return make_error(ErrorCode::kShape, fmt::format("{}: tensor '{}' must be F32 with {} elements", file.path(),
                                                       name, hp.num_experts));
    std::memcpy(&biases[static_cast<size_t>(l) * hp.num_experts], t->data, hp.num_experts * sizeof(float));
  }
  return prior_from_router_biases(biases, hp.num_layers, hp.num_experts, hp.num_experts_used);
}

}  // namespace hetmoe::placement
