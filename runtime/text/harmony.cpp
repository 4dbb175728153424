#include "runtime/text/harmony.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

namespace hetmoe::harmony {
namespace {

using Json = nlohmann::ordered_json;  // keeps the schema's property order, as the model's template does

// TypeScript-style type of a JSON schema (the model's chat template, simplified to the types function tools use):
// string (or a union of its enum values), number, boolean, T[], an inline object, else any; " | null" if nullable.
std::string typescript_type(const Json& spec) {
  const std::string type = spec.contains("type") && spec["type"].is_string() ? spec["type"].get<std::string>() : "";
  std::string ts;
  if (type == "string" && spec.contains("enum") && spec["enum"].is_array()) {
    for (const Json& value : spec["enum"]) {
      if (!ts.empty()) ts += " | ";
      ts += "\"" + (value.is_string() ? value.get<std::string>() : value.dump()) + "\"";
    }
  } else if (type == "string") {
    ts = "string";
  } else if (type == "number" || type == "integer") {
    ts = "number";
  } else if (type == "boolean") {
    ts = "boolean";
  } else if (type == "array") {
    ts = spec.contains("items") && spec["items"].is_object() ? typescript_type(spec["items"]) + "[]" : "any[]";
  } else if (type == "object" && spec.contains("properties") && spec["properties"].is_object()) {
    const Json required = spec.value("required", Json::array());
    ts = "{\n";
    bool first = true;
    for (const auto& [name, property] : spec["properties"].items()) {
      if (!first) ts += ", ";
      first = false;
      const bool is_required = std::find(required.begin(), required.end(), Json(name)) != required.end();
      ts += name + (is_required ? "" : "?") + ": " + typescript_type(property);
    }
    ts += "}";
  } else if (type == "object") {
    ts = "object";
  } else {
    ts = "any";
  }
  if (spec.value("nullable", false) && !spec.contains("enum")) ts += " | null";
  return ts;
}

Expected<std::string> tool_declaration(const ToolDefinition& tool) {
  std::string text = "// " + tool.description + "\ntype " + tool.name + " = ";
  Json params = Json::object();
  if (!tool.parameters.empty()) {
    params = Json::parse(tool.parameters, nullptr, false);
    if (params.is_discarded() || !params.is_object()) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("tool {}: parameters are not a JSON object schema: {}", tool.name, tool.parameters));
    }
  }
  if (!params.contains("properties") || !params["properties"].is_object() || params["properties"].empty()) {
    return text + "() => any;\n\n";
  }
  const Json required = params.value("required", Json::array());
  text += "(_: {\n";
  for (const auto& [name, property] : params["properties"].items()) {
    if (property.contains("description") && property["description"].is_string()) {
      text += "// " + property["description"].get<std::string>() + "\n";
    }
    const bool is_required = std::find(required.begin(), required.end(), Json(name)) != required.end();
    text += name + (is_required ? "" : "?") + ": " + typescript_type(property);
    if (property.contains("default")) {
      const Json& value = property["default"];
      const bool raw = property.contains("enum") && value.is_string();
      text += ", // default: " + (raw ? value.get<std::string>() : value.dump());
    }
    text += ",\n";
  }
  return text + "}) => any;\n\n";
}

void append_text(const Tokenizer& tokenizer, std::string_view text, std::vector<int32_t>* out) {
  if (text.empty()) return;
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  out->insert(out->end(), ids.begin(), ids.end());
}

// The words of `text` separated by ASCII white space.
std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
    const size_t start = i;
    while (i < text.size() && !(text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

}  // namespace

const char* reasoning_effort_name(ReasoningEffort effort) {
  switch (effort) {
    case ReasoningEffort::kLow: return "low";
    case ReasoningEffort::kMedium: return "medium";
    case ReasoningEffort::kHigh: return "high";
  }
  return "medium";
}

std::optional<ReasoningEffort> parse_reasoning_effort(std::string_view name) {
  if (name == "low") return ReasoningEffort::kLow;
  if (name == "medium") return ReasoningEffort::kMedium;
  if (name == "high") return ReasoningEffort::kHigh;
  return std::nullopt;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  return fmt::format("{:04}-{:02}-{:02}", local.tm_year + 1900, local.tm_mon + 1, local.tm_mday);
}

std::string system_message_text(const ConversationOptions& options) {
  std::string text = options.model_identity + "\nKnowledge cutoff: " + options.knowledge_cutoff + "\nCurrent date: " +
                     (options.current_date.empty() ? today() : options.current_date) + "\n\nReasoning: " +
                     reasoning_effort_name(options.reasoning) +
                     "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.";
  if (!options.tools.empty()) text += "\nCalls to these tools must go to the commentary channel: 'functions'.";
  return text;
}

Expected<std::string> developer_message_text(const ConversationOptions& options) {
  std::string text;
  if (!options.developer_instructions.empty()) text += "# Instructions\n\n" + options.developer_instructions + "\n\n";
  if (!options.tools.empty()) {
    text += "# Tools\n\n## functions\n\nnamespace functions {\n\n";
    for (const ToolDefinition& tool : options.tools) {
      Expected<std::string> declaration = tool_declaration(tool);
      if (!declaration) return declaration.error();
      text += *declaration;
    }
    text += "} // namespace functions";
  }
  return text;
}

Expected<SpecialTokens> SpecialTokens::find(const Tokenizer& tokenizer) {
  SpecialTokens special;
  const std::pair<const char*, int32_t*> required[] = {
      {"<|start|>", &special.start},     {"<|end|>", &special.end},         {"<|message|>", &special.message},
      {"<|channel|>", &special.channel}, {"<|constrain|>", &special.constrain}, {"<|return|>", &special.return_},
      {"<|call|>", &special.call},
  };
  for (const auto& [text, slot] : required) {
    const std::optional<int32_t> id = tokenizer.find_token(text);
    if (!id || !tokenizer.is_special(*id)) {
      return make_error(ErrorCode::kMissing, fmt::format("the vocabulary has no special token {} (not a harmony "
                                                         "model?)", text));
    }
    *slot = *id;
  }
  if (const std::optional<int32_t> id = tokenizer.find_token("<|endoftext|>"); id && tokenizer.is_special(*id)) {
    special.endoftext = *id;
  }
  return special;
}

void render_message(const Tokenizer& tokenizer, const SpecialTokens& special, const Message& message,
                    Terminator terminator, std::vector<int32_t>* out) {
  out->push_back(special.start);
  append_text(tokenizer, message.role, out);
  if (!message.recipient.empty()) append_text(tokenizer, " to=" + message.recipient, out);
  if (!message.channel.empty()) {
    out->push_back(special.channel);
    append_text(tokenizer, message.channel, out);
  }
  if (!message.content_type.empty()) {
    constexpr std::string_view kConstrain = "<|constrain|>";
    if (message.content_type.starts_with(kConstrain)) {
      append_text(tokenizer, " ", out);
      out->push_back(special.constrain);
      append_text(tokenizer, std::string_view(message.content_type).substr(kConstrain.size()), out);
    } else {
      append_text(tokenizer, " " + message.content_type, out);
    }
  }
  out->push_back(special.message);
  append_text(tokenizer, message.content, out);
  switch (terminator) {
    case Terminator::kEnd: out->push_back(special.end); break;
    case Terminator::kReturn: out->push_back(special.return_); break;
    case Terminator::kCall: out->push_back(special.call); break;
  }
}

Expected<std::vector<int32_t>> render(const Tokenizer& tokenizer, const Conversation& conversation) {
  Expected<SpecialTokens> special = SpecialTokens::find(tokenizer);
  if (!special) return special.error();
  Expected<std::string> developer = developer_message_text(conversation.options);
  if (!developer) return developer.error();
  std::vector<int32_t> ids;
  render_message(tokenizer, *special, Message{"system", "", "", "", system_message_text(conversation.options)},
                 Terminator::kEnd, &ids);
  if (!developer->empty()) {
    render_message(tokenizer, *special, Message{"developer", "", "", "", *developer}, Terminator::kEnd, &ids);
  }
  const std::vector<Message>& messages = conversation.messages;
  auto channel_of = [](const Message& m) { return m.role == "assistant" && m.channel.empty() ? "final" : m.channel; };
  size_t last_final_idx = messages.size();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "assistant" && channel_of(messages[i]) == "final") last_final_idx = i;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    Message message = messages[i];
    if (message.role == "assistant") {
      if (message.channel == "analysis" && last_final_idx < messages.size() && i < last_final_idx) continue;
      message.channel = channel_of(message);
    }
    const bool tool_call = message.role == "assistant" && message.recipient.starts_with("functions.");
    render_message(tokenizer, *special, message, tool_call ? Terminator::kCall : Terminator::kEnd, &ids);
  }
  return ids;
}

Expected<std::vector<int32_t>> render_for_completion(const Tokenizer& tokenizer, const Conversation& conversation) {
  Expected<std::vector<int32_t>> ids = render(tokenizer, conversation);
  if (!ids) return ids.error();
  Expected<SpecialTokens> special = SpecialTokens::find(tokenizer);
  if (!special) return special.error();
  ids->push_back(special->start);
  append_text(tokenizer, "assistant", &*ids);
  return ids;
}

bool is_reasoning_channel(std::string_view channel) { return channel == "analysis" || channel == "commentary"; }

// ---------------------------------------------------------------------------------------------------------------
// Parser.

Parser::Parser(const Tokenizer& tokenizer, const SpecialTokens& special)
    : tokenizer_(&tokenizer), special_(special), decoder_(tokenizer) {
  begin_header("assistant");
}

Expected<Parser> Parser::create(const Tokenizer& tokenizer) {
  Expected<SpecialTokens> special = SpecialTokens::find(tokenizer);
  if (!special) return special.error();
  return Parser(tokenizer, *special);
}

void Parser::begin_header(std::string role_text) {
  state_ = State::kHeader;
  header_role_ = std::move(role_text);
  header_implicit_bytes_ = header_role_.size();
  header_channel_.clear();
  header_constrain_.clear();
  header_part_ = 0;
  current_ = Message{};
  current_malformed_ = false;
}

void Parser::header_to_content(bool malformed, std::vector<Event>* events) {
  const std::vector<std::string> role_words = split_words(header_role_);
  const std::vector<std::string> channel_words = split_words(header_channel_);
  current_ = Message{};
  current_.role = role_words.empty() ? "assistant" : role_words[0];
  current_malformed_ = malformed;
  std::string surfaced;  // a malformed header's generated text, given back as content
  if (!malformed) {
    for (size_t i = 1; i < role_words.size(); ++i) {
      if (role_words[i].starts_with("to=")) current_.recipient = role_words[i].substr(3);
    }
    for (size_t i = 1; i < channel_words.size(); ++i) {
      if (channel_words[i].starts_with("to=")) {
        current_.recipient = channel_words[i].substr(3);
      } else {
        current_.content_type += (current_.content_type.empty() ? "" : " ") + channel_words[i];
      }
    }
    const std::vector<std::string> constrain_words = split_words(header_constrain_);
    if (header_part_ == 2) {
      current_.content_type = "<|constrain|>" + (constrain_words.empty() ? std::string() : constrain_words[0]);
    }
    if (!channel_words.empty()) current_.channel = channel_words[0];
  } else {
    surfaced = header_role_.substr(std::min(header_implicit_bytes_, header_role_.size()));
    std::string_view channel_rest = header_channel_;
    while (!channel_rest.empty() && (channel_rest.front() == ' ' || channel_rest.front() == '\n')) {
      channel_rest.remove_prefix(1);
    }
    if (!channel_words.empty()) {
      current_.channel = channel_words[0];
      channel_rest.remove_prefix(std::min(channel_rest.size(), channel_words[0].size()));
      while (!channel_rest.empty() && channel_rest.front() == ' ') channel_rest.remove_prefix(1);
    }
    surfaced += std::string(channel_rest) + header_constrain_;
  }
  state_ = State::kContent;
  Event start;
  start.kind = EventKind::kMessageStart;
  start.message = current_;
  start.malformed = malformed;
  events->push_back(std::move(start));
  for (char byte : surfaced) {
    const std::optional<int32_t> id = tokenizer_->find_token(std::string_view(&byte, 1));
    if (id) append_content_token(*id, events);
  }
}

void Parser::append_content_token(int32_t token_id, std::vector<Event>* events) {
  Expected<std::string> text = decoder_.push(token_id);
  if (!text || text->empty()) return;
  current_.content += *text;
  Event event;
  event.kind = EventKind::kContent;
  event.text = std::move(*text);
  events->push_back(std::move(event));
}

void Parser::end_message(int32_t terminator, std::vector<Event>* events) {
  std::string rest = decoder_.flush();
  if (!rest.empty()) {
    current_.content += rest;
    Event event;
    event.kind = EventKind::kContent;
    event.text = std::move(rest);
    events->push_back(std::move(event));
  }
  Event end;
  end.kind = EventKind::kMessageEnd;
  end.message = current_;
  end.terminator = terminator;
  end.malformed = current_malformed_;
  events->push_back(std::move(end));
  messages_.push_back(current_);
  current_ = Message{};
  current_malformed_ = false;
  state_ = State::kOutside;
}

void Parser::push(int32_t token_id, std::vector<Event>* events) {
  const bool is_terminator = token_id == special_.return_ || token_id == special_.call ||
                             (special_.endoftext >= 0 && token_id == special_.endoftext);
  auto end_turn = [&] {
    turn_ended_ = true;
    Event event;
    event.kind = EventKind::kTurnEnd;
    event.terminator = token_id;
    events->push_back(std::move(event));
  };
  switch (state_) {
    case State::kOutside:
      if (token_id == special_.start) {
        begin_header("");
      } else if (token_id == special_.channel) {
        begin_header("assistant");
        header_part_ = 1;
      } else if (is_terminator) {
        end_turn();
      } else if (token_id == special_.end) {
        // Nothing open: ignore.
      } else if (token_id == special_.message) {
        begin_header("assistant");
        header_to_content(true, events);
      } else {
        begin_header("assistant");
        header_to_content(true, events);
        append_content_token(token_id, events);
      }
      return;
    case State::kHeader:
      if (token_id == special_.message) {
        header_to_content(false, events);
      } else if (token_id == special_.channel) {
        if (header_part_ >= 1) header_channel_ += ' ';
        header_part_ = 1;
      } else if (token_id == special_.constrain) {
        header_part_ = 2;
      } else if (token_id == special_.end || is_terminator || token_id == special_.start) {
        header_to_content(true, events);
        end_message(token_id == special_.start ? -1 : token_id, events);
        if (is_terminator) end_turn();
        if (token_id == special_.start) begin_header("");
      } else {
        const std::string_view bytes = tokenizer_->token_bytes(token_id);
        std::string& part = header_part_ == 0 ? header_role_ : header_part_ == 1 ? header_channel_ : header_constrain_;
        part += bytes;
        if (header_role_.size() + header_channel_.size() + header_constrain_.size() > kMaxHeaderBytes) {
          header_to_content(true, events);
        }
      }
      return;
    case State::kContent:
      if (token_id == special_.end) {
        end_message(token_id, events);
      } else if (is_terminator) {
        end_message(token_id, events);
        end_turn();
      } else if (token_id == special_.start) {
        end_message(-1, events);
        begin_header("");
      } else if (token_id == special_.channel) {
        end_message(-1, events);
        begin_header("assistant");
        header_part_ = 1;
      } else {
        append_content_token(token_id, events);
      }
      return;
  }
}

void Parser::finish(std::vector<Event>* events) {
  if (state_ == State::kHeader) {
    if (header_role_.size() == header_implicit_bytes_ && header_part_ == 0) {
      state_ = State::kOutside;
      return;
    }
    header_to_content(true, events);
  }
  if (state_ == State::kContent) end_message(-1, events);
}

std::string DisplayFormatter::format(const Event& event) {
  switch (event.kind) {
    case EventKind::kMessageStart: {
      reasoning_ = is_reasoning_channel(event.message.channel) || !event.message.recipient.empty();
      visible_ = !reasoning_ || show_reasoning_;
      if (!reasoning_ || !visible_) return "";
      if (ansi_) return "\x1b[2m";
      std::string label = event.message.channel.empty() ? "reasoning" : event.message.channel;
      if (!event.message.recipient.empty()) label += " to=" + event.message.recipient;
      return "(" + label + ") ";
    }
    case EventKind::kContent:
      return visible_ ? event.text : "";
    case EventKind::kMessageEnd: {
      const bool shown_reasoning = reasoning_ && visible_;
      reasoning_ = false;
      visible_ = true;
      if (!shown_reasoning) return "";
      return ansi_ ? "\x1b[0m\n" : "\n";
    }
    case EventKind::kTurnEnd:
      return "";
  }
  return "";
}

}  // namespace hetmoe::harmony
