#include "runtime/app/server/openai_api.h"

#include <fmt/format.h>

#include <map>

namespace hetmoe::server {

using nlohmann::json;

namespace {

ApiError bad(std::string param, std::string message, std::string code = "") {
  ApiError e;
  e.status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

ApiError wrong_type(const std::string& param, const std::string& expected, const json& got) {
  return bad(param, fmt::format("'{}': expected {}, got {}", param, expected, type_name(got)));
}

bool has(const json& o, const char* key) { return o.contains(key) && !o.at(key).is_null(); }

/// A number field in [lo, hi]; absent or null leaves *out.
std::optional<ApiError> number_field(const json& body, const char* key, double lo, double hi, float* out) {
  if (!has(body, key)) return std::nullopt;
  const json& v = body.at(key);
  if (!v.is_number()) return wrong_type(key, fmt::format("a number in [{}, {}]", lo, hi), v);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) return bad(key, fmt::format("'{}': expected a number in [{}, {}], got {}", key, lo, hi, x));
  *out = static_cast<float>(x);
  return std::nullopt;
}

std::optional<ApiError> count_field(const json& body, const char* key, std::optional<uint32_t>* out) {
  if (!has(body, key)) return std::nullopt;
  const json& v = body.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (int64_t{1} << 30))
    return bad(key, fmt::format("'{}': expected a positive integer, got {}", key, v.dump()));
  *out = static_cast<uint32_t>(v.get<int64_t>());
  return std::nullopt;
}

std::optional<ApiError> bool_field(const json& body, const char* key, bool* out) {
  if (!has(body, key)) return std::nullopt;
  if (!body.at(key).is_boolean()) return wrong_type(key, "a boolean", body.at(key));
  *out = body.at(key).get<bool>();
  return std::nullopt;
}

/// Fields every generating endpoint shares: model, stream, temperature, top_p, seed, stop, n, and refusals of what
/// is not supported.
std::optional<ApiError> common_fields(const json& body, GenerationRequest* out) {
  out->sampling = SamplerParams{};
  out->sampling.temperature = 1.0f;
  out->sampling.top_p = 1.0f;
  out->sampling.top_k = 0;
  out->sampling.min_p = 0.0f;
  if (has(body, "model")) {
    if (!body.at("model").is_string()) return wrong_type("model", "a string", body.at("model"));
    out->model = body.at("model").get<std::string>();
  }
  if (auto e = bool_field(body, "stream", &out->stream)) return e;
  if (auto e = bool_field(body, "cache_prompt", &out->cache_prompt)) return e;
  if (auto e = number_field(body, "temperature", 0.0, 2.0, &out->sampling.temperature)) return e;
  if (auto e = number_field(body, "top_p", 0.0, 1.0, &out->sampling.top_p)) return e;
  if (out->sampling.top_p <= 0.0f) return bad("top_p", "'top_p': expected a number in (0, 1], got 0");
  if (has(body, "seed")) {
    const json& v = body.at("seed");
    if (!v.is_number_integer()) return wrong_type("seed", "an integer", v);
    out->sampling.seed = static_cast<uint64_t>(v.get<int64_t>());
    out->seed_given = true;
  }
  if (has(body, "n")) {
    const json& v = body.at("n");
    if (!v.is_number_integer() || v.get<int64_t>() != 1)
      return bad("n", fmt::format("'n': only 1 choice per request is supported, got {}", v.dump()));
  }
  if (has(body, "stop")) {
    const json& v = body.at("stop");
    if (v.is_string()) {
      out->stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (v.size() > 4) return bad("stop", fmt::format("'stop': at most 4 strings, got {}", v.size()));
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string()) return wrong_type(fmt::format("stop[{}]", i), "a string", v[i]);
        out->stop.push_back(v[i].get<std::string>());
      }
    } else {
      return wrong_type("stop", "a string or an array of strings", v);
    }
  }
  for (const char* key : {"logprobs", "top_logprobs", "logit_bias", "echo", "suffix"}) {
    if (!has(body, key)) continue;
    const json& v = body.at(key);
    if ((v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty())) continue;
    return bad(key, fmt::format("'{}' is not supported by this server", key), "unsupported_parameter");
  }
  if (has(body, "best_of") && !(body.at("best_of").is_number_integer() && body.at("best_of").get<int64_t>() == 1))
    return bad("best_of", "'best_of': only 1 is supported", "unsupported_parameter");
  for (const char* key : {"frequency_penalty", "presence_penalty"}) {
    if (!has(body, key)) continue;
    if (!body.at(key).is_number()) return wrong_type(key, "a number", body.at(key));
    if (body.at(key).get<double>() != 0.0)
      return bad(key, fmt::format("'{}' other than 0 is not supported by this server", key), "unsupported_parameter");
  }
  return std::nullopt;
}

std::optional<ApiError> reasoning_effort(const json& value, const std::string& param, harmony::ReasoningEffort* out) {
  if (!value.is_string()) return wrong_type(param, "\"low\", \"medium\" or \"high\"", value);
  std::string name = value.get<std::string>();
  if (name == "minimal") name = "low";
  auto effort = harmony::parse_reasoning_effort(name);
  if (!effort)
    return bad(param, fmt::format("'{}': expected \"low\", \"medium\" or \"high\", got \"{}\"", param, name));
  *out = *effort;
  return std::nullopt;
}

/// Text of a message content: a string, or an array of parts whose type is in `text_types` ({type, text}).
std::optional<ApiError> content_text(const json& content, const std::string& param,
                                     std::initializer_list<const char*> text_types, std::string* out) {
  out->clear();
  if (content.is_null()) return std::nullopt;
  if (content.is_string()) {
    *out = content.get<std::string>();
    return std::nullopt;
  }
  if (!content.is_array()) return wrong_type(param, "a string or an array of content parts", content);
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string p = fmt::format("{}[{}]", param, j);
    if (!part.is_object()) return wrong_type(p, "an object", part);
    if (!has(part, "type") || !part.at("type").is_string())
      return bad(p + ".type", fmt::format("'{}.type': expected a string", p));
    const std::string type = part.at("type").get<std::string>();
    bool ok = false;
    for (const char* t : text_types) ok = ok || type == t;
    if (!ok) {
      std::string names;
      for (const char* t : text_types) names += fmt::format("{}\"{}\"", names.empty() ? "" : ", ", t);
      return bad(p + ".type", fmt::format("'{}.type': only text parts ({}) are supported, got \"{}\"", p, names, type),
                 "unsupported_content_type");
    }
    if (!has(part, "text") || !part.at("text").is_string())
      return bad(p + ".text", fmt::format("'{}.text': expected a string", p));
    *out += part.at("text").get<std::string>();
  }
  return std::nullopt;
}

/// One function tool: {name, description?, parameters?} (flat, Responses) or {function: {...}} (chat).
std::optional<ApiError> function_tool(const json& fn, const std::string& param, harmony::ToolDefinition* out) {
  if (!fn.is_object()) return wrong_type(param, "an object", fn);
  if (!has(fn, "name") || !fn.at("name").is_string() || fn.at("name").get<std::string>().empty())
    return bad(param + ".name", fmt::format("'{}.name': expected a non-empty string", param));
  out->name = fn.at("name").get<std::string>();
  out->description.clear();
  if (has(fn, "description")) {
    if (!fn.at("description").is_string()) return wrong_type(param + ".description", "a string", fn.at("description"));
    out->description = fn.at("description").get<std::string>();
  }
  out->parameters.clear();
  if (has(fn, "parameters")) {
    if (!fn.at("parameters").is_object())
      return wrong_type(param + ".parameters", "a JSON schema object", fn.at("parameters"));
    out->parameters = fn.at("parameters").dump();
  }
  return std::nullopt;
}

/// tools and tool_choice. chat_shape: {type:"function", function:{...}}; else Responses' flat {type, name, ...}.
std::optional<ApiError> tools_fields(const json& body, bool chat_shape, GenerationRequest* out) {
  std::vector<harmony::ToolDefinition> tools;
  if (has(body, "tools")) {
    const json& list = body.at("tools");
    if (!list.is_array()) return wrong_type("tools", "an array", list);
    for (size_t i = 0; i < list.size(); ++i) {
      const json& t = list[i];
      const std::string p = fmt::format("tools[{}]", i);
      if (!t.is_object()) return wrong_type(p, "an object", t);
      if (!has(t, "type") || !t.at("type").is_string())
        return bad(p + ".type", fmt::format("'{}.type': expected a string", p));
      const std::string type = t.at("type").get<std::string>();
      if (type != "function") {
        // Harmony has no place for other tool types (Codex CLI sends "namespace", "web_search", ...): left out.
        out->notes.push_back(fmt::format("{} of type \"{}\"{} is left out: only function tools are rendered", p, type,
                                         has(t, "name") && t.at("name").is_string()
                                             ? fmt::format(" (\"{}\")", t.at("name").get<std::string>())
                                             : ""));
        continue;
      }
      harmony::ToolDefinition def;
      if (chat_shape) {
        if (!has(t, "function")) return bad(p + ".function", fmt::format("'{}.function': expected an object", p));
        if (auto e = function_tool(t.at("function"), p + ".function", &def)) return e;
      } else {
        if (auto e = function_tool(t, p, &def)) return e;
      }
      tools.push_back(std::move(def));
    }
    out->tools_json = list;
  }
  bool none = false;
  if (has(body, "tool_choice")) {
    const json& c = body.at("tool_choice");
    if (c.is_string() && (c == "auto" || c == "none")) {
      none = c == "none";
    } else if (c.is_string() && c == "required") {
      return bad("tool_choice", "'tool_choice': \"required\" is not supported (expected \"auto\" or \"none\")",
                 "unsupported_parameter");
    } else {
      return bad("tool_choice", fmt::format("'tool_choice': expected \"auto\" or \"none\", got {}", c.dump()),
                 "unsupported_parameter");
    }
  }
  if (!none) out->conversation.options.tools = std::move(tools);
  out->tools_enabled = !none && !out->conversation.options.tools.empty();
  return std::nullopt;
}

void add_instructions(GenerationRequest* out, const std::string& text) {
  if (text.empty()) return;
  std::string& dev = out->conversation.options.developer_instructions;
  if (!dev.empty()) dev += "\n\n";
  dev += text;
}

harmony::Message tool_call_message(const std::string& name, const std::string& arguments) {
  return harmony::Message{"assistant", "commentary", "functions." + name, "<|constrain|>json", arguments};
}

harmony::Message tool_result_message(const std::string& name, const std::string& output) {
  return harmony::Message{"functions." + name, "commentary", "assistant", "", output};
}

}  // namespace

json error_body(const ApiError& error) {
  return json{{"error",
               {{"message", error.message},
                {"type", error.type},
                {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
}

std::optional<ApiError> parse_json_body(const std::string& text, json* out) {
  try {
    *out = json::parse(text);
  } catch (const json::parse_error& e) {
    return bad("", fmt::format("the request body is not valid JSON: {}", e.what()), "invalid_json");
  }
  if (!out->is_object()) return bad("", fmt::format("the request body must be a JSON object, got {}", type_name(*out)));
  return std::nullopt;
}

std::optional<ApiError> parse_chat_request(const json& body, GenerationRequest* out) {
  if (auto e = common_fields(body, out)) return e;
  if (auto e = count_field(body, "max_tokens", &out->max_tokens)) return e;
  if (auto e = count_field(body, "max_completion_tokens", &out->max_tokens)) return e;
  if (has(body, "stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) return wrong_type("stream_options", "an object", so);
    if (auto e = bool_field(so, "include_usage", &out->include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  if (has(body, "reasoning_effort")) {
    if (auto e = reasoning_effort(body.at("reasoning_effort"), "reasoning_effort", &out->conversation.options.reasoning))
      return e;
  }
  if (has(body, "reasoning")) {
    const json& r = body.at("reasoning");
    if (!r.is_object()) return wrong_type("reasoning", "an object", r);
    if (has(r, "effort"))
      if (auto e = reasoning_effort(r.at("effort"), "reasoning.effort", &out->conversation.options.reasoning)) return e;
  }
  if (has(body, "response_format")) {
    const json& f = body.at("response_format");
    if (!f.is_object() || !has(f, "type") || f.at("type") != "text")
      return bad("response_format", "'response_format': only {\"type\": \"text\"} is supported",
                 "unsupported_parameter");
  }
  if (auto e = tools_fields(body, true, out)) return e;

  if (!body.contains("messages")) return bad("messages", "'messages' is required");
  const json& messages = body.at("messages");
  if (!messages.is_array()) return wrong_type("messages", "an array of messages", messages);
  if (messages.empty()) return bad("messages", "'messages': expected at least one message");
  std::map<std::string, std::string> call_names;  // tool_call id -> function name
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string p = fmt::format("messages[{}]", i);
    if (!m.is_object()) return wrong_type(p, "an object", m);
    if (!has(m, "role") || !m.at("role").is_string())
      return bad(p + ".role", fmt::format("'{}.role': expected a string", p));
    const std::string role = m.at("role").get<std::string>();
    std::string text;
    const json content = m.contains("content") ? m.at("content") : json(nullptr);
    if (role == "system" || role == "developer") {
      if (auto e = content_text(content, p + ".content", {"text"}, &text)) return e;
      add_instructions(out, text);
    } else if (role == "user") {
      if (content.is_null()) return bad(p + ".content", fmt::format("'{}.content' is required", p));
      if (auto e = content_text(content, p + ".content", {"text"}, &text)) return e;
      out->conversation.messages.push_back(harmony::Message{"user", "", "", "", text});
    } else if (role == "assistant") {
      for (const char* key : {"reasoning_content", "reasoning"}) {
        if (!has(m, key)) continue;
        if (!m.at(key).is_string()) return wrong_type(p + "." + key, "a string", m.at(key));
        if (!m.at(key).get<std::string>().empty())
          out->conversation.messages.push_back(
              harmony::Message{"assistant", "analysis", "", "", m.at(key).get<std::string>()});
        break;
      }
      if (auto e = content_text(content, p + ".content", {"text", "refusal"}, &text)) return e;
      const bool has_calls = has(m, "tool_calls");
      if (!text.empty())
        out->conversation.messages.push_back(
            harmony::Message{"assistant", has_calls ? "commentary" : "final", "", "", text});
      if (has_calls) {
        const json& calls = m.at("tool_calls");
        if (!calls.is_array()) return wrong_type(p + ".tool_calls", "an array", calls);
        for (size_t j = 0; j < calls.size(); ++j) {
          const std::string cp = fmt::format("{}.tool_calls[{}]", p, j);
          const json& c = calls[j];
          if (!c.is_object() || !has(c, "function") || !c.at("function").is_object())
            return bad(cp + ".function", fmt::format("'{}.function': expected an object", cp));
          const json& fn = c.at("function");
          if (!has(fn, "name") || !fn.at("name").is_string())
            return bad(cp + ".function.name", fmt::format("'{}.function.name': expected a string", cp));
          std::string args = "{}";
          if (has(fn, "arguments")) {
            if (!fn.at("arguments").is_string())
              return wrong_type(cp + ".function.arguments", "a JSON string", fn.at("arguments"));
            args = fn.at("arguments").get<std::string>();
          }
          const std::string name = fn.at("name").get<std::string>();
          if (has(c, "id") && c.at("id").is_string()) call_names[c.at("id").get<std::string>()] = name;
          out->conversation.messages.push_back(tool_call_message(name, args));
        }
      }
    } else if (role == "tool" || role == "function") {
      if (auto e = content_text(content, p + ".content", {"text"}, &text)) return e;
      std::string name;
      if (has(m, "tool_call_id")) {
        if (!m.at("tool_call_id").is_string()) return wrong_type(p + ".tool_call_id", "a string", m.at("tool_call_id"));
        auto it = call_names.find(m.at("tool_call_id").get<std::string>());
        if (it != call_names.end()) name = it->second;
      }
      if (name.empty() && has(m, "name") && m.at("name").is_string()) name = m.at("name").get<std::string>();
      if (name.empty())
        return bad(p + ".tool_call_id",
                   fmt::format("'{}.tool_call_id': expected the id of a tool call of an earlier assistant message "
                               "(or a 'name')",
                               p));
      out->conversation.messages.push_back(tool_result_message(name, text));
    } else {
      return bad(p + ".role",
                 fmt::format("'{}.role': expected \"system\", \"developer\", \"user\", \"assistant\" or \"tool\", got "
                             "\"{}\"",
                             p, role));
    }
  }
  return std::nullopt;
}

std::optional<ApiError> parse_responses_request(const json& body, GenerationRequest* out) {
  if (auto e = common_fields(body, out)) return e;
  if (auto e = count_field(body, "max_output_tokens", &out->max_tokens)) return e;
  if (has(body, "previous_response_id"))
    return bad("previous_response_id",
               "'previous_response_id' is not supported: this server keeps no responses; send the whole conversation "
               "in 'input' (as with store: false)",
               "unsupported_parameter");
  if (has(body, "reasoning")) {
    const json& r = body.at("reasoning");
    if (!r.is_object()) return wrong_type("reasoning", "an object", r);
    if (has(r, "effort"))
      if (auto e = reasoning_effort(r.at("effort"), "reasoning.effort", &out->conversation.options.reasoning)) return e;
  }
  if (has(body, "text")) {
    const json& t = body.at("text");
    if (!t.is_object()) return wrong_type("text", "an object", t);
    if (has(t, "format")) {
      const json& f = t.at("format");
      if (!f.is_object() || !has(f, "type") || f.at("type") != "text")
        return bad("text.format", "'text.format': only {\"type\": \"text\"} is supported", "unsupported_parameter");
    }
  }
  if (has(body, "metadata")) {
    if (!body.at("metadata").is_object()) return wrong_type("metadata", "an object", body.at("metadata"));
    out->metadata = body.at("metadata");
  }
  if (has(body, "instructions")) {
    if (!body.at("instructions").is_string()) return wrong_type("instructions", "a string", body.at("instructions"));
    out->instructions = body.at("instructions").get<std::string>();
    add_instructions(out, out->instructions);
  }
  if (auto e = tools_fields(body, false, out)) return e;

  if (!body.contains("input")) return bad("input", "'input' is required");
  const json& input = body.at("input");
  if (input.is_string()) {
    out->conversation.messages.push_back(harmony::Message{"user", "", "", "", input.get<std::string>()});
    return std::nullopt;
  }
  if (!input.is_array()) return wrong_type("input", "a string or an array of input items", input);
  if (input.empty()) return bad("input", "'input': expected at least one item");
  std::map<std::string, std::string> call_names;  // call_id -> function name
  for (size_t i = 0; i < input.size(); ++i) {
    const json& item = input[i];
    const std::string p = fmt::format("input[{}]", i);
    if (!item.is_object()) return wrong_type(p, "an object", item);
    std::string type = "message";
    if (has(item, "type")) {
      if (!item.at("type").is_string()) return wrong_type(p + ".type", "a string", item.at("type"));
      type = item.at("type").get<std::string>();
    }
    std::string text;
    if (type == "message") {
      if (!has(item, "role") || !item.at("role").is_string())
        return bad(p + ".role", fmt::format("'{}.role': expected a string", p));
      const std::string role = item.at("role").get<std::string>();
      const json content = item.contains("content") ? item.at("content") : json(nullptr);
      if (content.is_null()) return bad(p + ".content", fmt::format("'{}.content' is required", p));
      if (auto e = content_text(content, p + ".content", {"input_text", "output_text", "text", "refusal"}, &text))
        return e;
      if (role == "system" || role == "developer") {
        add_instructions(out, text);
      } else if (role == "user") {
        out->conversation.messages.push_back(harmony::Message{"user", "", "", "", text});
      } else if (role == "assistant") {
        out->conversation.messages.push_back(harmony::Message{"assistant", "final", "", "", text});
      } else {
        return bad(p + ".role",
                   fmt::format("'{}.role': expected \"system\", \"developer\", \"user\" or \"assistant\", got \"{}\"",
                               p, role));
      }
    } else if (type == "reasoning") {
      for (const char* key : {"content", "summary"}) {
        if (!has(item, key)) continue;
        const json& parts = item.at(key);
        if (!parts.is_array()) return wrong_type(p + "." + key, "an array", parts);
        for (size_t j = 0; j < parts.size(); ++j)
          if (parts[j].is_object() && has(parts[j], "text") && parts[j].at("text").is_string())
            text += parts[j].at("text").get<std::string>();
        if (!text.empty()) break;
      }
      if (!text.empty()) out->conversation.messages.push_back(harmony::Message{"assistant", "analysis", "", "", text});
    } else if (type == "function_call") {
      for (const char* key : {"name", "arguments"})
        if (!has(item, key) || !item.at(key).is_string())
          return bad(p + "." + key, fmt::format("'{}.{}': expected a string", p, key));
      const std::string name = item.at("name").get<std::string>();
      if (has(item, "call_id") && item.at("call_id").is_string()) call_names[item.at("call_id").get<std::string>()] = name;
      out->conversation.messages.push_back(tool_call_message(name, item.at("arguments").get<std::string>()));
    } else if (type == "function_call_output") {
      if (!has(item, "call_id") || !item.at("call_id").is_string())
        return bad(p + ".call_id", fmt::format("'{}.call_id': expected a string", p));
      auto it = call_names.find(item.at("call_id").get<std::string>());
      if (it == call_names.end())
        return bad(p + ".call_id", fmt::format("'{}.call_id': \"{}\" is not the call_id of an earlier function_call "
                                               "item",
                                               p, item.at("call_id").get<std::string>()));
      const json output = item.contains("output") ? item.at("output") : json("");
      if (auto e = content_text(output, p + ".output", {"input_text", "output_text", "text"}, &text)) return e;
      out->conversation.messages.push_back(tool_result_message(it->second, text));
    } else {
      out->notes.push_back(fmt::format("{} of type \"{}\" is left out: harmony has no place for it", p, type));
    }
  }
  return std::nullopt;
}

std::optional<ApiError> parse_completions_request(const json& body, GenerationRequest* out) {
  if (auto e = common_fields(body, out)) return e;
  if (auto e = count_field(body, "max_tokens", &out->max_tokens)) return e;
  if (has(body, "stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) return wrong_type("stream_options", "an object", so);
    if (auto e = bool_field(so, "include_usage", &out->include_usage)) return e;
  }
  out->raw = true;
  if (!body.contains("prompt")) return bad("prompt", "'prompt' is required");
  const json& prompt = body.at("prompt");
  if (prompt.is_string()) {
    out->raw_prompt = prompt.get<std::string>();
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
    out->raw_prompt = prompt[0].get<std::string>();
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (!prompt[i].is_number_integer() || prompt[i].get<int64_t>() < 0 || prompt[i].get<int64_t>() > INT32_MAX)
        return bad(fmt::format("prompt[{}]", i), fmt::format("'prompt[{}]': expected a token id", i));
      out->raw_prompt_ids.push_back(static_cast<int32_t>(prompt[i].get<int64_t>()));
    }
  } else {
    return bad("prompt", "'prompt': expected a string (or an array of one string, or of token ids)");
  }
  if (out->raw_prompt.empty() && out->raw_prompt_ids.empty()) return bad("prompt", "'prompt': expected a non-empty prompt");
  return std::nullopt;
}

}  // namespace hetmoe::server
