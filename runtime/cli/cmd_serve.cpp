// hetmoe serve [-m MODEL] [--host 127.0.0.1] [--port 8080] [--parallel N] ...: the OpenAI-compatible HTTP server
// (runtime/app/server/server.h). The port is bound first, /health answers 503 while the model loads (progress on
// stderr), then every slot gets its own forward pass and KV cache. SIGINT / SIGTERM stop the server; then --stats-out
// and --trace are written (the trace records from start to stop: scheduler steps, requests per slot, the forward
// pass's steps, up to the recorder's memory cap).
#include <fmt/format.h>

#include <csignal>
#include <map>
#include <filesystem>
#include <memory>
#include <thread>

#include "runtime/app/server/scheduler.h"
#include "runtime/app/server/server.h"
#include "runtime/base/byte_size.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/default_model.h"
#include "runtime/cli/model_loading.h"
#include "runtime/cli/plan_options.h"
#include "runtime/cli/run_options.h"
#include "runtime/cli/trace_options.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::cli {
namespace {

struct ServeArgs {
  std::string model_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 1;
  std::string api_key;
  std::string alias;
  int n_predict = 0;
  std::string max_body = "16MiB";
  int max_queue = 16;
  double timeout = 0;
  std::string cors_origin;
  int prefill_chunk = 256;
  int cache_reuse = 2048;
  bool no_cache_prompt = false;
  std::string date;
  RunArgs run;
  std::map<std::string, CLI::Option*> flags;  // by config key: was the flag given (then it beats the file)?
};

/// The --config file's [server] keys, for the flags not given on the command line.
void apply_server_config(ServeArgs& args) {
  if (!args.run.config) return;
  const RuntimeConfig::Server& c = args.run.config->server;
  auto use = [&](const char* key, const auto& value, auto& target) {
    if (value && args.flags.at(key)->count() == 0) target = *value;
  };
  use("host", c.host, args.host);
  use("port", c.port, args.port);
  use("parallel", c.parallel, args.parallel);
  use("n_predict", c.n_predict, args.n_predict);
  if (c.max_body_bytes && args.flags.at("max_body")->count() == 0) args.max_body = std::to_string(*c.max_body_bytes);
  use("max_queue", c.max_queue, args.max_queue);
  use("timeout", c.timeout_seconds, args.timeout);
  use("api_key", c.api_key, args.api_key);
  use("alias", c.alias, args.alias);
  use("cors_origin", c.cors_origin, args.cors_origin);
  use("prefill_chunk", c.prefill_chunk, args.prefill_chunk);
  use("cache_reuse", c.cache_reuse, args.cache_reuse);
  if (c.cache_prompt && args.flags.at("cache_prompt")->count() == 0) args.no_cache_prompt = !*c.cache_prompt;
}

int run_serve(ServeArgs args) {
  if (!args.run.config_status) return report_error("serve", args.run.config_status.error());
  apply_server_config(args);
  auto forward_options = cli::forward_options(args.run);
  if (!forward_options) return report_error("serve", forward_options.error());
  auto max_body = parse_byte_size(args.max_body);
  if (!max_body)
    return report_error("serve", make_error(ErrorCode::kInvalidArgument,
                                            fmt::format("--max-body {}: {}", args.max_body, max_body.error().message)));
  if (args.api_key.empty())
    if (const char* k = std::getenv("HETMOE_API_KEY"); k && *k) args.api_key = k;

  auto model_or_error = model_or_default(args.model_path);
  if (!model_or_error) return report_error("serve", model_or_error.error());
  const std::string model_path = *model_or_error;
  if (!args.run.stats_out.empty())
    if (auto s = check_output_path("--stats-out", args.run.stats_out); !s) return report_error("serve", s.error());
  auto trace = start_trace(args.run.trace_path);
  if (!trace) return report_error("serve", trace.error());

  server::ServerOptions options;
  options.host = args.host;
  options.port = args.port;
  options.api_key = args.api_key;
  options.cors_origin = args.cors_origin;
  options.model_id = args.alias.empty() ? std::filesystem::path(model_path).stem().string() : args.alias;
  options.max_new_tokens = static_cast<uint32_t>(args.n_predict);
  options.max_body_bytes = *max_body;
  options.request_timeout_seconds = args.timeout;
  options.num_http_threads = static_cast<uint32_t>(args.parallel + args.max_queue + 8);
  options.current_date = args.date;

  // SIGINT / SIGTERM go to one thread that stops the server (blocked everywhere else).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  server::Server http(options);
  if (auto s = http.bind(); !s) return report_error("serve", s.error());
  fmt::print(stderr, "hetmoe serve: listening on http://{}:{} (model {} loading; /health answers 503 until ready)\n",
             args.host, http.port(), options.model_id);
  std::thread http_thread([&http] { http.run(); });
  std::thread signal_thread([&http, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    fmt::print(stderr, "hetmoe serve: signal {}: stopping\n", sig);
    http.stop();
  });
  auto fail = [&](const Error& e) {
    report_error("serve", e);
    pthread_kill(signal_thread.native_handle(), SIGTERM);
    signal_thread.join();
    http_thread.join();
    return 1;
  };

  auto load_mode = cli::load_mode(args.run);
  if (!load_mode) return fail(load_mode.error());
  auto model = load_model_with_progress("serve", model_path, *load_mode);
  if (!model) return fail(model.error());
  auto tokenizer = Tokenizer::from_gguf(*model->file);
  if (!tokenizer) return fail(tokenizer.error());
  std::vector<std::string> notes;
  auto plan = make_run_plan(*model, args.run.device, args.run.config ? &*args.run.config : nullptr, *forward_options,
                            &notes);
  if (!plan) {
    print_notes("serve", notes);
    return fail(plan.error());
  }
  forward_options->plan = &*plan;
  placement::ExpertStats expert_counts = run_expert_stats(*model);
  if (!forward_options->use_reference) forward_options->expert_counts = expert_counts.counts.data();
  // Prompt caching goes back over the previous answer (harmony drops its reasoning): the sliding-window ring keeps
  // cache_reuse spare positions for that.
  forward_options->rollback_slots = std::min<uint32_t>(static_cast<uint32_t>(args.cache_reuse),
                                                       forward_options->context_length);
  fmt::print(stderr, "hetmoe serve: creating the forward pass and {} KV cache(s) of {} positions\n", args.parallel,
             forward_options->context_length);
  auto forward = create_forward(*model, *forward_options, &notes);
  print_notes("serve", notes);
  if (!forward) return fail(forward.error());
  const std::string path = forward_path_name(*forward_options, forward->get());
  fmt::print(stderr, "hetmoe serve: {} path, {}\n", path, threads_text(*forward_options));
  // Every GPU pass holds its own copy of the weights it keeps on the GPU; slots do not share one yet.
  if (path.starts_with("gpu") && args.parallel > 1)
    return fail(make_error(ErrorCode::kUnsupported,
                           fmt::format("--parallel {} with the GPU pass: each slot would hold its own copy of the GPU "
                                       "weights (a GPU pass shared by several slots is not implemented); use "
                                       "--parallel 1, or --device cpu",
                                       args.parallel)));
  // The CPU path batches the slots' decode tokens (groups of up to 8); the reference pass runs slots in turn.
  auto multi =
      create_multi_forward(*model, *forward_options, std::move(*forward), static_cast<uint32_t>(args.parallel));
  if (!multi) return fail(multi.error());
  server::SchedulerOptions scheduler_options;
  scheduler_options.max_queue = static_cast<uint32_t>(args.max_queue);
  scheduler_options.prefill_chunk = static_cast<uint32_t>(args.prefill_chunk);
  scheduler_options.cache_prompts = !args.no_cache_prompt;
  server::Scheduler scheduler(**multi, scheduler_options);

  server::ServeModel serve_model;
  serve_model.tokenizer = &*tokenizer;
  serve_model.scheduler = &scheduler;
  serve_model.stop_ids = tokenizer->end_of_generation_ids();
  serve_model.context_length = (*multi)->context_length();
  if (forward_options->expert_counts) {
    serve_model.expert_counts = expert_counts.counts.data();
    serve_model.num_expert_counts = expert_counts.counts.size();
  }
  http.attach(serve_model);
  fmt::print(stderr, "hetmoe serve: ready: {} slot(s), context {} tokens each, model id \"{}\"\n", args.parallel,
             serve_model.context_length, options.model_id);

  http_thread.join();
  scheduler.stop();
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  int rc = 0;
  if (!args.run.stats_out.empty()) {
    const server::SchedulerStats stats = scheduler.stats();
    if (stats.prefill_tokens_computed + stats.decode_tokens == 0)
      fmt::print(stderr, "hetmoe serve: no request ran a token; --stats-out {} not written\n", args.run.stats_out);
    else if (auto s = save_run_expert_stats(std::move(expert_counts), args.run.stats_out); !s)
      rc = report_error("serve", s.error());
  }
  if (*trace) fmt::print(stderr, "hetmoe serve: writing the trace to {}\n", (*trace)->path());
  if (auto s = finish_trace(*trace); !s) rc = report_error("serve", s.error());
  return rc;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/responses, "
                                          "/v1/completions, /v1/models, /health, /metrics (docs/serving.md)");
  auto args = std::make_shared<ServeArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF model file (default: the synthetic tiny model, made once)");
  args->flags["host"] = cmd->add_option("--host", args->host, "Address to listen on")->capture_default_str();
  args->flags["port"] = cmd->add_option("--port", args->port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  args->flags["parallel"] = cmd->add_option("--parallel", args->parallel, "Requests served at once (slots, each with its own KV cache)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  args->flags["api_key"] = cmd->add_option("--api-key", args->api_key,
                  "Require 'Authorization: Bearer KEY' (default: $HETMOE_API_KEY; none when unset)");
  args->flags["alias"] = cmd->add_option("--alias", args->alias, "Model id in /v1/models and in answers (default: the file's stem)");
  args->flags["n_predict"] = cmd->add_option("-n,--n-predict", args->n_predict, "Server-side cap on generated tokens per request (0: none)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  args->flags["max_body"] = cmd->add_option("--max-body", args->max_body, "Largest request body (a byte size: 16MiB, 1000000)")
      ->capture_default_str();
  args->flags["max_queue"] = cmd->add_option("--max-queue", args->max_queue, "Requests that may wait for a slot; more get 503 + Retry-After")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  args->flags["timeout"] = cmd->add_option("--timeout", args->timeout, "Request time limit in seconds (0: none)")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
  args->flags["cors_origin"] = cmd->add_option("--cors-origin", args->cors_origin, "Send CORS headers allowing this origin (default: no CORS)");
  args->flags["prefill_chunk"] = cmd->add_option("--prefill-chunk", args->prefill_chunk, "Prompt tokens per slot per scheduler step")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  args->flags["cache_reuse"] = cmd->add_option("--cache-reuse", args->cache_reuse,
                  "Positions a slot may go back to reuse a cached prompt prefix (sliding-window ring slots)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  args->flags["cache_prompt"] = cmd->add_flag("--no-cache-prompt", args->no_cache_prompt, "Never reuse a slot's KV cache for a shared prefix");
  cmd->add_option("--date", args->date, "Current date in the system message, YYYY-MM-DD (default: today)");
  add_run_options(cmd, args->run);
  cmd->callback([args, &exit_code] { exit_code = run_serve(*args); });
}

}  // namespace hetmoe::cli
