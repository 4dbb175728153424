// hetmoe chat -m MODEL: interactive chat in the terminal over the harmony format.
//
// Each user line is one turn. The history is kept as harmony messages and re-rendered every turn (earlier reasoning
// is dropped, as the format wants). The forward pass keeps its KV cache between turns and cannot roll it back (the
// sliding-window layers overwrite old positions in a ring), so: when the new rendering extends the tokens already
// processed, only the new suffix is fed; otherwise (earlier analysis dropped, /reasoning changed the system message,
// a re-encoded answer differs from the sampled tokens) the pass is reset and the whole conversation is prefilled.
//
// On a terminal: line editing and history (libedit), reasoning dimmed (or hidden with --hide-reasoning), Ctrl-C stops
// the answer being written, Ctrl-C twice at the prompt (or Ctrl-D, /exit) leaves. When stdin is not a terminal the
// turns are read line by line from it (no line editing), so a chat can be driven through a pipe.
#include <editline/readline.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <langinfo.h>

#include <atomic>
#include <cerrno>
#include <clocale>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/default_model.h"
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

struct ChatArgs {
  std::string model_path;
  std::string system;  // developer instructions
  std::string reasoning = "medium";
  std::string date;
  bool hide_reasoning = false;
  int max_answer_tokens = 2048;
  RunArgs run;
  SamplingArgs sampling;
};

// Set by SIGINT; cleared by the chat loop once it has acted on it.
std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted.store(true); }

void install_sigint_handler() {
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: a blocking read returns EINTR, so the prompt sees Ctrl-C
  sigaction(SIGINT, &action, nullptr);
}

// libedit's character source: one UTF-8 character from stdin as a code point; -1 (libedit: end of input) on end of
// file, on an error, or when SIGINT interrupted the read.
extern "C" int read_code_point(FILE*) {
  auto read_byte = []() -> int {
    unsigned char byte = 0;
    for (;;) {
      const ssize_t n = ::read(STDIN_FILENO, &byte, 1);
      if (n == 1) return byte;
      if (n < 0 && errno == EINTR && !g_interrupted.load()) continue;
      return -1;
    }
  };
  const int lead = read_byte();
  if (lead < 0x80) return lead;
  int num_more = 0;
  int code_point = 0;
  if ((lead & 0xE0) == 0xC0) {
    num_more = 1;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    num_more = 2;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    num_more = 3;
    code_point = lead & 0x07;
  } else {
    return 0xFFFD;
  }
  for (int i = 0; i < num_more; ++i) {
    const int next = read_byte();
    if (next < 0) return -1;
    if ((next & 0xC0) != 0x80) return 0xFFFD;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  return code_point;
}

/// Where user lines come from: libedit on a terminal, std::getline otherwise.
class LineReader {
 public:
  explicit LineReader(bool terminal) : terminal_(terminal) {
    if (terminal_) {
      // libedit converts typed characters with the C library's multibyte functions: make them UTF-8.
      const char* locale = std::setlocale(LC_CTYPE, "");
      if (locale == nullptr || std::string_view(nl_langinfo(CODESET)) != "UTF-8") std::setlocale(LC_CTYPE, "C.UTF-8");
      rl_catch_signals = 0;
      rl_getc_function = read_code_point;
      using_history();
    }
  }

  /// The next line, or nullopt at end of input (or, on a terminal, when Ctrl-C interrupted the prompt: check
  /// g_interrupted).
  std::optional<std::string> read(const char* prompt) {
    if (!terminal_) {
      std::string line;
      if (!std::getline(std::cin, line)) return std::nullopt;
      return line;
    }
    char* raw = readline(prompt);
    if (raw == nullptr) return std::nullopt;
    std::string line(raw);
    std::free(raw);
    if (!line.empty()) add_history(line.c_str());
    return line;
  }

 private:
  bool terminal_;
};

/// One chat session: the model, its forward pass, the conversation and the tokens the pass holds.
class ChatSession {
 public:
  ChatSession(const ChatArgs& args, const Model& model, const Tokenizer& tokenizer, std::unique_ptr<ForwardPass> forward,
              harmony::ConversationOptions options, const SamplerParams& params)
      : args_(args),
        tokenizer_(tokenizer),
        forward_(std::move(forward)),
        sampler_(params),
        logits_(model.hparams.vocab_size),
        stop_ids_(tokenizer.end_of_generation_ids()),
        display_(!args.hide_reasoning, isatty(STDOUT_FILENO) != 0) {
    conversation_.options = std::move(options);
  }

  void reset() {
    conversation_.messages.clear();
    forward_->reset();
    processed_.clear();
  }

  harmony::ConversationOptions& options() { return conversation_.options; }

  /// Runs one turn: the user's text in, the model's answer streamed out. Errors: rendering, the context is full
  /// (the user message is then taken back), the forward pass.
  Status turn(const std::string& user_text) {
    conversation_.messages.push_back(harmony::Message{"user", "", "", "", user_text});
    auto prompt = harmony::render_for_completion(tokenizer_, conversation_);
    if (!prompt) {
      conversation_.messages.pop_back();
      return prompt.error();
    }
    // Feed only what the pass does not hold yet, when the rendering extends it; else start over.
    const bool extends = !processed_.empty() && processed_.size() < prompt->size() &&
                         std::equal(processed_.begin(), processed_.end(), prompt->begin()) &&
                         processed_.size() == forward_->num_positions();
    if (!extends) {
      forward_->reset();
      processed_.clear();
    }
    const std::span<const int32_t> suffix = std::span<const int32_t>(*prompt).subspan(processed_.size());
    const uint64_t free_positions = forward_->context_length() - static_cast<uint64_t>(forward_->num_positions());
    if (suffix.size() + 1 > free_positions) {
      conversation_.messages.pop_back();
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("the conversation ({} tokens) no longer fits the context of {} tokens: /reset "
                                    "to start over, or a larger -c",
                                    prompt->size(), forward_->context_length()));
    }
    const int max_new =
        static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(args_.max_answer_tokens), free_positions - suffix.size()));

    auto parser = harmony::Parser::create(tokenizer_);
    if (!parser) return parser.error();
    std::vector<harmony::Event> events;
    auto show = [&] {
      for (const harmony::Event& event : events) fmt::print("{}", display_.format(event));
      std::fflush(stdout);
      events.clear();
    };
    std::vector<int32_t> generated;
    g_interrupted.store(false);
    auto stats = generate_tokens(*forward_, sampler_, suffix, max_new, stop_ids_, logits_, [&](int32_t token) {
      generated.push_back(token);
      parser->push(token, &events);
      show();
      return !g_interrupted.load();
    });
    if (!stats) {
      forward_->reset();
      processed_.clear();
      conversation_.messages.pop_back();
      return stats.error();
    }
    const bool interrupted = stats->stopped_by_caller;
    if (stats->stop_token) parser->push(*stats->stop_token, &events);
    parser->finish(&events);
    show();
    if (display_.in_reasoning()) fmt::print("\x1b[0m");
    fmt::print("\n");
    if (interrupted) fmt::print(stderr, "(stopped)\n");
    g_interrupted.store(false);

    // The pass now holds the suffix and every generated token it was fed (all but the last one, unless a stop token
    // ended the turn).
    processed_.insert(processed_.end(), suffix.begin(), suffix.end());
    const size_t num_fed = stats->stop_token ? generated.size() : (generated.empty() ? 0 : generated.size() - 1);
    processed_.insert(processed_.end(), generated.begin(), generated.begin() + static_cast<std::ptrdiff_t>(num_fed));
    if (processed_.size() != forward_->num_positions()) processed_.clear();  // unknown state: start over next turn

    for (const harmony::Message& message : parser->messages()) conversation_.messages.push_back(message);
    fmt::print(stderr, "[{} tokens, {:.2f} tok/s | prefill {} tokens, {:.2f} tok/s | context {}/{}{}]\n",
               stats->num_generated, stats->decode_tok_per_s(), stats->num_prompt_tokens, stats->prefill_tok_per_s(),
               forward_->num_positions(), forward_->context_length(),
               extends ? "" : ", re-read from the start");
    std::fflush(stderr);
    return Status{};
  }

 private:
  const ChatArgs& args_;
  const Tokenizer& tokenizer_;
  std::unique_ptr<ForwardPass> forward_;
  Sampler sampler_;
  std::vector<float> logits_;       // (vocab_size)
  std::vector<int32_t> stop_ids_;
  harmony::Conversation conversation_;
  std::vector<int32_t> processed_;  // the tokens the forward pass holds, position by position
  harmony::DisplayFormatter display_;
};

void print_help() {
  fmt::print(stderr,
             "commands: /reset (forget the conversation), /reasoning low|medium|high, /exit (or Ctrl-D); "
             "Ctrl-C stops an answer\n");
}

int run_chat(const ChatArgs& args) {
  if (!args.model_path.empty())
    if (auto s = check_input_file("-m", args.model_path); !s) return report_error("chat", s.error());
  if (!args.run.stats_out.empty())
    if (auto s = check_output_path("--stats-out", args.run.stats_out); !s) return report_error("chat", s.error());
  auto forward_options = cli::forward_options(args.run);
  if (!forward_options) return report_error("chat", forward_options.error());
  auto params = cli::sampler_params(args.sampling);
  if (!params) return report_error("chat", params.error());
  auto load_mode = cli::load_mode(args.run);
  if (!load_mode) return report_error("chat", load_mode.error());
  auto trace = start_trace(args.run.trace_path);
  if (!trace) return report_error("chat", trace.error());
  auto reasoning = harmony::parse_reasoning_effort(args.reasoning);
  if (!reasoning) {
    return report_error("chat", make_error(ErrorCode::kInvalidArgument,
                                           fmt::format("--reasoning {}: expected low, medium or high", args.reasoning)));
  }
  auto model_path = model_or_default(args.model_path);
  if (!model_path) return report_error("chat", model_path.error());
  auto model = load_model_with_progress("chat", *model_path, *load_mode);
  if (!model) return report_error("chat", model.error());
  auto tokenizer = Tokenizer::from_gguf(*model->file);
  if (!tokenizer) return report_error("chat", tokenizer.error());
  if (auto special = harmony::SpecialTokens::find(*tokenizer); !special) return report_error("chat", special.error());
  std::vector<std::string> forward_notes;
  auto plan = make_run_plan(*model, args.run.device, args.run.config ? &*args.run.config : nullptr, *forward_options,
                            &forward_notes);
  if (!plan) {
    print_notes("chat", forward_notes);
    return report_error("chat", plan.error());
  }
  forward_options->plan = &*plan;
  // Every run counts expert selections (--stats-out saves them; the CPU path counts, the reference does not).
  placement::ExpertStats expert_counts = run_expert_stats(*model);
  if (!forward_options->use_reference) forward_options->expert_counts = expert_counts.counts.data();
  auto forward = create_forward(*model, *forward_options, &forward_notes);
  print_notes("chat", forward_notes);
  if (!forward) return report_error("chat", forward.error());

  harmony::ConversationOptions options;
  options.reasoning = *reasoning;
  options.developer_instructions = args.system;
  options.current_date = args.date;
  const std::string path_name = forward_path_name(*forward_options, forward->get());
  ChatSession session(args, *model, *tokenizer, std::move(*forward), options, *params);

  const bool terminal = isatty(STDIN_FILENO) != 0;
  install_sigint_handler();
  LineReader reader(terminal);
  fmt::print(stderr, "hetmoe chat: {} | {} path, {} | context {} | reasoning {} | seed {}\n", *model_path,
             path_name, threads_text(*forward_options), args.run.context_length, args.reasoning,
             params->seed);
  if (terminal) print_help();

  bool interrupted_at_prompt = false;
  int num_turns = 0, num_failed_turns = 0;
  for (;;) {
    std::optional<std::string> line = reader.read("> ");
    if (!line) {
      if (terminal && g_interrupted.exchange(false)) {
        if (interrupted_at_prompt) break;
        interrupted_at_prompt = true;
        fmt::print(stderr, "\n(Ctrl-C again, Ctrl-D or /exit to leave)\n");
        continue;
      }
      if (terminal) fmt::print(stderr, "\n");  // Ctrl-D: the shell's prompt starts on its own line
      break;
    }
    interrupted_at_prompt = false;
    std::string text = *line;
    const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!text.empty() && is_space(text.back())) text.pop_back();
    size_t first = 0;
    while (first < text.size() && is_space(text[first])) ++first;
    if (first > 0 && first < text.size() && text[first] == '/') text.erase(0, first);  // "  /exit" is a command
    if (text.empty()) continue;
    if (text[0] == '/') {
      if (text == "/exit" || text == "/quit") break;
      if (text == "/reset") {
        session.reset();
        fmt::print(stderr, "(conversation cleared)\n");
      } else if (text.rfind("/reasoning", 0) == 0) {
        const std::string value = text.size() > 11 ? text.substr(11) : "";
        if (auto effort = harmony::parse_reasoning_effort(value)) {
          session.options().reasoning = *effort;
          fmt::print(stderr, "(reasoning: {})\n", value);
        } else {
          fmt::print(stderr, "(reasoning is {}; /reasoning low|medium|high to change it)\n",
                     harmony::reasoning_effort_name(session.options().reasoning));
        }
      } else {
        print_help();
      }
      continue;
    }
    ++num_turns;
    if (Status s = session.turn(text); !s) {
      report_error("chat", s.error());
      ++num_failed_turns;
    }
  }
  if (!args.run.stats_out.empty())
    if (auto s = save_run_expert_stats(std::move(expert_counts), args.run.stats_out); !s)
      return report_error("chat", s.error());
  if (auto s = finish_trace(*trace); !s) return report_error("chat", s.error());
  // Driven through a pipe, a chat whose turns failed is a failed command (a script must see it).
  if (!terminal && num_failed_turns > 0) {
    fmt::print(stderr, "hetmoe chat: {} of {} turns failed\n", num_failed_turns, num_turns);
    return kExitError;
  }
  return 0;
}

}  // namespace

void add_chat_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("chat", "Interactive chat (harmony format): multi-turn, line editing, reasoning "
                                         "dimmed, tok/s after each answer; reads turns from stdin when it is a pipe.");
  auto args = std::make_shared<ChatArgs>();
  auto* model = cmd->add_option("-m,--model", args->model_path,
                                 "GGUF model file (default: the synthetic tiny model, made once)");
  cmd->add_option("MODEL", args->model_path, "The model file, as -m")->excludes(model);
  cmd->add_option("--system", args->system, "Instructions for the model (the harmony developer message)");
  cmd->add_option("--reasoning", args->reasoning, "Reasoning effort: low, medium or high (/reasoning changes it)")
      ->check(CLI::IsMember({"low", "medium", "high"}))
      ->capture_default_str();
  cmd->add_option("--date", args->date, "Current date in the system message, YYYY-MM-DD (default: today)")
      ->check(date_arg());
  cmd->add_flag("--hide-reasoning", args->hide_reasoning, "Do not show the analysis and commentary channels");
  cmd->add_option("-n,--n-predict", args->max_answer_tokens, "Most tokens per answer")
      ->check(int_range(1, 1 << 24))
      ->capture_default_str();
  add_run_options(cmd, args->run);
  add_sampling_options(cmd, args->sampling);
  cmd->callback([args, &exit_code] {
    exit_code = run_chat(*args);
  });
}

}  // namespace hetmoe::cli
