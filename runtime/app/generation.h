#pragma once
// The generation loop shared by `hetmoe generate`, `hetmoe chat` and `hetmoe bench`: prefill a prompt, then sample
// and feed tokens one at a time until a stop token, the token budget, or the caller says stop.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "runtime/base/expected.h"
#include "runtime/backend/forward_pass.h"
#include "runtime/app/sampler.h"

namespace hetmoe {

struct GenerationStats {
  uint32_t num_prompt_tokens = 0;
  uint32_t num_generated = 0;         // tokens passed to on_token (stop tokens excluded)
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;        // from the first sample to the end
  std::optional<int32_t> stop_token;  // the stop id that ended generation, if one did
  bool stopped_by_caller = false;     // on_token returned false

  double prefill_tok_per_s() const { return num_prompt_tokens / (prefill_seconds > 0 ? prefill_seconds : 1e-9); }
  double decode_tok_per_s() const { return num_generated / (decode_seconds > 0 ? decode_seconds : 1e-9); }
};

/// Appends prompt_ids at the forward pass's current position (so a chat can continue a conversation), then samples
/// up to max_new_tokens. Each sampled token that is not in stop_ids goes to on_token(id) and, if more tokens are to
/// come, through the forward pass; on_token returns false to stop (e.g. Ctrl-C). A stop token is not fed.
/// logits[vocab_size] is caller-provided scratch (no allocation in the loop).
/// Errors: kInvalidArgument before any work if the prompt is empty and nothing was processed yet, or if
/// num_positions() + prompt + max_new_tokens exceeds the context (the message gives all three numbers);
/// the forward pass's errors otherwise.
Expected<GenerationStats> generate_tokens(ForwardPass& forward, Sampler& sampler, std::span<const int32_t> prompt_ids,
                                          int max_new_tokens, std::span<const int32_t> stop_ids,
                                          std::span<float> logits, const std::function<bool(int32_t)>& on_token);

}  // namespace hetmoe
