#include "runtime/app/server/harmony_output.h"

#include <algorithm>

namespace hetmoe::server {

OutputAssembler::OutputAssembler(bool tools_enabled, std::string call_id_prefix, std::vector<std::string> stop)
    : tools_enabled_(tools_enabled), call_id_prefix_(std::move(call_id_prefix)) {
  for (std::string& s : stop)
    if (!s.empty()) stop_.push_back(std::move(s));
}

void OutputAssembler::open(SegmentKind kind, const std::string& name, std::vector<OutputDelta>* out) {
  if (open_ && kind == kind_ && kind != SegmentKind::kToolCall) return;  // same kind: the segment goes on
  close(out);
  open_ = true;
  kind_ = kind;
  OutputDelta d;
  d.kind = OutputDelta::Kind::kSegmentStart;
  d.segment = kind;
  if (kind == SegmentKind::kToolCall) {
    d.tool_idx = tool_calls_.size();
    d.tool_name = name;
    d.call_id = call_id_prefix_ + std::to_string(tool_calls_.size());
    tool_calls_.push_back(ToolCall{d.call_id, name, ""});
  }
  out->push_back(std::move(d));
}

void OutputAssembler::close(std::vector<OutputDelta>* out) {
  if (!open_) return;
  if (kind_ == SegmentKind::kContent && !pending_.empty()) emit_text(std::exchange(pending_, {}), out);
  OutputDelta d;
  d.kind = OutputDelta::Kind::kSegmentEnd;
  d.segment = kind_;
  if (kind_ == SegmentKind::kToolCall) d.tool_idx = tool_calls_.size() - 1;
  out->push_back(std::move(d));
  open_ = false;
}

void OutputAssembler::emit_text(std::string piece, std::vector<OutputDelta>* out) {
  if (piece.empty()) return;
  OutputDelta d;
  d.kind = OutputDelta::Kind::kText;
  d.segment = kind_;
  switch (kind_) {
    case SegmentKind::kReasoning: reasoning_ += piece; break;
    case SegmentKind::kContent: content_ += piece; break;
    case SegmentKind::kToolCall:
      d.tool_idx = tool_calls_.size() - 1;
      tool_calls_.back().arguments += piece;
      break;
  }
  d.text = std::move(piece);
  out->push_back(std::move(d));
}

void OutputAssembler::text(const std::string& piece, std::vector<OutputDelta>* out) {
  if (kind_ != SegmentKind::kContent || stop_.empty()) {
    emit_text(piece, out);
    return;
  }
  pending_ += piece;
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    pending_.resize(first);
    emit_text(std::exchange(pending_, {}), out);
    stopped_ = true;
    close(out);
    return;
  }
  // Hold back the longest suffix that is a prefix of a stop string.
  size_t keep = 0;
  for (const std::string& s : stop_) {
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > keep; --n) {
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  emit_text(pending_.substr(0, pending_.size() - keep), out);
  pending_.erase(0, pending_.size() - keep);
}

void OutputAssembler::push(const harmony::Event& event, std::vector<OutputDelta>* out) {
  if (stopped_) return;
  switch (event.kind) {
    case harmony::EventKind::kMessageStart: {
      const harmony::Message& m = event.message;
      if (tools_enabled_ && m.recipient.starts_with("functions.") && m.recipient.size() > 10) {
        open(SegmentKind::kToolCall, m.recipient.substr(10), out);
      } else if (m.channel == "analysis" && m.recipient.empty()) {
        open(SegmentKind::kReasoning, "", out);
      } else {
        open(SegmentKind::kContent, "", out);
      }
      break;
    }
    case harmony::EventKind::kContent:
      if (!open_) open(SegmentKind::kContent, "", out);
      text(event.text, out);
      break;
    case harmony::EventKind::kMessageEnd:
      // A tool call is complete at its message's end; other kinds may continue in the next message.
      if (open_ && kind_ == SegmentKind::kToolCall) close(out);
      break;
    case harmony::EventKind::kTurnEnd:
      break;
  }
}

void OutputAssembler::finish(std::vector<OutputDelta>* out) { close(out); }

}  // namespace hetmoe::server
