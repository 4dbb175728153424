#include "runtime/app/server/api_stream.h"

#include <fmt/format.h>

namespace hetmoe::server {

using nlohmann::json;

std::string dump_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string sse_data(const json& payload) { return "data: " + dump_json(payload) + "\n\n"; }
std::string sse_event(const std::string& type, const json& payload) {
  return "event: " + type + "\ndata: " + dump_json(payload) + "\n\n";
}

json chat_usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
              {"completion_tokens_details", {{"reasoning_tokens", u.reasoning_tokens}}}};
}

ChatStream::ChatStream(std::string id, std::string model, int64_t created, bool text_completion)
    : id_(std::move(id)), model_(std::move(model)), created_(created), text_completion_(text_completion) {}

json ChatStream::chunk(json choice) const {
  json c{{"id", id_},
         {"object", text_completion_ ? "text_completion" : "chat.completion.chunk"},
         {"created", created_},
         {"model", model_},
         {"system_fingerprint", nullptr},
         {"choices", json::array()}};
  if (!choice.is_null()) c["choices"].push_back(std::move(choice));
  return c;
}

std::string ChatStream::begin() {
  if (text_completion_) return {};
  return sse_data(chunk({{"index", 0},
                         {"delta", {{"role", "assistant"}, {"content", ""}}},
                         {"logprobs", nullptr},
                         {"finish_reason", nullptr}}));
}

std::string ChatStream::deltas(const std::vector<OutputDelta>& deltas) {
  std::string out;
  for (const OutputDelta& d : deltas) {
    json delta;
    if (text_completion_) {
      if (d.kind != OutputDelta::Kind::kText || d.segment != SegmentKind::kContent) continue;
      out += sse_data(chunk({{"index", 0}, {"text", d.text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
      continue;
    }
    if (d.segment == SegmentKind::kToolCall) {
      if (d.kind == OutputDelta::Kind::kSegmentStart) {
        delta = {{"tool_calls",
                  json::array({{{"index", d.tool_idx},
                                {"id", d.call_id},
                                {"type", "function"},
                                {"function", {{"name", d.tool_name}, {"arguments", ""}}}}})}};
      } else if (d.kind == OutputDelta::Kind::kText) {
        delta = {{"tool_calls", json::array({{{"index", d.tool_idx}, {"function", {{"arguments", d.text}}}}})}};
      } else {
        continue;
      }
    } else if (d.kind == OutputDelta::Kind::kText) {
      if (d.segment == SegmentKind::kReasoning) {
        delta = {{"reasoning_content", d.text}, {"reasoning", d.text}};
      } else {
        delta = {{"content", d.text}};
      }
    } else {
      continue;
    }
    out += sse_data(chunk({{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
  }
  return out;
}

std::string ChatStream::end(const std::string& finish_reason, const Usage& usage, bool include_usage) {
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (text_completion_) choice["text"] = "";
  else choice["delta"] = json::object();
  std::string out = sse_data(chunk(std::move(choice)));
  if (include_usage) {
    json u = chunk(nullptr);
    u["usage"] = chat_usage_json(usage);
    out += sse_data(u);
  }
  return out + "data: [DONE]\n\n";
}

std::string ChatStream::error(const ApiError& error) { return sse_data(error_body(error)) + "data: [DONE]\n\n"; }

json ChatStream::object(const OutputAssembler& output, const std::string& finish_reason, const Usage& usage) const {
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (text_completion_) {
    choice["text"] = output.content();
  } else {
    json message{{"role", "assistant"}, {"content", output.content()}, {"refusal", nullptr}};
    if (!output.reasoning().empty()) {
      message["reasoning_content"] = output.reasoning();
      message["reasoning"] = output.reasoning();
    }
    if (!output.tool_calls().empty()) {
      json calls = json::array();
      for (const ToolCall& c : output.tool_calls())
        calls.push_back({{"id", c.call_id},
                         {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      message["tool_calls"] = std::move(calls);
      if (output.content().empty()) message["content"] = nullptr;
    }
    choice["message"] = std::move(message);
  }
  return json{{"id", id_},
              {"object", text_completion_ ? "text_completion" : "chat.completion"},
              {"created", created_},
              {"model", model_},
              {"system_fingerprint", nullptr},
              {"choices", json::array({std::move(choice)})},
              {"usage", chat_usage_json(usage)}};
}

ResponsesStream::ResponsesStream(std::string id, int64_t created, const GenerationRequest& request, std::string model)
    : id_(std::move(id)) {
  response_ = json{{"id", id_},
                   {"object", "response"},
                   {"created_at", created},
                   {"status", "in_progress"},
                   {"model", std::move(model)},
                   {"output", json::array()},
                   {"error", nullptr},
                   {"incomplete_details", nullptr},
                   {"instructions", request.instructions.empty() ? json(nullptr) : json(request.instructions)},
                   {"metadata", request.metadata},
                   {"parallel_tool_calls", false},
                   {"temperature", request.sampling.temperature},
                   {"top_p", request.sampling.top_p},
                   {"tool_choice", request.tools_enabled ? "auto" : "none"},
                   {"tools", request.tools_json},
                   {"max_output_tokens", request.max_tokens ? json(*request.max_tokens) : json(nullptr)},
                   {"previous_response_id", nullptr},
                   {"reasoning",
                    {{"effort", harmony::reasoning_effort_name(request.conversation.options.reasoning)},
                     {"summary", nullptr}}},
                   {"text", {{"format", {{"type", "text"}}}}},
                   {"store", false},
                   {"usage", nullptr}};
}

std::string ResponsesStream::event(const std::string& type, json payload) {
  payload["type"] = type;
  payload["sequence_number"] = sequence_++;
  return sse_event(type, payload);
}

std::string ResponsesStream::item_id(const char* prefix) {
  return fmt::format("{}_{}_{}", prefix, id_.substr(id_.find('_') + 1), item_counter_++);
}

std::string ResponsesStream::begin() {
  std::string out = event("response.created", {{"response", response_}});
  out += event("response.in_progress", {{"response", response_}});
  return out;
}

std::string ResponsesStream::deltas(const std::vector<OutputDelta>& deltas) {
  std::string out;
  for (const OutputDelta& d : deltas) {
    if (d.kind == OutputDelta::Kind::kSegmentStart) {
      ++output_index_;
      item_text_.clear();
      switch (d.segment) {
        case SegmentKind::kReasoning:
          item_ = {{"id", item_id("rs")}, {"type", "reasoning"}, {"summary", json::array()},
                   {"content", json::array()}, {"encrypted_content", nullptr}, {"status", "in_progress"}};
          out += event("response.output_item.added", {{"output_index", output_index_}, {"item", item_}});
          out += event("response.content_part.added", {{"item_id", item_["id"]}, {"output_index", output_index_},
                                                       {"content_index", 0},
                                                       {"part", {{"type", "reasoning_text"}, {"text", ""}}}});
          break;
        case SegmentKind::kContent:
          item_ = {{"id", item_id("msg")}, {"type", "message"}, {"role", "assistant"}, {"status", "in_progress"},
                   {"content", json::array()}};
          out += event("response.output_item.added", {{"output_index", output_index_}, {"item", item_}});
          out += event("response.content_part.added",
                       {{"item_id", item_["id"]}, {"output_index", output_index_}, {"content_index", 0},
                        {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}}}});
          break;
        case SegmentKind::kToolCall:
          item_ = {{"id", item_id("fc")}, {"type", "function_call"}, {"call_id", d.call_id},
                   {"name", d.tool_name}, {"arguments", ""}, {"status", "in_progress"}};
          out += event("response.output_item.added", {{"output_index", output_index_}, {"item", item_}});
          break;
      }
    } else if (d.kind == OutputDelta::Kind::kText) {
      item_text_ += d.text;
      const json where{{"item_id", item_["id"]}, {"output_index", output_index_}};
      json payload = where;
      payload["delta"] = d.text;
      switch (d.segment) {
        case SegmentKind::kReasoning:
          payload["content_index"] = 0;
          out += event("response.reasoning_text.delta", std::move(payload));
          break;
        case SegmentKind::kContent:
          payload["content_index"] = 0;
          payload["logprobs"] = json::array();
          out += event("response.output_text.delta", std::move(payload));
          break;
        case SegmentKind::kToolCall:
          out += event("response.function_call_arguments.delta", std::move(payload));
          break;
      }
    } else {
      json where{{"item_id", item_["id"]}, {"output_index", output_index_}};
      switch (d.segment) {
        case SegmentKind::kReasoning: {
          const json part{{"type", "reasoning_text"}, {"text", item_text_}};
          json p = where;
          p["content_index"] = 0;
          p["text"] = item_text_;
          out += event("response.reasoning_text.done", p);
          p.erase("text");
          p["part"] = part;
          out += event("response.content_part.done", p);
          item_["content"] = json::array({part});
          break;
        }
        case SegmentKind::kContent: {
          const json part{{"type", "output_text"}, {"text", item_text_}, {"annotations", json::array()}};
          json p = where;
          p["content_index"] = 0;
          p["text"] = item_text_;
          p["logprobs"] = json::array();
          out += event("response.output_text.done", p);
          p.erase("text");
          p.erase("logprobs");
          p["part"] = part;
          out += event("response.content_part.done", p);
          item_["content"] = json::array({part});
          break;
        }
        case SegmentKind::kToolCall: {
          json p = where;
          p["name"] = item_["name"];
          p["arguments"] = item_text_;
          out += event("response.function_call_arguments.done", p);
          item_["arguments"] = item_text_;
          break;
        }
      }
      item_["status"] = "completed";
      out += event("response.output_item.done", {{"output_index", output_index_}, {"item", item_}});
      response_["output"].push_back(item_);
    }
  }
  return out;
}

std::string ResponsesStream::end(Outcome outcome, const Usage& usage, const ApiError& error) {
  response_["usage"] = {{"input_tokens", usage.prompt_tokens},
                        {"input_tokens_details", {{"cached_tokens", usage.cached_tokens}}},
                        {"output_tokens", usage.completion_tokens},
                        {"output_tokens_details", {{"reasoning_tokens", usage.reasoning_tokens}}},
                        {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
  std::string text;
  for (const json& item : response_["output"])
    if (item["type"] == "message")
      for (const json& part : item["content"]) text += part["text"].get<std::string>();
  response_["output_text"] = text;
  switch (outcome) {
    case Outcome::kStop:
      response_["status"] = "completed";
      return event("response.completed", {{"response", response_}});
    case Outcome::kLength:
      response_["status"] = "incomplete";
      response_["incomplete_details"] = {{"reason", "max_output_tokens"}};
      return event("response.incomplete", {{"response", response_}});
    case Outcome::kError:
      break;
  }
  response_["status"] = "failed";
  response_["error"] = {{"code", error.code.empty() ? "server_error" : error.code}, {"message", error.message}};
  return event("response.failed", {{"response", response_}});
}

}  // namespace hetmoe::server
