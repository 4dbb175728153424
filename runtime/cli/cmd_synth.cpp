// hetmoe synth: writes a gpt-oss GGUF with random weights in the layout of the published file (runtime/model/synth.h).
#include <fmt/format.h>

#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>

#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/model/synth.h"

namespace hetmoe::cli {
namespace {

constexpr double kProgressIntervalS = 3.0;

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

/// Lines of a .tiktoken ranks file (one token per line), counted without parsing.
Expected<uint64_t> count_ranks(const std::string& path) {
  HETMOE_ASSIGN_OR_RETURN(const std::string text, read_input_file("--vocab", path));
  uint64_t n = 0;
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '\n' && i > 0 && text[i - 1] != '\n') ++n;
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

int run_synth(const SynthOptions& options, const std::string& out_path) {
  // The output: written to FILE.tmp and renamed, so only a regular file (or a new one) can be the target.
  if (auto s = check_output_path("-o", out_path); !s) return report_error("synth", s.error());
  struct stat st {};
  if (::lstat(out_path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return report_error("synth", make_error(ErrorCode::kInvalidArgument,
                                            fmt::format("-o {}: not a regular file; synth writes FILE.tmp and renames "
                                                        "it over FILE, which would replace it",
                                                        out_path)));
  auto preset = synth_find_preset(options.preset);
  if (!preset) return report_error("synth", preset.error());
  if (!options.vocab_path.empty()) {
    auto num_ranks = count_ranks(options.vocab_path);
    if (!num_ranks) return report_error("synth", num_ranks.error());
    if (*num_ranks > preset->num_regular_tokens)
      fmt::print(stderr,
                 "hetmoe synth: --vocab {}: the {} preset keeps the lowest {} of its {} tokens (vocabulary {} with the "
                 "harmony specials); --preset gpt-oss-20b keeps them all\n",
                 options.vocab_path, options.preset, preset->num_regular_tokens, *num_ranks, preset->vocab_size);
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_report = start;
  uint64_t total_bytes = 0;
  auto report = [&](const SynthProgress& p) {
    total_bytes = p.total_bytes;
    if (g_interrupted) return false;
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_report).count() < kProgressIntervalS) return true;
    last_report = now;
    const double elapsed_s = std::chrono::duration<double>(now - start).count();
    fmt::print(stderr, "hetmoe synth: {:5.1f}%  {} of {}  tensor {} of {}  {:.0f} s\n",
               100.0 * static_cast<double>(p.bytes_written) / static_cast<double>(p.total_bytes),
               format_bytes(p.bytes_written), format_bytes(p.total_bytes), p.num_tensors_done, p.num_tensors,
               elapsed_s);
    return true;
  };
  // Ctrl-C cancels between chunks, so the partial FILE.tmp is deleted.
  g_interrupted = 0;
  const auto previous_handler = std::signal(SIGINT, on_interrupt);
  const Status written = synth_write(options, out_path, report);
  std::signal(SIGINT, previous_handler);
  if (!written) return report_error("synth", written.error());
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  fmt::print(stderr, "hetmoe synth: wrote {}: {} ({} bytes) in {:.1f} s, {:.0f} MB/s\n", out_path,
             format_bytes(total_bytes), total_bytes, elapsed_s,
             elapsed_s > 0 ? static_cast<double>(total_bytes) * 1e-6 / elapsed_s : 0.0);
  return 0;
}

}  // namespace

void add_synth_command(CLI::App& app, int& exit_code) {
  struct Args {
    SynthOptions options;
    std::string out_path;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "synth", "Write a gpt-oss GGUF with random weights and the exact layout of the published file");
  std::string preset_names;
  for (const auto& p : synth_presets()) preset_names += (preset_names.empty() ? "" : ", ") + std::string(p.name);
  cmd->add_option("--preset", args->options.preset, "Model shape: " + preset_names)->required();
  cmd->add_option("-o,--output", args->out_path, "Output GGUF file (written to FILE.tmp, then renamed)")
      ->required();
  cmd->add_option("--seed", args->options.seed, "Random seed; the file is a pure function of it")
      ->capture_default_str();
  cmd->add_option("--router-skew", args->options.router_skew,
                  "S >= 0: router bias -S*ln(1+r) over a per-layer random ranking r of the experts (hot experts)")
      ->capture_default_str();
  cmd->add_option("--vocab", args->options.vocab_path,
                  "o200k .tiktoken ranks file: real byte-level BPE tokens and merges (default: placeholder words)");
  cmd->callback([args, &exit_code] { exit_code = run_synth(args->options, args->out_path); });
}

}  // namespace hetmoe::cli
