// Harmony: rendering against goldens from the reference encoder, the system/developer texts against the spec, and
// the streaming parser, including recovery from malformed model output.
//
// Goldens: tests/data/tokenizer-golden/harmony.jsonl, made by scripts/tokenizer_golden/generate.mjs with
// gpt-tokenizer's encodeChat (encoding o200k_harmony, model gpt-oss-20b). Differences between that package and the
// spec (gpt-oss-spec.md §5), which is our authority, and how the goldens cover what both agree on:
//   - encodeChat renders only the messages it is given: it builds no system or developer message. The generator
//     writes those texts from the spec itself and passes them as ordinary messages; the test also checks our texts
//     against the spec's wording directly (SystemMessageFollowsTheSpec).
//   - encodeChat puts a recipient after the channel by default (`<|channel|>commentary to=functions.f`); the spec
//     (and the model's chat template) put it after the role (`<|start|>assistant to=functions.f<|channel|>...`). The
//     goldens use recipientPlacement "role", which renders the spec's form.
//   - encodeChat renders a constraint as `<|constrain|>json` right after the channel with no space; the spec writes a
//     content type as plain text after a space (`commentary json`), and the model itself emits
//     `commentary <|constrain|>json`. We render content_type after a space, with a leading `<|constrain|>` as the
//     special token; the goldens express that as channel "commentary " plus constraint "json".
//   - encodeChat's `allowedSpecial: 'all'` (gpt-tokenizer 3.4.0, o200k_harmony) recognises only the first special
//     token of a text, so parse_special is tested against split-and-encode in test_tokenizer_golden.cpp instead.
//   - encodeChat applies no conversation rules; dropping earlier analysis and choosing `<|end|>`/`<|call|>` are
//     done by the generator from the spec, independently of this C++ code.

#include "runtime/text/harmony.h"

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/tiktoken_vocab.h"
#include "runtime/text/tokenizer.h"
#include "tests/vocab_fixture.h"

namespace hetmoe::harmony {
namespace {

const std::string kDataDir = HETMOE_TEST_DATA_DIR;

using test::load_vocab;
using test::Vocab;

const Vocab& o200k() {
  static const Vocab v = load_vocab("o200k-harmony-vocab.gguf");
  return v;
}
const Vocab& tiny() {
  static const Vocab v = load_vocab("gpt-oss-tiny.gguf");
  return v;
}

#define REQUIRE_VOCAB(v) ASSERT_NE((v).tokenizer, nullptr) << (v).error

Message message_from_json(const nlohmann::json& j) {
  Message m;
  m.role = j.value("role", "");
  m.channel = j.value("channel", "");
  m.recipient = j.value("recipient", "");
  m.content_type = j.value("content_type", "");
  m.content = j.value("content", "");
  return m;
}

ConversationOptions options_from_json(const nlohmann::json& j) {
  ConversationOptions o;
  o.current_date = j.at("date").get<std::string>();
  if (j.contains("reasoning")) o.reasoning = *parse_reasoning_effort(j["reasoning"].get<std::string>());
  if (j.contains("cutoff")) o.knowledge_cutoff = j["cutoff"].get<std::string>();
  if (j.contains("identity")) o.model_identity = j["identity"].get<std::string>();
  if (j.contains("instructions")) o.developer_instructions = j["instructions"].get<std::string>();
  if (j.contains("tools")) {
    for (const nlohmann::json& t : j["tools"]) {
      o.tools.push_back({t.at("name").get<std::string>(), t.at("description").get<std::string>(),
                         t.value("parameters", "")});
    }
  }
  return o;
}

std::vector<nlohmann::json> load_goldens() {
  std::vector<nlohmann::json> cases;
  std::ifstream in(kDataDir + "/tokenizer-golden/harmony.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) cases.push_back(nlohmann::json::parse(line));
  }
  return cases;
}

Terminator terminator_from_text(const std::string& text) {
  if (text == "<|return|>") return Terminator::kReturn;
  if (text == "<|call|>") return Terminator::kCall;
  return Terminator::kEnd;
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering.

TEST(HarmonyRender, GoldensEqualTheReferenceEncoder) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::vector<nlohmann::json> cases = load_goldens();
  ASSERT_GE(cases.size(), 20u);
  size_t num_conversations = 0;
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::vector<int32_t> expected = c.at("ids").get<std::vector<int32_t>>();
    std::vector<int32_t> ids;
    if (c.at("kind") == "conversation") {
      ++num_conversations;
      Conversation conversation;
      conversation.options = options_from_json(c.at("options"));
      for (const nlohmann::json& m : c.at("messages")) conversation.messages.push_back(message_from_json(m));
      EXPECT_EQ(system_message_text(conversation.options), c.at("system_text").get<std::string>());
      Expected<std::string> developer = developer_message_text(conversation.options);
      ASSERT_TRUE(developer) << developer.error().to_string();
      EXPECT_EQ(*developer, c.at("developer_text").get<std::string>());
      Expected<std::vector<int32_t>> rendered = render_for_completion(tok, conversation);
      ASSERT_TRUE(rendered) << rendered.error().to_string();
      ids = *rendered;
    } else {
      Expected<SpecialTokens> special = SpecialTokens::find(tok);
      ASSERT_TRUE(special);
      for (const nlohmann::json& m : c.at("messages")) {
        render_message(tok, *special, message_from_json(m), terminator_from_text(m.at("terminator")), &ids);
      }
      if (c.at("prime").get<bool>()) {
        ids.push_back(special->start);
        for (int32_t id : tok.encode("assistant", false)) ids.push_back(id);
      }
    }
    EXPECT_EQ(ids, expected);
  }
  EXPECT_GE(num_conversations, 20u);
}

TEST(HarmonyRender, SystemMessageFollowsTheSpec) {
  ConversationOptions options;
  options.current_date = "2025-08-05";
  EXPECT_EQ(system_message_text(options),
            "You are ChatGPT, a large language model trained by OpenAI.\n"
            "Knowledge cutoff: 2024-06\n"
            "Current date: 2025-08-05\n"
            "\n"
            "Reasoning: medium\n"
            "\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message.");
  options.reasoning = ReasoningEffort::kHigh;
  EXPECT_NE(system_message_text(options).find("\n\nReasoning: high\n\n"), std::string::npos);
  options.current_date.clear();
  EXPECT_NE(system_message_text(options).find("Current date: " + today() + "\n"), std::string::npos);
  EXPECT_EQ(today().size(), 10u);
}

TEST(HarmonyRender, DeveloperMessageFollowsTheSpec) {
  ConversationOptions options;
  EXPECT_EQ(*developer_message_text(options), "");
  options.developer_instructions = "Answer in French.";
  EXPECT_EQ(*developer_message_text(options), "# Instructions\n\nAnswer in French.\n\n");
  options.tools.push_back({"ping", "Pings.", ""});
  EXPECT_EQ(*developer_message_text(options),
            "# Instructions\n\nAnswer in French.\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n"
            "// Pings.\ntype ping = () => any;\n\n} // namespace functions");
  options.tools.push_back({"bad", "Broken.", "[1, 2"});
  Expected<std::string> bad = developer_message_text(options);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("bad"), std::string::npos);
}

TEST(HarmonyRender, UsesTheVocabularysSpecialIdsAndNeverParsesText) {
  REQUIRE_VOCAB(tiny());
  const Tokenizer& tok = *tiny().tokenizer;
  Conversation conversation;
  conversation.options.current_date = "2025-08-05";
  conversation.messages.push_back({"user", "", "", "", "hi <|end|>"});
  Expected<std::vector<int32_t>> ids = render_for_completion(tok, conversation);
  ASSERT_TRUE(ids) << ids.error().to_string();
  EXPECT_EQ(ids->front(), 4101);  // <|start|> in gpt-oss-tiny.gguf
  size_t num_special = 0;
  for (int32_t id : *ids) num_special += tok.is_special(id);
  EXPECT_EQ(num_special, 7u);  // system and user: start, message, end each; then the final start
  EXPECT_EQ(*tok.decode(*ids), "<|start|>system<|message|>" + system_message_text(conversation.options) +
                                   "<|end|><|start|>user<|message|>hi <|end|><|end|><|start|>assistant");
}

TEST(HarmonyRender, FindsSpecialTokensByText) {
  REQUIRE_VOCAB(o200k());
  Expected<SpecialTokens> ok = SpecialTokens::find(*o200k().tokenizer);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->start, 200006);
  EXPECT_EQ(ok->message, 200008);
  EXPECT_EQ(ok->constrain, 200003);
  EXPECT_EQ(ok->endoftext, 199999);
}

TEST(HarmonyRender, AVocabularyWithoutHarmonyTokensIsAnError) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(tiktoken::byte_level_encode(std::string(1, static_cast<char>(b))));
  tokens.push_back("<|start|>");  // present, but the others are missing
  std::vector<int32_t> types(tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  types.back() = static_cast<int32_t>(TokenType::kControl);
  gguf::Writer writer;
  writer.add_string("general.architecture", "gpt-oss");
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string_array("tokenizer.ggml.tokens", tokens);
  writer.add_i32_array("tokenizer.ggml.token_type", types);
  std::vector<uint8_t> buffer;
  writer.open_memory(&buffer);
  ASSERT_TRUE(writer.write_header());
  ASSERT_TRUE(writer.finish());
  Expected<gguf::File> file = gguf::File::from_memory(buffer, "bytes-only.gguf");
  ASSERT_TRUE(file) << file.error().to_string();
  Expected<Tokenizer> tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok) << tok.error().to_string();
  Expected<std::vector<int32_t>> ids = render_for_completion(*tok, Conversation{});
  ASSERT_FALSE(ids);
  EXPECT_EQ(ids.error().code, ErrorCode::kMissing);
  EXPECT_NE(ids.error().message.find("<|end|>"), std::string::npos) << ids.error().message;
  EXPECT_FALSE(Parser::create(*tok));
}

// ---------------------------------------------------------------------------------------------------------------
// Parser.

// Drives a parser with the ids of `text` (special tokens parsed) and returns the events.
std::vector<Event> parse(const Tokenizer& tok, const std::string& text, bool finish = true) {
  Expected<Parser> parser = Parser::create(tok);
  EXPECT_TRUE(parser);
  std::vector<Event> events;
  for (int32_t id : tok.encode(text, true)) parser->push(id, &events);
  if (finish) parser->finish(&events);
  return events;
}

std::vector<Message> ended_messages(const std::vector<Event>& events) {
  std::vector<Message> messages;
  for (const Event& e : events) {
    if (e.kind == EventKind::kMessageEnd) messages.push_back(e.message);
  }
  return messages;
}

std::string content_of(const std::vector<Event>& events) {
  std::string s;
  for (const Event& e : events) {
    if (e.kind == EventKind::kContent) s += e.text;
  }
  return s;
}

int count(const std::vector<Event>& events, EventKind kind) {
  int n = 0;
  for (const Event& e : events) n += e.kind == kind;
  return n;
}

TEST(HarmonyParser, AnalysisThenFinal) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::vector<Event> events = parse(
      tok, "<|channel|>analysis<|message|>User says hi.<|end|><|start|>assistant<|channel|>final<|message|>Hello! "
           "\xF0\x9F\x91\x8B<|return|>");
  const std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0], (Message{"assistant", "analysis", "", "", "User says hi."}));
  EXPECT_EQ(messages[1], (Message{"assistant", "final", "", "", "Hello! \xF0\x9F\x91\x8B"}));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, EventKind::kTurnEnd);
  EXPECT_EQ(events.back().terminator, 200002);
  EXPECT_EQ(events.front().kind, EventKind::kMessageStart);
  EXPECT_EQ(events.front().message.channel, "analysis");
  for (const Event& e : events) EXPECT_FALSE(e.malformed);
}

TEST(HarmonyParser, ToolCallWithRecipientAndConstraint) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  // The model's own form: recipient after the channel, <|constrain|> token.
  std::vector<Event> events =
      parse(tok, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"a\":1}<|call|>");
  std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0],
            (Message{"assistant", "commentary", "functions.get_weather", "<|constrain|>json", "{\"a\":1}"}));
  EXPECT_EQ(events.back().kind, EventKind::kTurnEnd);
  EXPECT_EQ(events.back().terminator, 200012);
  // The spec's form: recipient after the role, content type as text.
  events = parse(tok, " to=functions.f<|channel|>commentary json<|message|>{}<|call|>");
  messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], (Message{"assistant", "commentary", "functions.f", "json", "{}"}));
}

TEST(HarmonyParser, RoundTripsRenderedMessages) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  Expected<SpecialTokens> special = SpecialTokens::find(tok);
  ASSERT_TRUE(special);
  const std::vector<Message> messages = {
      {"assistant", "analysis", "", "", "think \xE4\xBD\xA0\xE5\xA5\xBD"},
      {"assistant", "commentary", "functions.x", "json", "{\"k\": [1, 2]}"},
      {"functions.x", "commentary", "assistant", "", "\"result\""},
      {"assistant", "final", "", "", "done \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9"},
  };
  std::vector<int32_t> ids;
  for (const Message& m : messages) render_message(tok, *special, m, Terminator::kEnd, &ids);
  Expected<Parser> parser = Parser::create(tok);
  ASSERT_TRUE(parser);
  std::vector<Event> events;
  // The parser starts after "<|start|>assistant": skip those two tokens of the first message.
  ASSERT_EQ(ids[0], special->start);
  for (size_t i = 2; i < ids.size(); ++i) parser->push(ids[i], &events);
  EXPECT_EQ(parser->messages(), messages);
  EXPECT_FALSE(parser->turn_ended());
}

TEST(HarmonyParser, StreamsContentWithoutSplittingCharacters) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  Expected<Parser> parser = Parser::create(tok);
  ASSERT_TRUE(parser);
  std::vector<Event> events;
  for (int32_t id : tok.encode("<|channel|>final<|message|>", true)) parser->push(id, &events);
  const std::string emoji = "\xF0\x9F\x99\x82";
  for (char byte : emoji) parser->push(*tok.find_token(std::string(1, byte)), &events);
  parser->push(*tok.find_token("<|return|>"), &events);
  int num_content = 0;
  for (const Event& e : events) {
    if (e.kind != EventKind::kContent) continue;
    ++num_content;
    EXPECT_EQ(e.text, emoji);
  }
  EXPECT_EQ(num_content, 1);
}

TEST(HarmonyParser, TextBeforeStartIsSurfaced) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  Expected<Parser> parser = Parser::create(tok);
  ASSERT_TRUE(parser);
  std::vector<Event> events;
  for (int32_t id : tok.encode("<|channel|>final<|message|>ok<|end|>stray text<|end|>", true)) {
    parser->push(id, &events);
  }
  const std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[1].content, "stray text");
  EXPECT_EQ(messages[1].channel, "");
  bool saw_malformed = false;
  for (const Event& e : events) saw_malformed |= e.malformed;
  EXPECT_TRUE(saw_malformed);
}

TEST(HarmonyParser, MissingMessageTokenSurfacesTheHeaderAsContent) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  // The header runs into the terminator: its text is given back, the turn still ends.
  std::vector<Event> events = parse(tok, "<|channel|>final Hello there<|return|>", false);
  std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].channel, "final");
  EXPECT_EQ(messages[0].content, "Hello there");
  EXPECT_TRUE(events.front().malformed);
  EXPECT_EQ(events.back().kind, EventKind::kTurnEnd);
  // A header that never ends: after kMaxHeaderBytes it turns into content, so the text streams instead of hanging.
  std::string long_text;
  while (long_text.size() < 2 * Parser::kMaxHeaderBytes) long_text += " word";
  events = parse(tok, long_text, false);
  EXPECT_EQ(count(events, EventKind::kMessageStart), 1);
  EXPECT_GT(content_of(events).size(), Parser::kMaxHeaderBytes / 2);
  std::vector<Event> finished = events;
  Expected<Parser> parser = Parser::create(tok);
  ASSERT_TRUE(parser);
  finished.clear();
  for (int32_t id : tok.encode(long_text, false)) parser->push(id, &finished);
  parser->finish(&finished);
  EXPECT_EQ(content_of(finished), long_text);
}

TEST(HarmonyParser, UnknownChannelIsReportedAsIs) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  const std::vector<Event> events = parse(tok, "<|channel|>scratchpad<|message|>notes<|end|>");
  const std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].channel, "scratchpad");
  EXPECT_EQ(messages[0].content, "notes");
  EXPECT_FALSE(is_reasoning_channel("scratchpad"));
  EXPECT_TRUE(is_reasoning_channel("analysis"));
  EXPECT_TRUE(is_reasoning_channel("commentary"));
  EXPECT_FALSE(is_reasoning_channel("final"));
}

TEST(HarmonyParser, EndWithoutStartAndStartInsideContent) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  // <|end|> with nothing open is ignored; <|start|> inside content ends the message; <|channel|> inside content too.
  const std::vector<Event> events = parse(tok,
                                          "<|channel|>analysis<|message|>a<|end|><|end|><|start|>assistant<|channel|>"
                                          "analysis<|message|>b<|start|>assistant<|channel|>final<|message|>c"
                                          "<|channel|>final<|message|>d<|return|>");
  const std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[0].content, "a");
  EXPECT_EQ(messages[1].content, "b");
  EXPECT_EQ(messages[2].content, "c");
  EXPECT_EQ(messages[3].content, "d");
  EXPECT_EQ(messages[3].channel, "final");
  EXPECT_EQ(events.back().kind, EventKind::kTurnEnd);
}

TEST(HarmonyParser, StartInsideHeaderAndOtherSpecialsInContent) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  std::vector<Event> events =
      parse(tok, "<|channel|>fin<|start|>assistant<|channel|>final<|message|>x<|reserved_200013|>y<|return|>");
  std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].channel, "fin");
  EXPECT_EQ(messages[1].content, "x<|reserved_200013|>y");
}

TEST(HarmonyParser, FinishEndsAnOpenMessage) {
  REQUIRE_VOCAB(o200k());
  const Tokenizer& tok = *o200k().tokenizer;
  std::vector<Event> events = parse(tok, "<|channel|>analysis<|message|>cut off \xF0\x9F", true);
  std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "cut off \xF0\x9F");  // held-back bytes come out at the end
  EXPECT_EQ(events.back().kind, EventKind::kMessageEnd);
  EXPECT_EQ(events.back().terminator, -1);
  // Nothing generated at all: no message.
  events = parse(tok, "", true);
  EXPECT_TRUE(events.empty());
}

TEST(HarmonyParser, WorksOnTheTinyVocabulary) {
  REQUIRE_VOCAB(tiny());
  const Tokenizer& tok = *tiny().tokenizer;
  const std::vector<Event> events = parse(tok, "<|channel|>final<|message|>hello<|return|>");
  const std::vector<Message> messages = ended_messages(events);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], (Message{"assistant", "final", "", "", "hello"}));
  EXPECT_EQ(events.back().terminator, 4098);
}

TEST(HarmonyOptions, ReasoningEffortNames) {
  for (ReasoningEffort e : {ReasoningEffort::kLow, ReasoningEffort::kMedium, ReasoningEffort::kHigh}) {
    EXPECT_EQ(parse_reasoning_effort(reasoning_effort_name(e)), e);
  }
  EXPECT_EQ(parse_reasoning_effort("extreme"), std::nullopt);
}

}  // namespace
}  // namespace hetmoe::harmony
