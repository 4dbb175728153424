#pragma once
// The one interface the runtime uses to run a model: a forward pass that owns its KV cache. Implementations:
// ReferenceForward (runtime/exec/forward_reference.h, the scalar oracle) and the fast paths built on it.

#include <cstdint>
#include <span>

#include "runtime/base/expected.h"

namespace hetmoe {

class ForwardPass {
 public:
  virtual ~ForwardPass() = default;

  /// Runs one token at position num_positions() and writes logits_out[vocab_size] (f32), or skips the output layer
  /// when logits_out is empty. Errors: kInvalidArgument for a token outside the vocabulary, a full context, or a
  /// logits buffer of the wrong size; nothing is changed then.
  virtual Status forward(int32_t token_id, std::span<float> logits_out) = 0;

  /// Runs token_ids[n] at positions num_positions() .. +n-1 (prefill) and writes the logits of the last one to
  /// last_logits[vocab_size] (or skips them when empty). The default runs forward() per token; batched paths
  /// override it. Errors: as forward(), checked for every id and the whole length before any work.
  virtual Status forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits);

  /// Tokens processed so far = the position of the next token.
  virtual uint32_t num_positions() const = 0;
  virtual uint32_t context_length() const = 0;
  virtual uint32_t vocab_size() const = 0;
  /// Forgets all positions; the next token is at position 0.
  virtual void reset() = 0;

  /// Goes back to `num_positions` (≤ num_positions()), keeping the KV cache before it, so a benchmark can repeat a
  /// step at the same depth or a chat can drop a rendered suffix. Errors: kInvalidArgument if num_positions is
  /// ahead of num_positions(); kUnsupported if the sliding-window ring has already overwritten positions the next
  /// token would need (the default: implementations that keep no spare ring slots support only a no-op).
  virtual Status truncate(uint32_t num_positions);

  /// For benchmarks of decode at depth only: appends num_positions positions without computing them, their K/V
  /// entries repeating the cache's entries of earlier positions (the cost of attending to a position does not depend
  /// on its values; the context is not a real one afterwards). Errors: kInvalidArgument when the context would
  /// overflow or nothing is cached yet; kUnsupported (the default) for paths that do not implement it.
  virtual Status append_repeated_positions(uint32_t num_positions);
};

}  // namespace hetmoe
