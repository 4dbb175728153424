#pragma once
// A forward pass over several independent sequences ("slots"), each with its own positions and KV cache: what a
// server needs to run concurrent requests. One step() call advances any subset of the slots: a decode token for
// some, a chunk of prompt (prefill) for others. An implementation may run the steps as one batched pass (the weights
// read once for every slot, experts grouped across slots) or one slot after the other; the results must not depend on
// which other slots share the step (a slot's logits are those a single-sequence pass computes).
//
// Implementations: CpuMultiForward (runtime/exec/multi_forward_cpu.h) batches the slots' decode tokens on the CPU
// path; SequentialMultiForward (runtime/exec/multi_forward_sequential.h) runs one ForwardPass per slot in turn (the
// reference and GPU passes). docs/serving.md describes both.

#include <cstdint>
#include <span>

#include "runtime/base/expected.h"

namespace hetmoe {

/// One slot's part of a step: token_ids run at the slot's positions num_positions(slot_idx) .. +n-1; the logits of
/// the last one go to last_logits[vocab_size] (f32), or are skipped when last_logits is empty.
struct SequenceStep {
  uint32_t slot_idx = 0;
  std::span<const int32_t> token_ids;
  std::span<float> last_logits;
};

class MultiSequenceForward {
 public:
  virtual ~MultiSequenceForward() = default;

  /// Runs every step (each slot at most once per call). results[i] (results.size() == steps.size()) is step i's
  /// outcome: an error for one slot (a token outside the vocabulary, a full context: ForwardPass::forward_batch's
  /// errors) leaves that slot unchanged and does not affect the others.
  virtual void step(std::span<const SequenceStep> steps, std::span<Status> results) = 0;

  virtual uint32_t num_slots() const = 0;
  /// Tokens a slot holds = the position of its next token.
  virtual uint32_t num_positions(uint32_t slot_idx) const = 0;
  /// Positions each slot can hold.
  virtual uint32_t context_length() const = 0;
  virtual uint32_t vocab_size() const = 0;
  /// Forgets a slot's positions.
  virtual void reset(uint32_t slot_idx) = 0;
  /// Goes back to num_positions in a slot, keeping its KV cache before it (prompt caching). Errors: as
  /// ForwardPass::truncate (kUnsupported when the slot cannot go back that far; the caller then resets).
  virtual Status truncate(uint32_t slot_idx, uint32_t num_positions) = 0;
};

}  // namespace hetmoe
