#pragma once
// The response side of the OpenAI APIs: output deltas (runtime/app/server/harmony_output.h) turned into
// server-sent events — chat.completion.chunk frames ending with `data: [DONE]`, the Responses API's event sequence
// (response.created … response.completed / response.incomplete / response.failed, each with a sequence_number),
// text_completion frames — and the non-streamed objects built from the same state.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/app/server/harmony_output.h"
#include "runtime/app/server/openai_api.h"

namespace hetmoe::server {

/// `data: JSON\n\n` (invalid UTF-8 replaced, never thrown).
std::string sse_data(const nlohmann::json& payload);
/// `event: TYPE\ndata: JSON\n\n`.
std::string sse_event(const std::string& type, const nlohmann::json& payload);
/// JSON text with invalid UTF-8 replaced by U+FFFD.
std::string dump_json(const nlohmann::json& value);

/// Token counts of a finished request.
struct Usage {
  uint32_t prompt_tokens = 0;
  uint32_t cached_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t reasoning_tokens = 0;
};

/// How generation ended, in API terms.
enum class Outcome { kStop, kLength, kError };

class ChatStream {
 public:
  /// object: "chat.completion" (chat) or "text_completion" (completions: `text` instead of a message).
  ChatStream(std::string id, std::string model, int64_t created, bool text_completion);
  /// The first frame (role: assistant).
  std::string begin();
  std::string deltas(const std::vector<OutputDelta>& deltas);
  /// The finish frame, the usage frame when include_usage, and [DONE].
  std::string end(const std::string& finish_reason, const Usage& usage, bool include_usage);
  /// A mid-stream error frame and [DONE].
  std::string error(const ApiError& error);
  /// The non-streamed object.
  nlohmann::json object(const OutputAssembler& output, const std::string& finish_reason, const Usage& usage) const;

 private:
  nlohmann::json chunk(nlohmann::json choice) const;
  std::string id_;
  std::string model_;
  int64_t created_;
  bool text_completion_;
};

nlohmann::json chat_usage_json(const Usage& usage);

class ResponsesStream {
 public:
  ResponsesStream(std::string id, int64_t created, const GenerationRequest& request, std::string model);
  /// response.created and response.in_progress.
  std::string begin();
  std::string deltas(const std::vector<OutputDelta>& deltas);
  /// response.completed (kStop), response.incomplete with reason max_output_tokens (kLength) or response.failed
  /// (kError, with `error`).
  std::string end(Outcome outcome, const Usage& usage, const ApiError& error = {});
  /// The response object as it stands (the non-streamed answer after end()).
  const nlohmann::json& response() const { return response_; }

 private:
  std::string event(const std::string& type, nlohmann::json payload);
  std::string item_id(const char* prefix);
  int64_t sequence_ = 0;
  std::string id_;
  nlohmann::json response_;
  nlohmann::json item_;    // the open output item
  std::string item_text_;  // its text so far
  int64_t output_index_ = -1;
  int item_counter_ = 0;
};

}  // namespace hetmoe::server
