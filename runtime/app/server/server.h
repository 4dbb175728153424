#pragma once
// `hetmoe serve`: the HTTP server (cpp-httplib) of the OpenAI-compatible API over a Scheduler
// (runtime/app/server/scheduler.h). Endpoints: GET /health (503 {"status":"loading"} until attach(), then 200),
// GET /v1/models, POST /v1/chat/completions, /v1/responses, /v1/completions (streamed as server-sent events or
// not), GET /metrics (Prometheus text). Every bad request gets OpenAI's error object with a 4xx status; --api-key
// requires `Authorization: Bearer KEY` (constant-time compare) on everything but /health; no CORS headers unless
// cors_origin is set; no file serving. A full queue answers 503 with Retry-After. A client that disconnects
// cancels its job before the job's next step.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/app/server/scheduler.h"
#include "runtime/base/expected.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (port() tells which)
  std::string api_key;                // empty: no authentication
  std::string cors_origin;            // empty: no CORS headers
  std::string model_id = "gpt-oss";   // /v1/models and the "model" of answers
  uint32_t max_new_tokens = 0;        // server-side cap on generated tokens per request; 0: the context
  uint64_t max_body_bytes = 16u << 20;
  double request_timeout_seconds = 0; // 0: no limit
  uint32_t num_http_threads = 32;
  std::string current_date;           // harmony system message date; empty: today
};

/// What the server runs once the model is loaded; everything must outlive the server.
struct ServeModel {
  const Tokenizer* tokenizer = nullptr;
  Scheduler* scheduler = nullptr;
  std::vector<int32_t> stop_ids;         // end of turn (<|return|>, <|call|>, <|endoftext|>)
  uint32_t context_length = 0;
  /// (num_expert_counts) selections, or nullptr; the forward pass increments them on the scheduler thread with
  /// relaxed atomic adds (CpuForwardOptions::expert_counts), /metrics reads them with atomic loads (std::atomic_ref).
  uint64_t* expert_counts = nullptr;
  size_t num_expert_counts = 0;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();

  /// Binds host:port. Errors: kIo naming the address when it cannot be bound.
  Status bind();
  int port() const { return port_; }
  /// Serves on the calling thread until stop().
  void run();
  void stop();
  /// The model is ready: /health answers 200 and requests are served.
  void attach(const ServeModel& model);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

/// Constant-time comparison of two strings (the time depends only on their lengths).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace hetmoe::server
