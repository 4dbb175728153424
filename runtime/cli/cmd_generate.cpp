// hetmoe generate [-m MODEL] -p TEXT -n N: the answer to a one-turn harmony conversation (system message with the
// reasoning effort, optional developer instructions from --system, the prompt as the user message), streamed to
// stdout: only the final channel, unless --show-reasoning. --raw: plain completion of the prompt text instead.
// Timings on stderr. With no model given, the synthetic tiny model (hetmoe synth --preset tiny) is written to the
// cache directory once and used, so a fresh clone can run end to end without a download.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <unistd.h>

#include "profiler/memory.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_options.h"
#include "runtime/cli/run_options.h"
#include "runtime/cli/trace_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/app/generation.h"
#include "runtime/text/harmony.h"
#include "runtime/model/model.h"
#include "runtime/app/sampler.h"
#include "runtime/model/synth.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::cli {
namespace {

struct GenerateArgs {
  std::string model_path;
  std::string prompt = "Once upon a time";
  int num_predict = 64;
  RunArgs run;
  SamplingArgs sampling;
  bool parse_special = false;
  bool raw = false;
  std::string system;            // developer instructions (harmony)
  std::string reasoning = "medium";
  std::string date;              // current date in the system message (default: today)
  bool show_reasoning = false;
};

}  // namespace

/// $HETMOE_CACHE_DIR, else $XDG_CACHE_HOME/hetmoe, else $HOME/.cache/hetmoe, else ./.hetmoe-cache.
std::filesystem::path cache_dir() {
  if (const char* d = std::getenv("HETMOE_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::filesystem::path(d) / "hetmoe";
  if (const char* d = std::getenv("HOME"); d && *d) return std::filesystem::path(d) / ".cache" / "hetmoe";
  return ".hetmoe-cache";
}

/// The embedded default model: the synthetic tiny preset (seed 0), written once to the cache directory.
Expected<std::string> default_model() {
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

namespace {

int run_generate(const GenerateArgs& args) {
  const double t_start = profiler::now_seconds();
  auto forward_options = cli::forward_options(args.run);
  if (!forward_options) return report_error("generate", forward_options.error());
  auto sampler_params = cli::sampler_params(args.sampling);
  if (!sampler_params) return report_error("generate", sampler_params.error());
  auto trace = start_trace(args.run.trace_path);
  if (!trace) return report_error("generate", trace.error());
  std::string model_path = args.model_path;
  if (model_path.empty()) {
    auto p = default_model();
    if (!p) return report_error("generate", p.error());
    model_path = *p;
  }
  auto load_mode = cli::load_mode(args.run);
  if (!load_mode) return report_error("generate", load_mode.error());
  auto model = Model::load(model_path, *load_mode);
  if (!model) return report_error("generate", model.error());
  auto tokenizer = Tokenizer::from_gguf(*model->file);
  if (!tokenizer) return report_error("generate", tokenizer.error());

  auto reasoning = harmony::parse_reasoning_effort(args.reasoning);
  if (!reasoning) {
    return report_error("generate", make_error(ErrorCode::kInvalidArgument,
                                               fmt::format("--reasoning {}: expected low, medium or high",
                                                           args.reasoning)));
  }
  std::vector<int32_t> prompt_ids;
  if (args.raw) {
    prompt_ids = tokenizer->encode(args.prompt, args.parse_special);
  } else {
    harmony::Conversation conversation;
    conversation.options.reasoning = *reasoning;
    conversation.options.developer_instructions = args.system;
    conversation.options.current_date = args.date;
    conversation.messages.push_back(harmony::Message{"user", "", "", "", args.prompt});
    auto rendered = harmony::render_for_completion(*tokenizer, conversation);
    if (!rendered) return report_error("generate", rendered.error());
    prompt_ids = std::move(*rendered);
  }
  std::vector<std::string> forward_notes;
  auto plan = make_run_plan(*model, args.run.device, args.run.config ? &*args.run.config : nullptr, *forward_options,
                            &forward_notes);
  if (!plan) {
    print_notes("generate", forward_notes);
    return report_error("generate", plan.error());
  }
  forward_options->plan = &*plan;
  // Every run counts expert selections (--stats-out saves them; the CPU path counts, the reference does not).
  placement::ExpertStats expert_counts = run_expert_stats(*model);
  if (!forward_options->use_reference) forward_options->expert_counts = expert_counts.counts.data();
  auto forward = create_forward(*model, *forward_options, &forward_notes);
  print_notes("generate", forward_notes);
  if (!forward) return report_error("generate", forward.error());
  const double t_loaded = profiler::now_seconds();

  const uint64_t seed = sampler_params->seed;
  Sampler sampler(*sampler_params);
  const std::vector<int32_t> stop_ids = tokenizer->end_of_generation_ids();
  std::vector<float> logits(model->hparams.vocab_size);  // (vocab_size)
  StreamDecoder stream(*tokenizer);
  Status stream_error;
  std::optional<harmony::Parser> parser;
  if (!args.raw) {
    auto created = harmony::Parser::create(*tokenizer);
    if (!created) return report_error("generate", created.error());
    parser.emplace(std::move(*created));
  }
  harmony::DisplayFormatter display(args.show_reasoning, isatty(STDOUT_FILENO) != 0);
  std::vector<harmony::Event> events;
  auto print_events = [&] {
    for (const harmony::Event& event : events) fmt::print("{}", display.format(event));
    std::fflush(stdout);
    events.clear();
  };

  if (args.raw) {
    fmt::print("{}", args.prompt);
    std::fflush(stdout);
  }
  auto stats = generate_tokens(**forward, sampler, prompt_ids, args.num_predict, stop_ids, logits, [&](int32_t token) {
    if (parser) {
      parser->push(token, &events);
      print_events();
      return true;
    }
    auto piece = stream.push(token);
    if (!piece) {
      stream_error = piece.error();
      return false;
    }
    fmt::print("{}", *piece);
    std::fflush(stdout);
    return true;
  });
  if (!stats) return report_error("generate", stats.error());
  if (!stream_error) return report_error("generate", stream_error.error());
  if (parser) {
    if (stats->stop_token) parser->push(*stats->stop_token, &events);
    parser->finish(&events);
    print_events();
    fmt::print("\n");
  } else {
    fmt::print("{}\n", stream.flush());
  }

  fmt::print(stderr,
             "\nmodel {} | load {:.2f} s ({}) | prefill {} tokens in {:.2f} s ({:.2f} tok/s) | decode {} tokens in {:.2f} s "
             "({:.2f} tok/s) | {}, {} path, seed {} | peak RSS {}\n",
             model_path, t_loaded - t_start, model->file->in_memory() ? "into memory" : "mmap", stats->num_prompt_tokens, stats->prefill_seconds,
             stats->prefill_tok_per_s(), stats->num_generated, stats->decode_seconds, stats->decode_tok_per_s(),
             threads_text(*forward_options), forward_path_name(*forward_options, forward->get()), seed,
             format_bytes(profiler::peak_rss_bytes()));
  if (!args.run.stats_out.empty())
    if (auto s = save_run_expert_stats(std::move(expert_counts), args.run.stats_out); !s)
      return report_error("generate", s.error());
  if (auto s = finish_trace(*trace); !s) return report_error("generate", s.error());
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("generate", "Answer a prompt as a one-turn harmony chat (or --raw: plain completion), "
                                             "streamed to stdout; load time, prefill and decode tok/s on stderr. "
                                             "Without -m, uses a synthetic tiny model.");
  auto args = std::make_shared<GenerateArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF model file (default: the synthetic tiny model, made once)");
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text")->capture_default_str();
  cmd->add_option("-n,--n-predict", args->num_predict, "Tokens to generate")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  add_run_options(cmd, args->run);
  add_sampling_options(cmd, args->sampling);
  cmd->add_flag("--raw", args->raw, "Plain completion of the prompt text (no harmony conversation)");
  cmd->add_option("--system", args->system, "Instructions for the model (the harmony developer message)");
  cmd->add_option("--reasoning", args->reasoning, "Reasoning effort in the system message: low, medium or high")
      ->check(CLI::IsMember({"low", "medium", "high"}))
      ->capture_default_str();
  cmd->add_option("--date", args->date, "Current date in the system message, YYYY-MM-DD (default: today)");
  cmd->add_flag("--show-reasoning", args->show_reasoning,
                "Also print the analysis and commentary channels (dimmed on a terminal)");
  cmd->add_flag("--parse-special", args->parse_special,
                "With --raw: turn special-token text like <|start|> into its token");
  cmd->callback([args, &exit_code] {
    exit_code = run_generate(*args);
  });
}

}  // namespace hetmoe::cli
