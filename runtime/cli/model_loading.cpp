#include "runtime/cli/model_loading.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "runtime/cli/cli_util.h"

namespace hetmoe::cli {

Expected<Model> load_model_with_progress(std::string_view command, const std::string& path,
                                         gguf::File::LoadMode mode) {
  using Clock = std::chrono::steady_clock;
  const bool terminal = isatty(STDERR_FILENO) != 0;
  const auto start = Clock::now();
  auto last = start;
  bool shown = false;
  const auto progress = [&](uint64_t done, uint64_t total) {
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const double since_last = std::chrono::duration<double>(now - last).count();
    const bool finished = done >= total;
    if (total == 0 || elapsed < 0.5 || (!finished && since_last < (terminal ? 0.1 : 5.0)) || (finished && !shown))
      return;
    last = now;
    shown = true;
    const double fraction = static_cast<double>(done) / static_cast<double>(total);
    if (terminal) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      fmt::print(stderr, "\r\x1b[Khetmoe {}: loading [{}{}] {:3.0f} %  {} of {}  {:.0f} s", command,
                 std::string(static_cast<size_t>(filled), '#'), std::string(static_cast<size_t>(kWidth - filled), ' '),
                 100 * fraction, format_bytes(done), format_bytes(total), elapsed);
      if (finished) fmt::print(stderr, "\r\x1b[K");
    } else {
      fmt::print(stderr, "hetmoe {}: loading {}: {:.0f} % ({} of {}) in {:.0f} s\n", command, path, 100 * fraction,
                 format_bytes(done), format_bytes(total), elapsed);
    }
    std::fflush(stderr);
  };
  auto model = Model::load(path, mode, progress);
  if (model) fmt::print(stderr, "hetmoe {}: weights {}\n", command, model->file->load_note());
  return model;
}

}  // namespace hetmoe::cli
