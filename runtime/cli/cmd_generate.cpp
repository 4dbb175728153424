// hetmoe generate [-m MODEL] -p TEXT -n N: the answer to a one-turn harmony conversation (system message with the
// reasoning effort, optional developer instructions from --system, the prompt as the user message), streamed to
// stdout: only the final channel, unless --show-reasoning. --raw: plain completion of the prompt text instead.
// Timings on stderr. With no model given, the synthetic tiny model (hetmoe synth --preset tiny) is written to the
// cache directory once and used, so a fresh clone can run end to end without a download.
#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "profiler/memory.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/default_model.h"
#include "runtime/cli/interrupt.h"
#include "runtime/cli/model_loading.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_options.h"
#include "runtime/cli/run_options.h"
#include "runtime/cli/trace_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/app/generation.h"
#include "runtime/text/harmony.h"
#include "runtime/model/model.h"
#include "runtime/app/sampler.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::cli {
namespace {

struct GenerateArgs {
  std::string model_path;
  std::string prompt = "Once upon a time";
  std::string prompt_file;       // -f FILE ('-': stdin)
  int num_predict = 64;          // -1: until the context is full
  RunArgs run;
  SamplingArgs sampling;
  bool parse_special = false;
  bool raw = false;
  std::string system;            // developer instructions (harmony)
  std::string reasoning = "medium";
  std::string date;              // current date in the system message (default: today)
  bool show_reasoning = false;
  bool prompt_given = false;     // -p on the command line
};

/// The prompt: -f FILE, -p - (stdin), -p TEXT, else stdin when it is a pipe or a file with text in it, else the
/// default. Errors: read_input_file's.
Expected<std::string> prompt_text(const GenerateArgs& args) {
  if (!args.prompt_file.empty()) return read_input_file("-f", args.prompt_file, /*allow_stdin=*/true);
  if (args.prompt_given) {
    if (args.prompt == "-") return read_input_file("-p", "-", /*allow_stdin=*/true);
    return args.prompt;
  }
  struct stat st {};
  if (::fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISREG(st.st_mode)) && !isatty(STDIN_FILENO)) {
    auto text = read_input_file("stdin", "-", /*allow_stdin=*/true);
    if (!text) return text.error();
    if (!text->empty()) return text;
  }
  return args.prompt;
}

/// Checks every path the run will read or write before any work (docs/cli.md). Errors: kIo naming the flag.
Status check_paths(const GenerateArgs& args) {
  if (!args.model_path.empty()) HETMOE_RETURN_IF_ERROR(check_input_file("-m", args.model_path));
  if (!args.run.stats_out.empty()) HETMOE_RETURN_IF_ERROR(check_output_path("--stats-out", args.run.stats_out));
  if (!args.run.trace_path.empty()) HETMOE_RETURN_IF_ERROR(check_output_path("--trace", args.run.trace_path));
  return {};
}

int run_generate(const GenerateArgs& args) {
  const double t_start = profiler::now_seconds();
  install_interrupt_handler();
  auto forward_options = cli::forward_options(args.run);
  if (!forward_options) return report_error("generate", forward_options.error());
  if (auto s = check_paths(args); !s) return report_error("generate", s.error());
  auto sampler_params = cli::sampler_params(args.sampling);
  if (!sampler_params) return report_error("generate", sampler_params.error());
  auto prompt = prompt_text(args);
  if (!prompt) return report_error("generate", prompt.error());
  auto trace = start_trace(args.run.trace_path);
  if (!trace) return report_error("generate", trace.error());
  auto model_path = model_or_default(args.model_path);
  if (!model_path) return report_error("generate", model_path.error());
  auto load_mode = cli::load_mode(args.run);
  if (!load_mode) return report_error("generate", load_mode.error());
  auto model = load_model_with_progress("generate", *model_path, *load_mode);
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
    prompt_ids = tokenizer->encode(*prompt, args.parse_special);
  } else {
    harmony::Conversation conversation;
    conversation.options.reasoning = *reasoning;
    conversation.options.developer_instructions = args.system;
    conversation.options.current_date = args.date;
    conversation.messages.push_back(harmony::Message{"user", "", "", "", *prompt});
    auto rendered = harmony::render_for_completion(*tokenizer, conversation);
    if (!rendered) return report_error("generate", rendered.error());
    prompt_ids = std::move(*rendered);
  }
  // Refused before any work (and before the prompt is echoed): a prompt that does not fit the context.
  const uint64_t context = forward_options->context_length;
  if (prompt_ids.empty() && args.raw)
    return report_error("generate", make_error(ErrorCode::kInvalidArgument, "the prompt is empty"));
  const uint64_t min_new = args.num_predict < 0 ? 1 : static_cast<uint64_t>(args.num_predict);
  if (prompt_ids.size() + min_new > context)
    return report_error("generate",
                        make_error(ErrorCode::kInvalidArgument,
                                   fmt::format("the prompt ({} tokens) plus {} generated tokens need {} positions but "
                                               "the context is {} (-c)",
                                               prompt_ids.size(), min_new, prompt_ids.size() + min_new, context)));
  const int num_predict =
      args.num_predict >= 0 ? args.num_predict : static_cast<int>(context - prompt_ids.size());
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
  // A write to stdout that fails (a full disk, a closed stdout) stops the generation: nobody reads the rest.
  const auto stdout_ok = [] { return std::fflush(stdout) == 0 && !std::ferror(stdout); };
  auto print_events = [&] {
    for (const harmony::Event& event : events) fmt::print("{}", display.format(event));
    events.clear();
    return stdout_ok();
  };

  if (args.raw) fmt::print("{}", *prompt);
  std::optional<GenerationStats> stats;
  if (stdout_ok() && !interrupted()) {
    auto generated = generate_tokens(**forward, sampler, prompt_ids, num_predict, stop_ids, logits, [&](int32_t token) {
      if (parser) {
        parser->push(token, &events);
        return print_events() && !interrupted();
      }
      auto piece = stream.push(token);
      if (!piece) {
        stream_error = piece.error();
        return false;
      }
      fmt::print("{}", *piece);
      return stdout_ok() && !interrupted();
    });
    if (!generated) return report_error("generate", generated.error());
    stats = *generated;
  }
  if (!stream_error) return report_error("generate", stream_error.error());
  if (stats) {
    if (parser) {
      if (stats->stop_token) parser->push(*stats->stop_token, &events);
      parser->finish(&events);
      print_events();
      fmt::print("\n");
    } else {
      fmt::print("{}\n", stream.flush());
    }
  }
  const bool output_failed = !stdout_ok();
  const int output_errno = errno;
  if (interrupted()) fmt::print(stderr, "\nhetmoe generate: interrupted\n");

  const GenerationStats s = stats.value_or(GenerationStats{});
  fmt::print(stderr,
             "\nmodel {} | load {:.2f} s ({}) | prefill {} tokens in {:.2f} s ({:.2f} tok/s) | decode {} tokens in {:.2f} s "
             "({:.2f} tok/s) | {}, {} path, seed {} | peak RSS {}\n",
             *model_path, t_loaded - t_start, model->file->in_memory() ? "into memory" : "mmap", s.num_prompt_tokens,
             s.prefill_seconds, s.prefill_tok_per_s(), s.num_generated, s.decode_seconds, s.decode_tok_per_s(),
             threads_text(*forward_options), forward_path_name(*forward_options, forward->get()), seed,
             format_bytes(profiler::peak_rss_bytes()));
  int rc = 0;
  if (!args.run.stats_out.empty() && s.num_prompt_tokens > 0)
    if (auto st = save_run_expert_stats(std::move(expert_counts), args.run.stats_out); !st)
      rc = report_error("generate", st.error());
  if (auto st = finish_trace(*trace); !st) rc = report_error("generate", st.error());
  if (output_failed)
    return report_error("generate", make_error(ErrorCode::kIo, fmt::format("writing to stdout failed: {}",
                                                                           std::strerror(output_errno))));
  if (interrupted()) return kExitInterrupted;
  return rc;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("generate", "Answer a prompt as a one-turn harmony chat (or --raw: plain completion), "
                                             "streamed to stdout; load time, prefill and decode tok/s on stderr. "
                                             "Without -m, uses a synthetic tiny model.");
  auto args = std::make_shared<GenerateArgs>();
  auto* model = cmd->add_option("-m,--model", args->model_path,
                                 "GGUF model file (default: the synthetic tiny model, made once)");
  cmd->add_option("MODEL", args->model_path, "The model file, as -m")->excludes(model);
  auto* prompt = cmd->add_option("-p,--prompt", args->prompt,
                                 "Prompt text; '-' reads it from stdin (so does a pipe on stdin without -p)")
                     ->capture_default_str();
  cmd->add_option("-f,--file", args->prompt_file, "Read the prompt from FILE ('-': stdin)")
      ->option_text("FILE")
      ->excludes(prompt);
  cmd->add_option("-n,--n-predict", args->num_predict, "Tokens to generate; -1: until the context is full")
      ->check(int_range(-1, 1 << 24))
      ->capture_default_str();
  add_run_options(cmd, args->run);
  add_sampling_options(cmd, args->sampling);
  cmd->add_flag("--raw", args->raw, "Plain completion of the prompt text (no harmony conversation)");
  cmd->add_option("--system", args->system, "Instructions for the model (the harmony developer message)");
  cmd->add_option("--reasoning", args->reasoning, "Reasoning effort in the system message: low, medium or high")
      ->check(CLI::IsMember({"low", "medium", "high"}))
      ->capture_default_str();
  cmd->add_option("--date", args->date, "Current date in the system message, YYYY-MM-DD (default: today)")
      ->check(date_arg());
  cmd->add_flag("--show-reasoning", args->show_reasoning,
                "Also print the analysis and commentary channels (dimmed on a terminal)");
  cmd->add_flag("--parse-special", args->parse_special,
                "With --raw: turn special-token text like <|start|> into its token");
  cmd->callback([args, prompt, &exit_code] {
    args->prompt_given = prompt->count() > 0;
    exit_code = run_generate(*args);
  });
}

}  // namespace hetmoe::cli
