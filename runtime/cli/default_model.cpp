#include "runtime/cli/default_model.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "runtime/model/synth.h"

namespace hetmoe::cli {
namespace {

std::filesystem::path cache_dir() {
  if (const char* d = std::getenv("HETMOE_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::filesystem::path(d) / "hetmoe";
  if (const char* d = std::getenv("HOME"); d && *d) return std::filesystem::path(d) / ".cache" / "hetmoe";
  return ".hetmoe-cache";
}

}  // namespace

Expected<std::string> model_or_default(const std::string& given) {
  if (!given.empty()) return given;
  const std::filesystem::path dir = cache_dir();
  const std::filesystem::path path = dir / "synth-tiny-seed0.gguf";
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) return path.string();
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(ErrorCode::kIo, fmt::format("{}: cannot create the cache directory: {}", dir.string(),
                                                  ec.message()));
  fmt::print(stderr, "no model given (-m): writing the synthetic tiny model (random weights) to {}\n", path.string());
  SynthOptions options;
  options.preset = "tiny";
  options.seed = 0;
  options.router_skew = 1.0f;
  if (auto s = synth_write(options, path.string()); !s) return s.error();
  return path.string();
}

}  // namespace hetmoe::cli
