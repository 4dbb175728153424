#include "runtime/cli/cli_args.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <string_view>
#include <utility>

#include "runtime/base/byte_size.h"

namespace hetmoe::cli {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// llama.cpp flags whose meaning differs here, with what to use instead.
const std::map<std::string, std::string>& llama_cpp_flags() {
  static const std::map<std::string, std::string> flags = {
      {"-ngl", "hetmoe places weights per expert, not per layer: --device gpu|cpu|auto chooses the device, "
               "--vram-budget SIZE the GPU memory to use, --n-cpu-moe N puts the first N blocks' experts on the CPU"},
      {"--n-gpu-layers", ""},
      {"--gpu-layers", ""},
      {"-cnv", "for a conversation use `hetmoe chat`"},
      {"--conversation", ""},
      {"--no-mmap", "use --load memory (the weights copied into memory) or --load mmap"},
      {"--mlock", "use --load memory: the weights are copied into (huge-page) memory"},
      {"-ub", "use --ubatch-size N (prefill tokens per forward batch)"},
  };
  return flags;
}

std::string llama_cpp_message(const std::string& flag) {
  const auto& flags = llama_cpp_flags();
  auto it = flags.find(flag);
  if (it == flags.end()) return {};
  if (!it->second.empty()) return it->second;
  if (flag == "--n-gpu-layers" || flag == "--gpu-layers") return flags.at("-ngl");
  return flags.at("-cnv");
}

bool is_number(const std::string& s) {
  double v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  return ec == std::errc() && p == end;
}

}  // namespace

CLI::Validator int_range(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t v = 0;
        const char* end = text.data() + text.size();
        auto [p, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc::result_out_of_range) return fmt::format("{} is out of range {}..{}", text, lo, hi);
        if (ec != std::errc() || p != end || text.empty()) return fmt::format("{} is not an integer", text);
        if (v < lo || v > hi) return fmt::format("{} is out of range {}..{}", text, lo, hi);
        return {};
      },
      fmt::format("INT in [{} - {}]", lo, hi), "int_range");
}

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        const char* end = text.data() + text.size();
        auto [p, ec] = std::from_chars(text.data(), end, v);
        if (ec != std::errc() || p != end || text.empty() || !std::isfinite(v))
          return fmt::format("{} is not a finite number", text);
        if (v <= 0) return fmt::format("{} must be above 0", text);
        return {};
      },
      "NUMBER > 0", "positive_number");
}

CLI::Validator byte_size_arg() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        auto bytes = parse_byte_size(text);
        if (!bytes) return bytes.error().message;
        const bool has_unit = std::any_of(text.begin(), text.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
        if (!has_unit && *bytes > 0 && *bytes < (1u << 20))
          return fmt::format("{} is {} bytes, surely a mistake: give a unit, e.g. {}MiB or {}GiB", text, *bytes, text,
                             text);
        return {};
      },
      "SIZE", "byte_size");
}

CLI::Validator date_arg() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        int y = 0, m = 0, d = 0;
        char tail = 0;
        if (text.size() != 10 || std::sscanf(text.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 ||
            text[4] != '-' || text[7] != '-')
          return fmt::format("{} is not a date YYYY-MM-DD", text);
        static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (m < 1 || m > 12 || d < 1 || d > kDays[m - 1] || (m == 2 && d == 29 && !leap))
          return fmt::format("{} is not a date in the calendar", text);
        return {};
      },
      "YYYY-MM-DD", "date");
}

std::optional<std::string> closest_word(const std::string& word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const std::string& c : candidates) {
    if (word.size() >= 2 && c.rfind(word, 0) == 0) return c;  // a prefix: `gen` → generate
    const size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::vector<std::string> expand_llama_cpp_aliases(int argc, const char* const* argv) {
  static const std::pair<std::string_view, std::string_view> kAliases[] = {{"-ctk", "--cache-type-k"},
                                                                           {"-ctv", "--cache-type-v"}};
  std::vector<std::string> out(argv, argv + argc);
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i] == "--") break;
    for (const auto& [alias, name] : kAliases)
      if (out[i] == alias || (out[i].size() > alias.size() && out[i].compare(0, alias.size(), alias) == 0 &&
                              out[i][alias.size()] == '='))
        out[i] = std::string(name) + out[i].substr(alias.size());
  }
  return out;
}

std::optional<std::string> scan_command_line(const CLI::App& app, int argc, const char* const* argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return std::nullopt;
  // The subcommand: the first word that is not an option.
  size_t cmd_idx = 0;
  while (cmd_idx < args.size() && args[cmd_idx].size() > 1 && args[cmd_idx][0] == '-') ++cmd_idx;
  if (cmd_idx == args.size()) return std::nullopt;  // --help, --version: CLI11 answers
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
  const std::string& word = args[cmd_idx];
  if (std::find(names.begin(), names.end(), word) == names.end()) {
    std::string msg = fmt::format("unknown command '{}'", word);
    if (auto s = closest_word(word, names)) msg += fmt::format("; did you mean '{}'?", *s);
    return msg + fmt::format(" (commands: {}; hetmoe --help)", fmt::join(names, ", "));
  }
  const CLI::App* sub = app.get_subcommand(word);
  std::vector<std::string> long_names;
  std::vector<std::string> short_names;
  for (const CLI::Option* o : sub->get_options()) {
    for (const std::string& n : o->get_lnames()) long_names.push_back("--" + n);
    for (const std::string& n : o->get_snames()) short_names.push_back("-" + n);
  }
  const std::string where = fmt::format("hetmoe {} --help", word);
  for (size_t i = cmd_idx + 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-' || is_number(a)) continue;
    const std::string flag = a.substr(0, a.find('='));
    if (std::string m = llama_cpp_message(flag); !m.empty() &&
        std::find(long_names.begin(), long_names.end(), flag) == long_names.end())
      return fmt::format("{}: not a hetmoe {} option; {}", flag, word, m);
    if (a[1] == '-') {
      if (std::find(long_names.begin(), long_names.end(), flag) != long_names.end()) continue;
      std::string msg = fmt::format("{}: unknown option", flag);
      if (auto s = closest_word(flag, long_names)) msg += fmt::format("; did you mean {}?", *s);
      return msg + fmt::format(" ({})", where);
    }
    // A short option: -x, or -xVALUE. Several letters after one dash (-ngl, -cnv) would be split by CLI11 into
    // -n gl: refused as an unknown option instead.
    const std::string short_flag = a.substr(0, 2);
    const bool known = std::find(short_names.begin(), short_names.end(), short_flag) != short_names.end();
    const bool letters = std::all_of(a.begin() + 1, a.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
    if (known && (a.size() == 2 || !letters)) continue;
    std::string msg = fmt::format("{}: unknown option", a);
    if (auto s = closest_word("-" + a, long_names)) msg += fmt::format("; did you mean {}?", *s);
    else if (a.size() > 2 && known) msg += fmt::format("; to give {} a value, write {} {}", short_flag, short_flag, a.substr(2));
    return msg + fmt::format(" ({})", where);
  }
  return std::nullopt;
}

}  // namespace hetmoe::cli
