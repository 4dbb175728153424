// hetmoe serve's parts without HTTP: OpenAI requests → harmony conversations (and the errors that name the field),
// the model's token stream → reasoning / answer / tool calls (split at every token, garbage included), stop strings
// split at every byte, the SSE framing of both APIs, and the scheduler over a fake multi-sequence forward pass
// (slot independence, queue bound, cancellation, prompt-cache reuse, a failing slot, deadlines).
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/app/server/api_stream.h"
#include "runtime/app/server/harmony_output.h"
#include "runtime/app/server/openai_api.h"
#include "runtime/app/server/scheduler.h"
#include "runtime/app/server/server.h"
#include "tests/vocab_fixture.h"

namespace hetmoe::server {
namespace {

using nlohmann::json;

const test::Vocab& tiny() {
  static const test::Vocab v = test::load_vocab("gpt-oss-tiny.gguf");
  return v;
}

// ---- requests -------------------------------------------------------------------------------------------------

TEST(ServeChatRequest, RendersEveryRoleIntoHarmony) {
  const json body = json::parse(R"({
    "model": "x", "temperature": 0, "max_tokens": 7, "seed": 3, "reasoning_effort": "high",
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "reasoning_content": "Need the tool.", "content": null,
       "tool_calls": [{"id": "call_9", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
      {"role": "assistant", "content": "Sunny."}]})");
  GenerationRequest r;
  auto e = parse_chat_request(body, &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(*r.max_tokens, 7u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_TRUE(r.tools_enabled);
  EXPECT_EQ(r.conversation.options.reasoning, harmony::ReasoningEffort::kHigh);
  EXPECT_EQ(r.conversation.options.developer_instructions, "Be brief.\n\nUse tools.");
  ASSERT_EQ(r.conversation.options.tools.size(), 1u);
  EXPECT_EQ(r.conversation.options.tools[0].name, "get_weather");
  const std::vector<harmony::Message> expected = {
      {"user", "", "", "", "Weather in Paris?"},
      {"assistant", "analysis", "", "", "Need the tool."},
      {"assistant", "commentary", "functions.get_weather", "<|constrain|>json", "{\"city\":\"Paris\"}"},
      {"functions.get_weather", "commentary", "assistant", "", "sunny"},
      {"assistant", "final", "", "", "Sunny."}};
  EXPECT_EQ(r.conversation.messages, expected);
}

TEST(ServeChatRequest, ToolChoiceNoneLeavesToolsOut) {
  GenerationRequest r;
  auto e = parse_chat_request(json::parse(R"({"tool_choice": "none", "messages": [{"role": "user", "content": "x"}],
    "tools": [{"type": "function", "function": {"name": "f"}}]})"), &r);
  ASSERT_FALSE(e);
  EXPECT_FALSE(r.tools_enabled);
  EXPECT_TRUE(r.conversation.options.tools.empty());
}

TEST(ServeChatRequest, EveryBadFieldIsA400NamingIt) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})", "messages[0].tool_call_id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})", "top_p"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", "n"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -3})", "max_completion_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": [1]})", "stop[0]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "seed": "a"})", "seed"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})", "stream"},
      {R"({"messages": [{"role": "user", "content": "x"}], "cache_prompt": 0})", "cache_prompt"},
      {R"({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"})", "reasoning_effort"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", "tools[0].function"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
       "response_format"},
  };
  for (const auto& [text, param] : cases) {
    GenerationRequest r;
    auto e = parse_chat_request(json::parse(text), &r);
    ASSERT_TRUE(e) << text;
    EXPECT_EQ(e->status, 400) << text;
    EXPECT_EQ(e->param, param) << text << " -> " << e->message;
    EXPECT_NE(e->message.find(param.substr(0, param.find('['))), std::string::npos) << e->message;
    const json body = error_body(*e);
    EXPECT_TRUE(body["error"].contains("message") && body["error"].contains("type") && body["error"].contains("code"));
  }
}

TEST(ServeJsonBody, MalformedJsonAndNonObjectsAreErrors) {
  json body;
  auto e = parse_json_body("{\"messages\": [", &body);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "invalid_json");
  EXPECT_TRUE(parse_json_body("[1]", &body));
  EXPECT_FALSE(parse_json_body("{}", &body));
}

TEST(ServeResponsesRequest, AcceptsCodexsRequestAndLeavesUnknownToolTypesOut) {
  std::ifstream in(std::string(HETMOE_TEST_DATA_DIR) + "/codex-responses-request.json");
  if (!in) FAIL() << "tests/data/codex-responses-request.json is missing";
  std::stringstream ss;
  ss << in.rdbuf();
  GenerationRequest r;
  auto e = parse_responses_request(json::parse(ss.str()), &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.tools_enabled);
  EXPECT_FALSE(r.conversation.options.tools.empty());
  EXPECT_FALSE(r.conversation.options.developer_instructions.empty());  // Codex's base prompt (developer message)
  bool namespace_note = false, web_search_note = false;
  for (const std::string& n : r.notes) {
    namespace_note |= n.find("\"namespace\"") != std::string::npos;
    web_search_note |= n.find("\"web_search\"") != std::string::npos;
  }
  EXPECT_TRUE(namespace_note);
  EXPECT_TRUE(web_search_note);
  ASSERT_TRUE(tiny().tokenizer);
  auto ids = harmony::render_for_completion(*tiny().tokenizer, r.conversation);
  ASSERT_TRUE(ids) << ids.error().to_string();
}

TEST(ServeResponsesRequest, ItemsBecomeHarmonyMessages) {
  GenerationRequest r;
  auto e = parse_responses_request(json::parse(R"({"instructions": "Be kind.", "input": [
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run it"}]},
      {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "ok"}]},
      {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "exec", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "c1", "output": "done"},
      {"type": "local_shell_call", "id": "x"}],
    "tools": [{"type": "function", "name": "exec", "parameters": {"type": "object", "properties": {}}}]})"), &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_EQ(r.conversation.options.developer_instructions, "Be kind.");
  const std::vector<harmony::Message> expected = {
      {"user", "", "", "", "run it"},
      {"assistant", "analysis", "", "", "ok"},
      {"assistant", "commentary", "functions.exec", "<|constrain|>json", "{}"},
      {"functions.exec", "commentary", "assistant", "", "done"}};
  EXPECT_EQ(r.conversation.messages, expected);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("local_shell_call"), std::string::npos);
}

TEST(ServeResponsesRequest, BadInputsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({})", "input"},
      {R"({"input": 3})", "input"},
      {R"({"input": "x", "previous_response_id": "resp_1"})", "previous_response_id"},
      {R"({"input": [{"type": "message", "role": "robot", "content": "x"}]})", "input[0].role"},
      {R"({"input": [{"type": "function_call_output", "call_id": "zz", "output": "x"}]})", "input[0].call_id"},
      {R"({"input": "x", "max_output_tokens": "many"})", "max_output_tokens"},
      {R"({"input": "x", "reasoning": {"effort": "extreme"}})", "reasoning.effort"},
      {R"({"input": "x", "text": {"format": {"type": "json_schema"}}})", "text.format"},
      {R"({"input": "x", "tools": [{"type": "function"}]})", "tools[0].name"},
  };
  for (const auto& [text, param] : cases) {
    GenerationRequest r;
    auto e = parse_responses_request(json::parse(text), &r);
    ASSERT_TRUE(e) << text;
    EXPECT_EQ(e->param, param) << text << " -> " << e->message;
  }
}

TEST(ServeCompletionsRequest, PromptShapes) {
  GenerationRequest r;
  EXPECT_FALSE(parse_completions_request(json::parse(R"({"prompt": "Once"})"), &r));
  EXPECT_EQ(r.raw_prompt, "Once");
  GenerationRequest ids;
  EXPECT_FALSE(parse_completions_request(json::parse(R"({"prompt": [1, 2, 3]})"), &ids));
  EXPECT_EQ(ids.raw_prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  GenerationRequest bad;
  auto e = parse_completions_request(json::parse(R"({"prompt": {"a": 1}})"), &bad);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "prompt");
  auto echo = parse_completions_request(json::parse(R"({"prompt": "x", "echo": true})"), &bad);
  ASSERT_TRUE(echo);
  EXPECT_EQ(echo->param, "echo");
}

// ---- the model's output -----------------------------------------------------------------------------------------

/// Pushes `ids` one token at a time through a parser and an assembler; returns the assembler.
OutputAssembler assemble(const std::vector<int32_t>& ids, bool tools, std::vector<OutputDelta>* deltas,
                         std::vector<std::string> stop = {}) {
  const Tokenizer& tok = *tiny().tokenizer;
  auto parser = harmony::Parser::create(tok);
  OutputAssembler out(tools, "call_", std::move(stop));
  std::vector<harmony::Event> events;
  for (int32_t id : ids) {
    events.clear();
    parser->push(id, &events);
    for (const auto& e : events) out.push(e, deltas);
  }
  events.clear();
  parser->finish(&events);
  for (const auto& e : events) out.push(e, deltas);
  out.finish(deltas);
  return out;
}

/// The ids the model writes after `<|start|>assistant`: its messages as harmony renders them.
std::vector<int32_t> model_output(const std::vector<harmony::Message>& messages) {
  const Tokenizer& tok = *tiny().tokenizer;
  auto special = harmony::SpecialTokens::find(tok);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < messages.size(); ++i) {
    harmony::render_message(tok, *special, messages[i],
                            messages[i].recipient.empty() ? harmony::Terminator::kEnd : harmony::Terminator::kCall,
                            &ids);
  }
  // render_for_completion already wrote `<|start|>assistant`: the stream begins after it.
  const std::vector<int32_t> prefix = tok.encode("assistant", false);
  ids.erase(ids.begin(), ids.begin() + 1 + static_cast<long>(prefix.size()));
  return ids;
}

TEST(ServeOutput, ReasoningAnswerAndToolCallsTokenByToken) {
  ASSERT_TRUE(tiny().tokenizer) << tiny().error;
  const std::vector<int32_t> ids = model_output({
      {"assistant", "analysis", "", "", "Think about the weather."},
      {"assistant", "commentary", "functions.get_weather", "<|constrain|>json", "{\"city\":\"Paris\"}"},
  });
  std::vector<OutputDelta> deltas;
  OutputAssembler out = assemble(ids, true, &deltas);
  EXPECT_EQ(out.reasoning(), "Think about the weather.");
  EXPECT_EQ(out.content(), "");
  ASSERT_EQ(out.tool_calls().size(), 1u);
  EXPECT_EQ(out.tool_calls()[0].name, "get_weather");
  EXPECT_EQ(out.tool_calls()[0].arguments, "{\"city\":\"Paris\"}");
  // The deltas, concatenated per segment, give the same text; segments open and close in pairs.
  std::string reasoning, args;
  int open = 0;
  for (const OutputDelta& d : deltas) {
    if (d.kind == OutputDelta::Kind::kSegmentStart) ++open;
    if (d.kind == OutputDelta::Kind::kSegmentEnd) --open;
    EXPECT_GE(open, 0);
    EXPECT_LE(open, 1);
    if (d.kind != OutputDelta::Kind::kText) continue;
    (d.segment == SegmentKind::kReasoning ? reasoning : args) += d.text;
  }
  EXPECT_EQ(open, 0);
  EXPECT_EQ(reasoning, out.reasoning());
  EXPECT_EQ(args, out.tool_calls()[0].arguments);
}

TEST(ServeOutput, AToolCallWithoutDeclaredToolsIsText) {
  ASSERT_TRUE(tiny().tokenizer);
  const std::vector<int32_t> ids =
      model_output({{"assistant", "commentary", "functions.f", "<|constrain|>json", "{}"}});
  std::vector<OutputDelta> deltas;
  OutputAssembler out = assemble(ids, false, &deltas);
  EXPECT_TRUE(out.tool_calls().empty());
  EXPECT_EQ(out.content(), "{}");
}

TEST(ServeOutput, AnswerIsTheSameWhereverTheStreamIsCut) {
  // Cutting the stream after token k (a token budget) always reports the text of the first k tokens' messages: the
  // concatenated answer of the cut stream is a prefix of the whole answer.
  ASSERT_TRUE(tiny().tokenizer);
  const std::vector<int32_t> ids = model_output({{"assistant", "final", "", "", "Hello there, world!"}});
  std::vector<OutputDelta> all;
  const std::string whole = assemble(ids, false, &all).content();
  EXPECT_EQ(whole, "Hello there, world!");
  for (size_t k = 0; k <= ids.size(); ++k) {
    std::vector<OutputDelta> deltas;
    const std::vector<int32_t> cut(ids.begin(), ids.begin() + static_cast<long>(k));
    const std::string part = assemble(cut, false, &deltas).content();
    EXPECT_EQ(whole.compare(0, part.size(), part), 0) << "cut at " << k << ": " << part;
  }
}

TEST(ServeOutput, RandomTokensAlwaysComeBackAsText) {
  ASSERT_TRUE(tiny().tokenizer);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int32_t> ids(1 + rng() % 64);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % tiny().tokenizer->vocab_size());
    std::vector<OutputDelta> deltas;
    OutputAssembler out = assemble(ids, trial % 2 == 0, &deltas);
    size_t text_bytes = 0;
    for (const auto& d : deltas) text_bytes += d.kind == OutputDelta::Kind::kText ? d.text.size() : 0;
    size_t total = out.content().size() + out.reasoning().size();
    for (const auto& c : out.tool_calls()) total += c.arguments.size();
    EXPECT_EQ(text_bytes, total);
  }
}

TEST(ServeOutput, StopStringCutsTheAnswerWhereverTheTextIsSplit) {
  const std::string text = "one two STOP three";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    OutputAssembler out(false, "call_", {"STOP", "never"});
    std::vector<OutputDelta> deltas;
    out.push(harmony::Event{harmony::EventKind::kMessageStart, {"assistant", "final", "", "", ""}, "", -1, false},
             &deltas);
    out.push(harmony::Event{harmony::EventKind::kContent, {}, text.substr(0, cut), -1, false}, &deltas);
    out.push(harmony::Event{harmony::EventKind::kContent, {}, text.substr(cut), -1, false}, &deltas);
    out.finish(&deltas);
    EXPECT_TRUE(out.stopped()) << cut;
    EXPECT_EQ(out.content(), "one two ") << cut;
    std::string streamed;
    for (const auto& d : deltas)
      if (d.kind == OutputDelta::Kind::kText) streamed += d.text;
    EXPECT_EQ(streamed, "one two ") << cut;
  }
}

// ---- server-sent events -------------------------------------------------------------------------------------------

/// The JSON payloads of an SSE text ("data: " lines), and whether it ended with [DONE].
std::vector<json> sse_payloads(const std::string& text, bool* done, std::vector<std::string>* event_names = nullptr) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "an event does not end with a blank line";
    if (end == std::string::npos) break;
    std::istringstream frame(text.substr(pos, end - pos));
    std::string line;
    while (std::getline(frame, line)) {
      if (line.starts_with("event: ") && event_names) event_names->push_back(line.substr(7));
      if (!line.starts_with("data: ")) continue;
      if (line == "data: [DONE]") {
        *done = true;
        continue;
      }
      EXPECT_FALSE(*done) << "data after [DONE]";
      out.push_back(json::parse(line.substr(6)));
    }
    pos = end + 2;
  }
  return out;
}

std::vector<OutputDelta> sample_deltas() {
  OutputAssembler out(true, "call_", {});
  std::vector<OutputDelta> d;
  auto start = [&](const char* channel, const char* recipient) {
    out.push(harmony::Event{harmony::EventKind::kMessageStart, {"assistant", channel, recipient, "", ""}, "", -1, false},
             &d);
  };
  auto text = [&](const char* t) { out.push(harmony::Event{harmony::EventKind::kContent, {}, t, -1, false}, &d); };
  auto end = [&] { out.push(harmony::Event{harmony::EventKind::kMessageEnd, {}, "", -1, false}, &d); };
  start("analysis", "");
  text("hm");
  end();
  start("final", "");
  text("Hi \xff");  // invalid UTF-8 from a model must not break the JSON
  end();
  start("commentary", "functions.f");
  text("{\"a\":");
  text("1}");
  end();
  out.finish(&d);
  return d;
}

TEST(ServeSse, ChatChunksEndWithUsageAndDone) {
  ChatStream s("chatcmpl-1", "m", 1, false);
  std::string text = s.begin();  // (one statement each: the operands of + are evaluated in any order)
  text += s.deltas(sample_deltas());
  text += s.end("tool_calls", Usage{5, 2, 4, 1}, true);
  bool done = false;
  std::vector<json> frames = sse_payloads(text, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(frames.size(), 5u);
  EXPECT_EQ(frames[0]["choices"][0]["delta"]["role"], "assistant");
  std::string content, reasoning, args;
  for (const json& f : frames) {
    EXPECT_EQ(f["id"], "chatcmpl-1");
    EXPECT_EQ(f["object"], "chat.completion.chunk");
    if (f["choices"].empty()) continue;
    const json& delta = f["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (delta.contains("reasoning_content")) reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("tool_calls")) {
      const json& c = delta["tool_calls"][0];
      EXPECT_EQ(c["index"], 0);
      if (c.contains("id")) {
        EXPECT_EQ(c["function"]["name"], "f");
      }
      args += c["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(content, "Hi \xef\xbf\xbd");
  EXPECT_EQ(reasoning, "hm");
  EXPECT_EQ(args, "{\"a\":1}");
  EXPECT_EQ(frames[frames.size() - 2]["choices"][0]["finish_reason"], "tool_calls");
  const json& usage = frames.back()["usage"];
  EXPECT_TRUE(frames.back()["choices"].empty());
  EXPECT_EQ(usage["prompt_tokens"], 5);
  EXPECT_EQ(usage["total_tokens"], 9);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_EQ(usage["completion_tokens_details"]["reasoning_tokens"], 1);
}

TEST(ServeSse, ResponsesEventsAreOrderedAndEndIncompleteAtTheTokenCap) {
  GenerationRequest request;
  ResponsesStream s("resp_abc", 1, request, "m");
  std::vector<std::string> names;
  bool done = false;
  std::string text = s.begin();
  text += s.deltas(sample_deltas());
  text += s.end(Outcome::kLength, Usage{5, 0, 4, 1});
  std::vector<json> events = sse_payloads(text, &done, &names);
  EXPECT_FALSE(done);  // the Responses API has no [DONE]
  ASSERT_EQ(names.size(), events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i]["sequence_number"], i);
    EXPECT_EQ(events[i]["type"], names[i]);
  }
  EXPECT_EQ(names.front(), "response.created");
  EXPECT_EQ(names.back(), "response.incomplete");
  const json& r = events.back()["response"];
  EXPECT_EQ(r["status"], "incomplete");
  EXPECT_EQ(r["incomplete_details"]["reason"], "max_output_tokens");
  ASSERT_EQ(r["output"].size(), 3u);
  EXPECT_EQ(r["output"][0]["type"], "reasoning");
  EXPECT_EQ(r["output"][1]["type"], "message");
  EXPECT_EQ(r["output"][2]["type"], "function_call");
  EXPECT_EQ(r["output"][2]["arguments"], "{\"a\":1}");
  EXPECT_EQ(r["usage"]["output_tokens_details"]["reasoning_tokens"], 1);
  // Every delta comes after its item's output_item.added (what Codex and the SDK's accumulator need).
  std::set<int> added;
  for (const json& e : events) {
    if (e["type"] == "response.output_item.added") added.insert(e["output_index"].get<int>());
    if (e["type"].get<std::string>().ends_with(".delta")) {
      EXPECT_TRUE(added.count(e["output_index"].get<int>()));
    }
  }
}

TEST(ServeAuth, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("Bearer k", "Bearer k"));
  EXPECT_FALSE(constant_time_equal("Bearer k", "Bearer x"));
  EXPECT_FALSE(constant_time_equal("Bearer k", "Bearer kk"));
  EXPECT_FALSE(constant_time_equal("", "Bearer k"));
}

// ---- scheduler ------------------------------------------------------------------------------------------------

/// A forward pass whose logits depend only on the slot's own tokens: argmax = (sum of tokens * 31 + position) mod
/// vocab. Optionally fails a slot's step when a token equals fail_token, and sleeps per step.
class FakeMulti final : public MultiSequenceForward {
 public:
  FakeMulti(uint32_t num_slots, uint32_t context, uint32_t vocab) : context_(context), vocab_(vocab) {
    tokens_.resize(num_slots);
  }
  void step(std::span<const SequenceStep> steps, std::span<Status> results) override {
    ++num_steps;
    max_slots_in_step = std::max<size_t>(max_slots_in_step, steps.size());
    if (step_delay.count() > 0) std::this_thread::sleep_for(step_delay);
    for (size_t i = 0; i < steps.size(); ++i) {
      auto& t = tokens_[steps[i].slot_idx];
      if (t.size() + steps[i].token_ids.size() > context_) {
        results[i] = make_error(ErrorCode::kInvalidArgument, "context full");
        continue;
      }
      bool fail = false;
      for (int32_t id : steps[i].token_ids) fail |= id == fail_token;
      if (fail) {
        results[i] = make_error(ErrorCode::kInvalidArgument, "fake failure");
        continue;
      }
      t.insert(t.end(), steps[i].token_ids.begin(), steps[i].token_ids.end());
      computed_tokens += steps[i].token_ids.size();
      if (steps[i].last_logits.empty()) continue;
      uint64_t sum = 0;
      for (int32_t id : t) sum += static_cast<uint64_t>(id);
      std::fill(steps[i].last_logits.begin(), steps[i].last_logits.end(), 0.0f);
      steps[i].last_logits[(sum * 31 + t.size()) % vocab_] = 10.0f;
    }
  }
  uint32_t num_slots() const override { return static_cast<uint32_t>(tokens_.size()); }
  uint32_t num_positions(uint32_t s) const override { return static_cast<uint32_t>(tokens_[s].size()); }
  uint32_t context_length() const override { return context_; }
  uint32_t vocab_size() const override { return vocab_; }
  void reset(uint32_t s) override { tokens_[s].clear(); }
  Status truncate(uint32_t s, uint32_t n) override {
    tokens_[s].resize(n);
    return {};
  }

  std::atomic<int> num_steps{0};
  std::atomic<size_t> max_slots_in_step{0};
  std::atomic<uint64_t> computed_tokens{0};
  int32_t fail_token = -1;
  std::chrono::milliseconds step_delay{0};

 private:
  uint32_t context_, vocab_;
  std::vector<std::vector<int32_t>> tokens_;
};

struct Outcome_ {
  std::vector<int32_t> tokens;
  JobResult result;
};

/// Submits a greedy job; the future gives its tokens and result.
std::future<Outcome_> run_job(Scheduler& s, std::vector<int32_t> prompt, uint32_t max_new,
                              std::shared_ptr<JobHandle>* handle = nullptr, Status* submit_status = nullptr,
                              bool cache_prompt = true) {
  auto promise = std::make_shared<std::promise<Outcome_>>();
  auto outcome = std::make_shared<Outcome_>();
  Job job;
  job.prompt = std::move(prompt);
  job.sampling.temperature = 0;
  job.max_new_tokens = max_new;
  job.stop_ids = {0};
  job.cache_prompt = cache_prompt;
  job.on_token = [outcome](int32_t t) {
    outcome->tokens.push_back(t);
    return true;
  };
  job.on_done = [outcome, promise](const JobResult& r) {
    outcome->result = r;
    promise->set_value(*outcome);
  };
  auto h = s.submit(std::move(job));
  if (submit_status) *submit_status = h ? Status{} : Status(h.error());
  if (h && handle) *handle = *h;
  if (!h) promise->set_value(Outcome_{});
  return promise->get_future();
}

TEST(ServeScheduler, TokensAtTemperatureZeroDoNotDependOnOtherSlots) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back({1 + i, 2, 3 + 2 * i, 4, 5 + i});
  std::vector<std::vector<int32_t>> solo;
  {
    FakeMulti fake(1, 256, 97);
    Scheduler s(fake, SchedulerOptions{});
    for (const auto& p : prompts) solo.push_back(run_job(s, p, 20).get().tokens);
  }
  FakeMulti fake(8, 256, 97);
  SchedulerOptions options;
  options.prefill_chunk = 2;  // prompts interleave with other slots' decode steps
  Scheduler s(fake, options);
  std::vector<std::future<Outcome_>> futures;
  for (const auto& p : prompts) futures.push_back(run_job(s, p, 20));
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(futures[i].get().tokens, solo[i]) << "job " << i;
  EXPECT_GT(fake.max_slots_in_step.load(), 1u);  // they really ran side by side
}

TEST(ServeScheduler, FullQueueIsRefusedAndCancelFreesTheSlot) {
  FakeMulti fake(1, 4096, 97);
  fake.step_delay = std::chrono::milliseconds(2);
  SchedulerOptions options;
  options.max_queue = 1;
  Scheduler s(fake, options);
  std::shared_ptr<JobHandle> running;
  auto first = run_job(s, {1, 2, 3}, 4000, &running);
  // Wait until the first job holds the slot, then fill the queue.
  while (s.stats().slots_busy == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto second = run_job(s, {4, 5}, 3);
  Status third_status;
  auto third = run_job(s, {6}, 3, nullptr, &third_status);
  ASSERT_FALSE(third_status);
  EXPECT_NE(third_status.error().message.find("queue full"), std::string::npos);
  running->cancel();
  const Outcome_ a = first.get();
  EXPECT_EQ(a.result.finish, FinishReason::kCancelled);
  EXPECT_LT(a.result.num_generated, 4000u);
  const Outcome_ b = second.get();  // the freed slot serves the queued job
  EXPECT_EQ(b.result.finish, FinishReason::kLength);
  EXPECT_EQ(b.tokens.size(), 3u);
  EXPECT_EQ(s.stats().slots_busy, 0u);
  EXPECT_EQ(s.stats().queue_length, 0u);
}

TEST(ServeScheduler, PromptCacheReusesTheLongestPrefixAndGivesTheSameTokens) {
  FakeMulti fake(2, 256, 97);
  Scheduler s(fake, SchedulerOptions{});
  const std::vector<int32_t> turn1 = {5, 6, 7, 8, 9, 10};
  const Outcome_ a = run_job(s, turn1, 5).get();
  EXPECT_EQ(a.result.num_cached_tokens, 0u);
  std::vector<int32_t> turn2 = turn1;
  turn2.insert(turn2.end(), {11, 12});
  const uint64_t before = fake.computed_tokens.load();
  const Outcome_ b = run_job(s, turn2, 5).get();
  EXPECT_EQ(b.result.num_cached_tokens, turn1.size());  // the whole first prompt
  EXPECT_EQ(fake.computed_tokens.load() - before, 2u + 4u);  // only the new tokens, then 4 fed decode tokens
  FakeMulti fresh(1, 256, 97);
  Scheduler cold(fresh, SchedulerOptions{});
  EXPECT_EQ(run_job(cold, turn2, 5).get().tokens, b.tokens);
  // Repeating a prompt exactly recomputes its last token only.
  EXPECT_EQ(run_job(s, turn2, 5).get().result.num_cached_tokens, turn2.size() - 1);
}

TEST(ServeScheduler, AJobWithCachePromptFalseComputesItsWholePrompt) {
  FakeMulti fake(1, 256, 97);
  Scheduler s(fake, SchedulerOptions{});
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  const Outcome_ a = run_job(s, prompt, 3).get();
  const uint64_t before = fake.computed_tokens.load();
  const Outcome_ b = run_job(s, prompt, 3, nullptr, nullptr, /*cache_prompt=*/false).get();
  EXPECT_EQ(b.result.num_cached_tokens, 0u);
  EXPECT_EQ(fake.computed_tokens.load() - before, prompt.size() + 2u);  // the whole prompt, then 2 fed decode tokens
  EXPECT_EQ(b.tokens, a.tokens);
  // The slot still holds the job's tokens: the next request with caching reuses them.
  EXPECT_EQ(run_job(s, prompt, 3).get().result.num_cached_tokens, prompt.size() - 1);
}

TEST(ServeScheduler, AFailingSlotDoesNotDisturbTheOthers) {
  FakeMulti fake(2, 256, 97);
  fake.fail_token = 66;
  Scheduler s(fake, SchedulerOptions{});
  auto bad = run_job(s, {1, 66, 2}, 5);
  auto good = run_job(s, {1, 2, 3}, 5);
  const Outcome_ b = bad.get();
  EXPECT_EQ(b.result.finish, FinishReason::kError);
  EXPECT_NE(b.result.error.message.find("fake failure"), std::string::npos);
  EXPECT_EQ(good.get().tokens.size(), 5u);
  EXPECT_EQ(s.stats().slots_busy, 0u);
}

TEST(ServeScheduler, PromptsTooLongAndDeadlines) {
  FakeMulti fake(1, 16, 97);
  Scheduler s(fake, SchedulerOptions{});
  Status st;
  run_job(s, std::vector<int32_t>(16, 1), 4, nullptr, &st);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("16"), std::string::npos);
  // The answer is clipped to the context left.
  const Outcome_ clipped = run_job(s, std::vector<int32_t>(10, 1), 100).get();
  EXPECT_EQ(clipped.result.finish, FinishReason::kLength);
  EXPECT_LE(clipped.tokens.size(), 6u);
  FakeMulti slow(1, 100000, 97);
  slow.step_delay = std::chrono::milliseconds(5);
  Scheduler s2(slow, SchedulerOptions{});
  auto promise = std::make_shared<std::promise<JobResult>>();
  Job job;
  job.prompt = {1, 2};
  job.sampling.temperature = 0;
  job.max_new_tokens = 100000;
  job.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  job.on_done = [promise](const JobResult& r) { promise->set_value(r); };
  ASSERT_TRUE(s2.submit(std::move(job)));
  EXPECT_EQ(promise->get_future().get().finish, FinishReason::kTimeout);
}

// ---- HTTP (cpp-httplib client against the server, no model) ---------------------------------------------------


TEST(ServeHttp, HealthSaysLoadingUntilTheModelIsAttachedAndCorsOnlyWhenAsked) {
  for (const bool cors : {false, true}) {
    ServerOptions options;
    options.port = 0;
    if (cors) options.cors_origin = "http://app.example";
    Server server(options);
    ASSERT_TRUE(server.bind());
    std::thread thread([&] { server.run(); });
    httplib::Client client("127.0.0.1", server.port());
    auto loading = client.Get("/health");
    ASSERT_TRUE(loading);
    EXPECT_EQ(loading->status, 503);
    EXPECT_EQ(json::parse(loading->body)["status"], "loading");
    auto early = client.Post("/v1/chat/completions", R"({"messages": []})", "application/json");
    ASSERT_TRUE(early);
    EXPECT_EQ(early->status, 503);
    EXPECT_EQ(json::parse(early->body)["error"]["code"], "model_loading");
    EXPECT_EQ(early->get_header_value("Access-Control-Allow-Origin"), cors ? "http://app.example" : "");
    auto preflight = client.Options("/v1/chat/completions");
    ASSERT_TRUE(preflight);
    if (cors) {
      EXPECT_EQ(preflight->status, 204);
      EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
    } else {
      EXPECT_EQ(preflight->get_header_value("Access-Control-Allow-Origin"), "");
    }
    FakeMulti fake(1, 64, 97);
    Scheduler scheduler(fake, SchedulerOptions{});
    ServeModel model;
    model.scheduler = &scheduler;
    model.tokenizer = tiny().tokenizer.get();
    model.context_length = 64;
    server.attach(model);
    auto ready = client.Get("/health");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200);
    server.stop();
    thread.join();
  }
}

/// A server on any free port over `scheduler`, serving on its own thread until destroyed.
class TestServer {
 public:
  TestServer(Scheduler& scheduler, uint32_t context, uint64_t* expert_counts = nullptr, size_t num_counts = 0) {
    ServerOptions options;
    options.port = 0;
    server_ = std::make_unique<Server>(options);
    EXPECT_TRUE(server_->bind());
    thread_ = std::thread([this] { server_->run(); });
    ServeModel model;
    model.scheduler = &scheduler;
    model.tokenizer = tiny().tokenizer.get();
    model.context_length = context;
    model.expert_counts = expert_counts;
    model.num_expert_counts = num_counts;
    server_->attach(model);
  }
  ~TestServer() {
    server_->stop();
    thread_.join();
  }
  int port() const { return server_->port(); }

 private:
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

/// Waits up to `limit` for `condition`.
template <class F>
bool wait_until(F condition, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

/// Opens a TCP connection to 127.0.0.1:port and sends `request`; returns the socket.
int send_raw(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  return fd;
}

// A client that closes its connection while its non-streamed request runs cancels the job: the slot is freed long
// before the job's 100,000 tokens, and the forward pass stops stepping. A client that stays gets its whole answer.
TEST(ServeHttp, ADisconnectDuringANonStreamedRequestCancelsItsJob) {
  FakeMulti fake(1, 200000, 97);
  fake.step_delay = std::chrono::milliseconds(2);
  Scheduler scheduler(fake, SchedulerOptions{});
  TestServer server(scheduler, 200000);
  for (const std::string path : {"/v1/completions", "/v1/chat/completions"}) {
    const std::string body = path == "/v1/completions"
                                 ? R"({"prompt": [1, 2, 3], "max_tokens": 100000, "temperature": 0})"
                                 : R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000})";
    const uint64_t finished_before = scheduler.stats().jobs_finished;
    const int fd = send_raw(server.port(), "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    ASSERT_TRUE(wait_until([&] { return scheduler.stats().slots_busy == 1; }, std::chrono::seconds(10))) << path;
    close(fd);
    ASSERT_TRUE(wait_until([&] { return scheduler.stats().jobs_finished == finished_before + 1; },
                           std::chrono::seconds(10)))
        << path << ": the job still runs after its client left";
    EXPECT_EQ(scheduler.stats().slots_busy, 0u);
    const int steps = fake.num_steps.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(fake.num_steps.load(), steps) << path << ": steps go on without a job";
    EXPECT_LT(scheduler.stats().generated_tokens, 100000u);
  }
  httplib::Client client("127.0.0.1", server.port());
  auto staying = client.Post("/v1/completions", R"({"prompt": [1, 2, 3], "max_tokens": 30, "temperature": 0})",
                             "application/json");
  ASSERT_TRUE(staying);
  EXPECT_EQ(staying->status, 200) << staying->body;
  EXPECT_EQ(json::parse(staying->body)["usage"]["completion_tokens"], 30);
}

// /metrics sums the expert selection counts with atomic loads while the forward pass increments them on the
// scheduler thread (here: a writer thread with relaxed atomic adds, as CpuForward does): every scrape parses and
// sees a total that only grows, up to the final one.
TEST(ServeHttp, MetricsReadsTheExpertCountsWhileTheyAreIncremented) {
  FakeMulti fake(1, 64, 97);
  Scheduler scheduler(fake, SchedulerOptions{});
  std::vector<uint64_t> counts(24 * 32, 0);
  TestServer server(scheduler, 64, counts.data(), counts.size());
  constexpr uint64_t kRounds = 2000;
  std::thread writer([&] {
    for (uint64_t r = 0; r < kRounds; ++r)
      for (uint64_t& c : counts) std::atomic_ref<uint64_t>(c).fetch_add(1, std::memory_order_relaxed);
  });
  httplib::Client client("127.0.0.1", server.port());
  auto total_of = [&] {
    auto r = client.Get("/metrics");
    EXPECT_TRUE(r);
    const std::string key = "hetmoe_expert_selections_total{device=\"cpu\"} ";
    const size_t at = r ? r->body.find(key) : std::string::npos;
    EXPECT_NE(at, std::string::npos);
    return at == std::string::npos ? uint64_t{0} : std::stoull(r->body.substr(at + key.size()));
  };
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    const uint64_t total = total_of();
    EXPECT_GE(total, last);
    last = total;
  }
  writer.join();
  EXPECT_EQ(total_of(), kRounds * counts.size());
}

}  // namespace
}  // namespace hetmoe::server
