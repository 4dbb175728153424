#pragma once
// Turns the harmony parser's events (runtime/text/harmony.h) into what the OpenAI APIs return: reasoning text (the
// analysis channel), answer text (final, commentary without a recipient, and anything malformed or on an unknown
// channel: a model may emit anything, and it all comes back as text), and tool calls (a message to
// `functions.NAME` when the request declared tools). Consecutive messages of the same kind form one segment; every
// tool call is a segment of its own. Stop strings cut the answer text: text that could begin a stop string is held
// back until it cannot.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/text/harmony.h"

namespace hetmoe::server {

enum class SegmentKind { kReasoning, kContent, kToolCall };

struct OutputDelta {
  enum class Kind { kSegmentStart, kText, kSegmentEnd };
  Kind kind = Kind::kText;
  SegmentKind segment = SegmentKind::kContent;
  std::string text;       // kText: the next piece (for a tool call: of its arguments)
  size_t tool_idx = 0;    // kToolCall: index among the output's tool calls
  std::string tool_name;  // kSegmentStart of a tool call
  std::string call_id;    // kSegmentStart of a tool call
};

struct ToolCall {
  std::string call_id;
  std::string name;
  std::string arguments;  // the model's text, normally JSON
};

class OutputAssembler {
 public:
  /// tools_enabled: messages to functions.NAME become tool calls (else their text is answer text).
  /// call_id_prefix: tool call ids are prefix + index. stop: strings that end the answer (empty ones ignored).
  OutputAssembler(bool tools_enabled, std::string call_id_prefix, std::vector<std::string> stop);

  /// Appends the deltas `event` produces.
  void push(const harmony::Event& event, std::vector<OutputDelta>* out);
  /// Ends the open segment (held-back text goes out).
  void finish(std::vector<OutputDelta>* out);

  /// A stop string was found: nothing after it is reported; the caller stops generation.
  bool stopped() const { return stopped_; }
  /// The message being generated is reasoning (for counting reasoning tokens).
  bool in_reasoning() const { return open_ && kind_ == SegmentKind::kReasoning; }

  const std::string& reasoning() const { return reasoning_; }
  const std::string& content() const { return content_; }
  const std::vector<ToolCall>& tool_calls() const { return tool_calls_; }

 private:
  void open(SegmentKind kind, const std::string& name, std::vector<OutputDelta>* out);
  void close(std::vector<OutputDelta>* out);
  void text(const std::string& piece, std::vector<OutputDelta>* out);
  void emit_text(std::string piece, std::vector<OutputDelta>* out);

  bool tools_enabled_;
  std::string call_id_prefix_;
  std::vector<std::string> stop_;
  bool open_ = false;
  SegmentKind kind_ = SegmentKind::kContent;
  std::string pending_;  // answer text held back (a possible stop-string prefix)
  bool stopped_ = false;
  std::string reasoning_;
  std::string content_;
  std::vector<ToolCall> tool_calls_;
};

}  // namespace hetmoe::server
