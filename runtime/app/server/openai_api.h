#pragma once
// Requests of the OpenAI API (chat completions, responses, completions) parsed into what the scheduler runs: a
// harmony conversation (runtime/text/harmony.h) or a raw prompt, sampling parameters and limits. Every bad field is
// an ApiError naming it ("messages[2].role", "temperature") and what was expected; the server sends it as OpenAI's
// error object {"error": {"message", "type", "param", "code"}}. Field names and shapes follow OpenAI's published
// API reference.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/app/sampler.h"
#include "runtime/text/harmony.h"

namespace hetmoe::server {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

/// {"error": {"message", "type", "param", "code"}}.
nlohmann::json error_body(const ApiError& error);

/// What a request asks for, in the server's terms.
struct GenerationRequest {
  harmony::Conversation conversation;  // chat and responses
  bool raw = false;                    // completions: raw_prompt instead of the conversation
  std::string raw_prompt;
  std::vector<int32_t> raw_prompt_ids;  // completions with a prompt of token ids
  SamplerParams sampling;               // OpenAI defaults: temperature 1, top_p 1, no top-k, no min-p
  bool seed_given = false;
  bool cache_prompt = true;             // llama-server's per-request "cache_prompt": false computes the whole prompt
  std::optional<uint32_t> max_tokens;   // max_tokens / max_completion_tokens / max_output_tokens
  bool stream = false;
  bool include_usage = false;           // chat: stream_options.include_usage
  std::vector<std::string> stop;
  bool tools_enabled = false;           // function tools declared and tool_choice not "none"
  std::string model;                    // as given (empty: none)
  std::vector<std::string> notes;       // what was accepted but left out (unknown tool types), for the log
  // Responses only, echoed in the response object.
  std::string instructions;
  nlohmann::json tools_json = nlohmann::json::array();
  nlohmann::json metadata = nlohmann::json::object();
};

/// POST /v1/chat/completions. `body` is the parsed JSON. Errors: ApiError (400) naming the field.
std::optional<ApiError> parse_chat_request(const nlohmann::json& body, GenerationRequest* out);
/// POST /v1/responses.
std::optional<ApiError> parse_responses_request(const nlohmann::json& body, GenerationRequest* out);
/// POST /v1/completions.
std::optional<ApiError> parse_completions_request(const nlohmann::json& body, GenerationRequest* out);

/// Parses a request body; ApiError 400 with the parser's position when it is not a JSON object.
std::optional<ApiError> parse_json_body(const std::string& text, nlohmann::json* out);

}  // namespace hetmoe::server
