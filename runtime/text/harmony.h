#pragma once
// The harmony chat format of gpt-oss (gpt-oss-spec.md §5): rendering a conversation to token ids, and parsing the
// model's output as it streams.
//
// A message is `<|start|>{role}[ to={recipient}][<|channel|>{channel}[ {content_type}]]<|message|>{content}{end}`
// where {end} is `<|end|>` (end of a message), `<|return|>` (end of the turn) or `<|call|>` (a tool call; end of the
// turn). No newlines between messages. A content_type that begins with `<|constrain|>` renders that special token
// (the form the model itself emits: `commentary <|constrain|>json`). Special tokens are looked up in the vocabulary
// by their text (in gpt-oss-tiny.gguf they sit at 4096-4105, not at their real ids); text (roles, channels, content)
// is always encoded as ordinary text, so a user typing `<|end|>` cannot forge a token.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/expected.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::harmony {

enum class ReasoningEffort { kLow, kMedium, kHigh };

/// "low", "medium", "high".
const char* reasoning_effort_name(ReasoningEffort effort);
/// The effort named `name` ("low", "medium", "high"), or nullopt.
std::optional<ReasoningEffort> parse_reasoning_effort(std::string_view name);

/// One message, as plain data. role: "system", "developer", "user", "assistant", or a tool ("functions.NAME") for
/// tool results. channel: "analysis", "commentary", "final" or empty (none). recipient: e.g. "functions.get_weather"
/// on a tool call, "assistant" on a tool result, empty for none. content_type: e.g. "json", empty for none.
struct Message {
  std::string role;
  std::string channel;
  std::string recipient;
  std::string content_type;
  std::string content;

  bool operator==(const Message&) const = default;
};

/// A function tool: name, one-line description, and the JSON schema of its parameters as text (an object schema
/// with "properties" and optional "required"; empty for a tool without parameters).
struct ToolDefinition {
  std::string name;
  std::string description;
  std::string parameters;
};

/// What goes into the system and developer messages.
struct ConversationOptions {
  std::string model_identity = "You are ChatGPT, a large language model trained by OpenAI.";
  std::string knowledge_cutoff = "2024-06";
  std::string current_date;  // YYYY-MM-DD; empty: today's local date
  ReasoningEffort reasoning = ReasoningEffort::kMedium;
  std::string developer_instructions;  // empty: none
  std::vector<ToolDefinition> tools;   // function tools, namespace "functions"
};

/// The conversation after the system and developer messages: user turns, earlier assistant messages (any channel)
/// and tool results, oldest first.
struct Conversation {
  ConversationOptions options;
  std::vector<Message> messages;
};

/// Today's local date as YYYY-MM-DD.
std::string today();

/// The system message's text (spec §5): identity, knowledge cutoff, current date, `Reasoning: {effort}`, the valid
/// channels line, and, when there are tools, the line that routes function calls to the commentary channel.
std::string system_message_text(const ConversationOptions& options);

/// The developer message's text: `# Instructions\n\n{instructions}\n\n` when there are instructions, then, when there
/// are tools, `# Tools\n\n## functions\n\nnamespace functions {\n\n` + one TypeScript-style declaration per tool +
/// `} // namespace functions` (the model's chat template layout). Empty when there are neither. Errors:
/// kInvalidArgument naming the tool when its parameters are not a JSON object.
Expected<std::string> developer_message_text(const ConversationOptions& options);

/// How a rendered message ends.
enum class Terminator { kEnd, kReturn, kCall };

/// The harmony special tokens of a vocabulary, found by their text.
struct SpecialTokens {
  int32_t start = -1;      // <|start|>
  int32_t end = -1;        // <|end|>
  int32_t message = -1;    // <|message|>
  int32_t channel = -1;    // <|channel|>
  int32_t constrain = -1;  // <|constrain|>
  int32_t return_ = -1;    // <|return|>
  int32_t call = -1;       // <|call|>
  int32_t endoftext = -1;  // <|endoftext|> (-1 if absent: optional)

  /// Errors: kMissing naming the first required token the vocabulary lacks (e.g. a non-harmony model).
  static Expected<SpecialTokens> find(const Tokenizer& tokenizer);
};

/// Appends the ids of one message ending with `terminator` to `out` (layout in the file comment).
void render_message(const Tokenizer& tokenizer, const SpecialTokens& special, const Message& message,
                    Terminator terminator, std::vector<int32_t>* out);

/// The whole conversation: the system message, the developer message (if any), then the messages. Rules (spec §5
/// and the model's chat template): an assistant message without a channel is "final"; assistant "analysis" messages
/// that come before the last assistant "final" message are dropped (reasoning of finished turns); assistant messages
/// with a "functions." recipient end with `<|call|>`, all others with `<|end|>`. Errors: those of
/// SpecialTokens::find() and developer_message_text().
Expected<std::vector<int32_t>> render(const Tokenizer& tokenizer, const Conversation& conversation);

/// render() followed by `<|start|>assistant`: the prompt from which the model writes its answer.
Expected<std::vector<int32_t>> render_for_completion(const Tokenizer& tokenizer, const Conversation& conversation);

/// True for the channels whose text is reasoning rather than the answer: "analysis" and "commentary".
bool is_reasoning_channel(std::string_view channel);

/// What the parser reports.
enum class EventKind {
  kMessageStart,  // a message header is complete: message.{role, channel, recipient, content_type} are set
  kContent,       // text: the next part of the current message's content (never half a UTF-8 character)
  kMessageEnd,    // the current message is complete: message holds it entirely
  kTurnEnd,       // the model ended its turn: terminator is the token (<|return|>, <|call|> or <|endoftext|>)
};

struct Event {
  EventKind kind = EventKind::kContent;
  Message message;           // kMessageStart: the header; kMessageEnd: the whole message
  std::string text;          // kContent
  int32_t terminator = -1;   // kTurnEnd (and kMessageEnd: the token that ended the message, -1 when implicit)
  bool malformed = false;    // kMessageStart/kMessageEnd: the header was not well formed and was recovered
};

/// Streaming parser of the model's output. It starts where render_for_completion() stops: inside the header of an
/// assistant message whose role is already known. push() each generated token; it appends the events that token
/// completes. Recovery from malformed output, so that text is never lost and parsing never stalls:
///   - text outside any message (before `<|start|>`, or after `<|end|>`) opens an assistant message with no channel
///     (marked malformed) whose content it is;
///   - `<|channel|>` outside a message opens an assistant message at its channel (models sometimes skip
///     `<|start|>assistant`);
///   - a header that ends without `<|message|>` (a terminator, `<|start|>`, or more than kMaxHeaderBytes bytes) is
///     surfaced as the content of a message with what the header gave (marked malformed);
///   - `<|start|>` or `<|channel|>` inside content ends the current message first (a missing `<|end|>`);
///   - `<|end|>` / `<|return|>` / `<|call|>` outside a message just end the message or turn that is open, if any;
///   - any other special token inside content is surfaced as its literal text.
/// Any channel name is accepted (unknown ones are reported as they are). The Tokenizer must outlive the parser.
class Parser {
 public:
  static constexpr size_t kMaxHeaderBytes = 256;

  /// Errors: those of SpecialTokens::find().
  static Expected<Parser> create(const Tokenizer& tokenizer);

  /// Feeds one generated token; appends the events it completes to `events`.
  void push(int32_t token_id, std::vector<Event>* events);
  /// End of the stream without a terminator (token budget, Ctrl-C): ends an open message (its header too) so that
  /// everything pushed has been reported. The parser then expects a new message.
  void finish(std::vector<Event>* events);

  /// Every message completed so far (kMessageEnd order).
  const std::vector<Message>& messages() const { return messages_; }
  /// Whether a turn terminator has been seen.
  bool turn_ended() const { return turn_ended_; }

 private:
  enum class State { kOutside, kHeader, kContent };

  Parser(const Tokenizer& tokenizer, const SpecialTokens& special);
  void begin_header(std::string role_text);
  void header_to_content(bool malformed, std::vector<Event>* events);
  void end_message(int32_t terminator, std::vector<Event>* events);
  void append_content_token(int32_t token_id, std::vector<Event>* events);

  const Tokenizer* tokenizer_;
  SpecialTokens special_;
  State state_ = State::kHeader;
  // Header parts as raw text: before <|channel|>, after it, and after <|constrain|>.
  std::string header_role_;
  std::string header_channel_;
  std::string header_constrain_;
  int header_part_ = 0;  // 0: role, 1: channel, 2: constrain
  size_t header_implicit_bytes_ = 0;  // leading bytes of header_role_ that the prompt gave (not generated)
  Message current_;
  bool current_malformed_ = false;
  StreamDecoder decoder_;
  std::vector<Message> messages_;
  bool turn_ended_ = false;
};

/// Turns parser events into the text a terminal shows: the answer (final channel, and text whose channel is unknown or
/// missing) as is; reasoning (analysis and commentary messages, and any message with a recipient, i.e. tool calls)
/// either hidden, or shown dimmed with ANSI SGR 2 (ansi = true), or after a "(channel) " label on a line of its own
/// (ansi = false, for pipes and files).
class DisplayFormatter {
 public:
  DisplayFormatter(bool show_reasoning, bool ansi) : show_reasoning_(show_reasoning), ansi_(ansi) {}

  /// The text to print for `event` (often empty).
  std::string format(const Event& event);
  /// Whether the message being shown is reasoning.
  bool in_reasoning() const { return reasoning_; }

 private:
  bool show_reasoning_;
  bool ansi_;
  bool reasoning_ = false;
  bool visible_ = true;
};

}  // namespace hetmoe::harmony
