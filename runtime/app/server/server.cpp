#include "runtime/app/server/server.h"

#include <dirent.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdlib>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>

#include "runtime/app/server/api_stream.h"
#include "runtime/app/server/harmony_output.h"
#include "runtime/app/server/openai_api.h"
#include "runtime/text/harmony.h"

namespace hetmoe::server {

using nlohmann::json;

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

namespace {

enum class Api { kChat, kResponses, kCompletions };

/// Tokens from the scheduler thread to the request's HTTP thread.
struct Channel {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  bool done = false;
  JobResult result;
};

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string s(n, '0');
  for (char& c : s) c = digits[rng() % 16];
  return s;
}

/// Reads a job's tokens on the HTTP thread: harmony parsing (or plain decoding for raw completions), output deltas,
/// token counts.
class Consumer {
 public:
  Consumer(std::shared_ptr<Channel> channel, std::shared_ptr<JobHandle> handle, const Tokenizer& tokenizer, bool raw,
           bool tools_enabled, std::vector<std::string> stop, std::string call_id_prefix)
      : channel_(std::move(channel)),
        handle_(std::move(handle)),
        decoder_(tokenizer),
        assembler_(tools_enabled, std::move(call_id_prefix), std::move(stop)) {
    if (!raw) {
      auto p = harmony::Parser::create(tokenizer);
      if (p) parser_.emplace(std::move(*p));
    }
  }

  /// Waits up to `wait` for tokens; appends their deltas. Returns true when the job has ended (its last deltas are
  /// in `out`).
  bool pump(std::chrono::milliseconds wait, std::vector<OutputDelta>* out) {
    std::vector<int32_t> tokens;
    bool done = false;
    {
      std::unique_lock lock(channel_->mutex);
      channel_->cv.wait_for(lock, wait, [&] { return channel_->done || !channel_->tokens.empty(); });
      tokens.swap(channel_->tokens);
      done = channel_->done;
      if (done) result_ = channel_->result;
    }
    for (int32_t token : tokens) push(token, out);
    if (done && !finished_) {
      finished_ = true;
      events_.clear();
      if (parser_) {
        if (result_.stop_token && !assembler_.stopped()) parser_->push(*result_.stop_token, &events_);
        parser_->finish(&events_);
      } else {
        std::string rest = decoder_.flush();
        if (!rest.empty()) content_event(rest);
      }
      for (const harmony::Event& e : events_) assembler_.push(e, out);
      assembler_.finish(out);
    }
    return done;
  }

  const OutputAssembler& output() const { return assembler_; }
  const JobResult& result() const { return result_; }
  bool stopped_by_string() const { return assembler_.stopped(); }
  Usage usage() const {
    Usage u;
    u.prompt_tokens = result_.num_prompt_tokens;
    u.cached_tokens = result_.num_cached_tokens;
    u.completion_tokens = result_.num_generated;
    u.reasoning_tokens = reasoning_tokens_;
    return u;
  }

 private:
  void content_event(const std::string& text) {
    if (!started_raw_) {
      started_raw_ = true;
      events_.push_back(harmony::Event{harmony::EventKind::kMessageStart, {}, "", -1, false});
    }
    events_.push_back(harmony::Event{harmony::EventKind::kContent, {}, text, -1, false});
  }

  void push(int32_t token, std::vector<OutputDelta>* out) {
    if (assembler_.stopped()) return;
    events_.clear();
    if (parser_) {
      parser_->push(token, &events_);
    } else {
      auto piece = decoder_.push(token);
      if (piece && !piece->empty()) content_event(*piece);
    }
    for (const harmony::Event& e : events_) assembler_.push(e, out);
    if (assembler_.in_reasoning()) ++reasoning_tokens_;
    if (assembler_.stopped()) handle_->cancel();
  }

  std::shared_ptr<Channel> channel_;
  std::shared_ptr<JobHandle> handle_;
  std::optional<harmony::Parser> parser_;
  StreamDecoder decoder_;
  OutputAssembler assembler_;
  std::vector<harmony::Event> events_;
  bool started_raw_ = false;
  bool finished_ = false;
  uint32_t reasoning_tokens_ = 0;
  JobResult result_;
};

/// The API's view of how a job ended.
struct Ending {
  Outcome outcome = Outcome::kStop;
  std::string finish_reason = "stop";
  ApiError error;  // kError
};

Ending ending_of(const Consumer& c) {
  Ending e;
  if (c.stopped_by_string()) return e;
  switch (c.result().finish) {
    case FinishReason::kStop:
      if (!c.output().tool_calls().empty()) e.finish_reason = "tool_calls";
      return e;
    case FinishReason::kLength:
      e.outcome = Outcome::kLength;
      e.finish_reason = "length";
      return e;
    case FinishReason::kCancelled:
      e.outcome = Outcome::kError;
      e.error = ApiError{503, "the request was cancelled (client gone or server shutting down)", "server_error", "",
                         "cancelled"};
      return e;
    case FinishReason::kTimeout:
      e.outcome = Outcome::kError;
      e.error = ApiError{504, "the request exceeded the server's time limit (--timeout)", "server_error", "", "timeout"};
      return e;
    case FinishReason::kError:
      e.outcome = Outcome::kError;
      e.error = ApiError{500, "generation failed: " + c.result().error.to_string(), "server_error", "", "server_error"};
      return e;
  }
  return e;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) { send_json(res, error.status, error_body(error)); }

/// Sends the job's output as server-sent events: begin() first, deltas() for every batch of output, end() once the
/// job is over. A client that goes away cancels the job (at the next write, or within 100 ms while waiting).
struct StreamFormat {
  std::function<std::string()> begin;
  std::function<std::string(const std::vector<OutputDelta>&)> deltas;
  std::function<std::string(const Ending&)> end;
};

void stream_events(httplib::Response& res, std::shared_ptr<Consumer> consumer, std::shared_ptr<JobHandle> handle,
                   StreamFormat format) {
  auto begun = std::make_shared<bool>(false);
  auto ended = std::make_shared<bool>(false);
  JobHandle* h = handle.get();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [consumer, format, begun, ended, h](size_t, httplib::DataSink& sink) {
        if (*ended) {
          sink.done();
          return true;
        }
        std::string out;
        if (!*begun) {
          *begun = true;
          out = format.begin();
        }
        if (!sink.is_writable()) {
          h->cancel();
          return false;
        }
        std::vector<OutputDelta> deltas;
        const bool done = consumer->pump(std::chrono::milliseconds(100), &deltas);
        out += format.deltas(deltas);
        if (done) {
          out += format.end(ending_of(*consumer));
          *ended = true;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          h->cancel();
          return false;
        }
        if (*ended) sink.done();
        return true;
      },
      [handle](bool success) {
        if (!success) handle->cancel();
      });
}

/// "address" and port of a socket address, as cpp-httplib writes Request::remote_addr / local_addr (numeric host).
bool address_of(const sockaddr_storage& addr, socklen_t len, std::string* host, int* port) {
  if (addr.ss_family == AF_INET) *port = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  else if (addr.ss_family == AF_INET6) *port = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  else return false;
  char text[NI_MAXHOST] = {};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, text, sizeof(text), nullptr, 0, NI_NUMERICHOST))
    return false;
  *host = text;
  return true;
}

/// The socket a request came on, or -1. cpp-httplib 0.11 gives a handler no socket (later versions have
/// Request::is_connection_closed), so this finds the process's TCP socket whose local and peer addresses are the
/// request's (local_addr:local_port, remote_addr:remote_port: one connection) among /proc/self/fd. The socket stays
/// this connection's while the handler runs.
int request_socket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof(peer), local_len = sizeof(local);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
      continue;
    std::string peer_host, local_host;
    int peer_port = -1, local_port = -1;
    if (address_of(peer, peer_len, &peer_host, &peer_port) && peer_port == req.remote_port &&
        peer_host == req.remote_addr && address_of(local, local_len, &local_host, &local_port) &&
        local_port == req.local_port && local_host == req.local_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

/// Whether the peer has closed the connection: the socket reads end of file (or fails). Bytes waiting (a pipelined
/// next request) mean it is alive. (cpp-httplib's is_socket_alive does the same for streamed responses.)
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char byte = 0;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/// Waits for the whole job (a response that is not streamed); returns its output deltas. A client that closes the
/// connection meanwhile cancels the job (checked every 100 ms).
std::vector<OutputDelta> wait_for_all(Consumer& consumer, JobHandle& handle, const httplib::Request& req) {
  const int fd = request_socket(req);
  std::vector<OutputDelta> deltas;
  while (!consumer.pump(std::chrono::milliseconds(100), &deltas))
    if (fd >= 0 && !handle.cancelled() && peer_closed(fd)) handle.cancel();
  return deltas;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  httplib::Server http;
  std::mutex model_mutex;
  std::optional<ServeModel> model;
  std::mutex metrics_mutex;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (path, status) -> count

  std::optional<ServeModel> current_model() {
    std::lock_guard lock(model_mutex);
    return model;
  }

  void handle_generate(Api api, const httplib::Request& req, httplib::Response& res);
  std::string metrics_text();
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  Impl* impl = impl_.get();
  httplib::Server& http = impl->http;
  const uint32_t num_threads = std::max<uint32_t>(4, impl->options.num_http_threads);
  http.new_task_queue = [num_threads] { return new httplib::ThreadPool(num_threads); };
  http.set_tcp_nodelay(true);
  http.set_payload_max_length(impl->options.max_body_bytes);
  http.set_read_timeout(60, 0);
  http.set_write_timeout(60, 0);

  http.set_pre_routing_handler([impl](const httplib::Request& req, httplib::Response& res) {
    if (!impl->options.cors_origin.empty() && req.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;
    if (req.path != "/health" && !impl->options.api_key.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      if (!constant_time_equal(auth, "Bearer " + impl->options.api_key)) {
        send_error(res, ApiError{401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                                 "invalid_request_error", "", "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (req.has_header("Content-Length")) {
      const std::string len = req.get_header_value("Content-Length");
      if (len.size() > 19 || std::stoull("0" + len) > impl->options.max_body_bytes) {
        send_error(res, ApiError{413,
                                 fmt::format("the request body ({} bytes) is larger than the server's limit of {} bytes "
                                             "(--max-body)",
                                             len, impl->options.max_body_bytes),
                                 "invalid_request_error", "", "request_too_large"});
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.set_post_routing_handler([impl](const httplib::Request&, httplib::Response& res) {
    if (impl->options.cors_origin.empty()) return;
    res.set_header("Access-Control-Allow-Origin", impl->options.cors_origin);
    res.set_header("Vary", "Origin");
  });
  if (!impl->options.cors_origin.empty()) {
    http.Options(R"(/.*)", [](const httplib::Request&, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
    });
  }
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.status = res.status;
    if (res.status == 404) {
      e.message = fmt::format("no such endpoint: {} {}", req.method, req.path);
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message = "the request body is larger than the server's limit (--max-body)";
      e.code = "request_too_large";
    } else {
      e.message = fmt::format("HTTP status {}", res.status);
    }
    send_error(res, e);
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError{500, "internal error: " + what, "server_error", "", "server_error"});
  });
  http.set_logger([impl](const httplib::Request& req, const httplib::Response& res) {
    std::lock_guard lock(impl->metrics_mutex);
    ++impl->requests[{req.path, res.status}];
  });

  http.Get("/health", [impl](const httplib::Request&, httplib::Response& res) {
    if (impl->current_model()) send_json(res, 200, {{"status", "ok"}});
    else send_json(res, 503, {{"status", "loading"}});
  });
  http.Get("/v1/models", [impl](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", impl->options.model_id},
                                      {"object", "model"},
                                      {"created", 0},
                                      {"owned_by", "hetmoe"}}})}});
  });
  http.Get(R"(/v1/models/(.+))", [impl](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != impl->options.model_id)
      return send_error(res, ApiError{404, fmt::format("no model '{}' (this server has '{}')", req.matches[1].str(),
                                                       impl->options.model_id),
                                      "invalid_request_error", "model", "model_not_found"});
    send_json(res, 200, {{"id", impl->options.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "hetmoe"}});
  });
  http.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    res.set_content(impl->metrics_text(), "text/plain; version=0.0.4");
  });
  http.Post("/v1/chat/completions", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->handle_generate(Api::kChat, req, res);
  });
  http.Post("/v1/responses", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->handle_generate(Api::kResponses, req, res);
  });
  http.Post("/v1/completions", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->handle_generate(Api::kCompletions, req, res);
  });
}

Server::~Server() { stop(); }

Status Server::bind() {
  const std::string& host = impl_->options.host;
  if (impl_->options.port == 0) {
    port_ = impl_->http.bind_to_any_port(host);
    if (port_ <= 0) return make_error(ErrorCode::kIo, fmt::format("cannot listen on {} (any port)", host));
  } else {
    if (!impl_->http.bind_to_port(host, impl_->options.port))
      return make_error(ErrorCode::kIo, fmt::format("cannot listen on {}:{} (in use, or not an address of this "
                                                    "machine)",
                                                    host, impl_->options.port));
    port_ = impl_->options.port;
  }
  return {};
}

void Server::run() { impl_->http.listen_after_bind(); }
void Server::stop() {
  if (impl_->http.is_running()) impl_->http.stop();
}

void Server::attach(const ServeModel& model) {
  std::lock_guard lock(impl_->model_mutex);
  impl_->model = model;
}

void Server::Impl::handle_generate(Api api, const httplib::Request& req, httplib::Response& res) {
  const std::optional<ServeModel> m = current_model();
  if (!m) {
    res.set_header("Retry-After", "5");
    send_error(res, ApiError{503, "the model is still loading", "server_error", "", "model_loading"});
    return;
  }
  json body;
  if (auto e = parse_json_body(req.body, &body)) return send_error(res, *e);
  auto request = std::make_shared<GenerationRequest>();
  std::optional<ApiError> parse_error;
  const char* prompt_param = "messages";
  switch (api) {
    case Api::kChat: parse_error = parse_chat_request(body, request.get()); break;
    case Api::kResponses:
      parse_error = parse_responses_request(body, request.get());
      prompt_param = "input";
      break;
    case Api::kCompletions:
      parse_error = parse_completions_request(body, request.get());
      prompt_param = "prompt";
      break;
  }
  if (parse_error) return send_error(res, *parse_error);
  for (const std::string& note : request->notes) fmt::print(stderr, "hetmoe serve: {} {}: {}\n", req.method, req.path, note);

  const Tokenizer& tokenizer = *m->tokenizer;
  std::vector<int32_t> prompt;
  if (request->raw) {
    if (!request->raw_prompt_ids.empty()) {
      for (size_t i = 0; i < request->raw_prompt_ids.size(); ++i)
        if (request->raw_prompt_ids[i] >= tokenizer.vocab_size())
          return send_error(res, ApiError{400,
                                          fmt::format("'prompt[{}]': token id {} is outside the vocabulary ({} tokens)",
                                                      i, request->raw_prompt_ids[i], tokenizer.vocab_size()),
                                          "invalid_request_error", fmt::format("prompt[{}]", i), ""});
      prompt = request->raw_prompt_ids;
    } else {
      prompt = tokenizer.encode(request->raw_prompt, true);
    }
  } else {
    request->conversation.options.current_date = options.current_date;
    auto rendered = harmony::render_for_completion(tokenizer, request->conversation);
    if (!rendered)
      return send_error(res, ApiError{400, rendered.error().to_string(), "invalid_request_error", prompt_param, ""});
    prompt = std::move(*rendered);
  }
  if (prompt.size() >= m->context_length)
    return send_error(res, ApiError{400,
                                    fmt::format("the prompt is {} tokens; this server's context holds {} (--ctx-size), "
                                                "including the answer",
                                                prompt.size(), m->context_length),
                                    "invalid_request_error", prompt_param, "context_length_exceeded"});

  Job job;
  job.prompt = std::move(prompt);
  job.sampling = request->sampling;
  if (!request->seed_given) job.sampling.seed = std::random_device{}();
  uint32_t max_new = request->max_tokens.value_or(m->context_length);
  if (options.max_new_tokens > 0) max_new = std::min(max_new, options.max_new_tokens);
  job.max_new_tokens = max_new;
  job.stop_ids = m->stop_ids;
  job.cache_prompt = request->cache_prompt;
  if (options.request_timeout_seconds > 0)
    job.deadline = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(options.request_timeout_seconds));
  auto channel = std::make_shared<Channel>();
  job.on_token = [channel](int32_t token) {
    {
      std::lock_guard lock(channel->mutex);
      channel->tokens.push_back(token);
    }
    channel->cv.notify_all();
    return true;
  };
  job.on_done = [channel](const JobResult& r) {
    {
      std::lock_guard lock(channel->mutex);
      channel->done = true;
      channel->result = r;
    }
    channel->cv.notify_all();
  };
  auto handle = m->scheduler->submit(std::move(job));
  if (!handle) {
    if (handle.error().code == ErrorCode::kUnsupported) {
      res.set_header("Retry-After", "1");
      return send_error(res, ApiError{503, handle.error().message, "server_error", "", "queue_full"});
    }
    return send_error(res, ApiError{400, handle.error().message, "invalid_request_error", "", ""});
  }

  const std::string hex = random_hex(24);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  auto consumer = std::make_shared<Consumer>(channel, *handle, tokenizer, request->raw, request->tools_enabled,
                                             request->stop, "call_" + hex.substr(0, 12) + "_");
  const std::string model_id = options.model_id;

  if (api == Api::kResponses) {
    auto stream = std::make_shared<ResponsesStream>("resp_" + hex, created, *request, model_id);
    if (!request->stream) {
      stream->deltas(wait_for_all(*consumer, **handle, req));
      const Ending e = ending_of(*consumer);
      if (e.outcome == Outcome::kError) return send_error(res, e.error);
      stream->end(e.outcome, consumer->usage());
      return send_json(res, 200, stream->response());
    }
    return stream_events(res, consumer, *handle,
                         StreamFormat{[stream] { return stream->begin(); },
                                      [stream](const std::vector<OutputDelta>& d) { return stream->deltas(d); },
                                      [stream, consumer](const Ending& e) {
                                        return stream->end(e.outcome, consumer->usage(), e.error);
                                      }});
  }

  const bool text_completion = api == Api::kCompletions;
  auto stream = std::make_shared<ChatStream>((text_completion ? "cmpl-" : "chatcmpl-") + hex, model_id, created,
                                             text_completion);
  if (!request->stream) {
    wait_for_all(*consumer, **handle, req);
    const Ending e = ending_of(*consumer);
    if (e.outcome == Outcome::kError) return send_error(res, e.error);
    return send_json(res, 200, stream->object(consumer->output(), e.finish_reason, consumer->usage()));
  }
  const bool include_usage = request->include_usage;
  stream_events(res, consumer, *handle,
                StreamFormat{[stream] { return stream->begin(); },
                             [stream](const std::vector<OutputDelta>& d) { return stream->deltas(d); },
                             [stream, consumer, include_usage](const Ending& e) {
                               return e.outcome == Outcome::kError
                                          ? stream->error(e.error)
                                          : stream->end(e.finish_reason, consumer->usage(), include_usage);
                             }});
}

std::string Server::Impl::metrics_text() {
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  metric("hetmoe_requests_total", "counter", "HTTP requests by path and status.");
  {
    std::lock_guard lock(metrics_mutex);
    for (const auto& [key, count] : requests)
      out += fmt::format("hetmoe_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, count);
  }
  const std::optional<ServeModel> m = current_model();
  metric("hetmoe_model_loaded", "gauge", "1 when the model is loaded and requests are served.");
  out += fmt::format("hetmoe_model_loaded {}\n", m ? 1 : 0);
  if (!m) return out;
  const SchedulerStats s = m->scheduler->stats();
  metric("hetmoe_prompt_tokens_total", "counter", "Prompt tokens of admitted requests (cached ones included).");
  out += fmt::format("hetmoe_prompt_tokens_total {}\n", s.prompt_tokens);
  metric("hetmoe_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's KV cache.");
  out += fmt::format("hetmoe_prompt_tokens_cached_total {}\n", s.cached_prompt_tokens);
  metric("hetmoe_prompt_cache_hits_total", "counter", "Requests that reused at least one cached prompt token.");
  out += fmt::format("hetmoe_prompt_cache_hits_total {}\n", s.prompt_cache_hits);
  metric("hetmoe_generated_tokens_total", "counter", "Generated tokens of finished requests.");
  out += fmt::format("hetmoe_generated_tokens_total {}\n", s.generated_tokens);
  metric("hetmoe_prefill_tokens_per_second", "gauge",
         "Prompt tokens computed per second of steps that only prefilled (since start).");
  out += fmt::format("hetmoe_prefill_tokens_per_second {:.3f}\n",
                     s.prefill_seconds > 0 ? s.prefill_tokens_computed / s.prefill_seconds : 0.0);
  metric("hetmoe_decode_tokens_per_second", "gauge",
         "Decoded tokens per second of steps that decoded (all slots together, since start).");
  out += fmt::format("hetmoe_decode_tokens_per_second {:.3f}\n",
                     s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0.0);
  metric("hetmoe_slots", "gauge", "Slots (--parallel).");
  out += fmt::format("hetmoe_slots {}\n", s.num_slots);
  metric("hetmoe_slots_busy", "gauge", "Slots running a request.");
  out += fmt::format("hetmoe_slots_busy {}\n", s.slots_busy);
  metric("hetmoe_queue_length", "gauge", "Requests waiting for a slot.");
  out += fmt::format("hetmoe_queue_length {}\n", s.queue_length);
  metric("hetmoe_kv_cache_cells_used", "gauge", "Positions held in the slots' KV caches.");
  out += fmt::format("hetmoe_kv_cache_cells_used {}\n", s.kv_cells_used);
  if (m->expert_counts) {
    uint64_t total = 0;
    for (size_t i = 0; i < m->num_expert_counts; ++i)  // the scheduler thread increments them meanwhile
      total += std::atomic_ref<uint64_t>(m->expert_counts[i]).load(std::memory_order_relaxed);
    metric("hetmoe_expert_selections_total", "counter",
           "Router selections of experts by the device that ran them (the GPU pass does not count yet).");
    out += fmt::format("hetmoe_expert_selections_total{{device=\"cpu\"}} {}\n", total);
  }
  return out;
}

}  // namespace hetmoe::server
