#pragma once
// MultiSequenceForward (runtime/backend/multi_forward.h) on the CPU path with continuous batching: one CpuForward
// (its weights, buffers and threads) and a KV cache per slot. In a step, the slots' one-token steps (decode) run as
// batches of up to CpuForward::max_group_tokens() = 8 tokens (CpuForward::forward_group: each dense matrix one GEMM
// over the group, each expert's weights read once for the group's tokens routed to it, each token's attention on its
// own slot's KV cache); below cpu::kGemmMatchesGemvBelowTokens tokens the GEMM gives every token the bits of the
// one-token GEMV, so a slot's logits are those it gets alone. Prompt chunks (several tokens) run as their own slot's
// batch (forward_batch's batches): mixed with other slots' tokens they would reach the token-lane GEMM, whose sums
// differ in the last bits. Not thread-safe: one caller (the server's scheduler thread) at a time.

#include <memory>
#include <vector>

#include "runtime/backend/multi_forward.h"
#include "runtime/exec/forward_cpu.h"

namespace hetmoe {

class CpuMultiForward final : public MultiSequenceForward {
 public:
  /// num_slots slots over `pass`: slot 0 is the pass's own sequence, slots 1.. get KV caches like it
  /// (CpuForward::create_sequence). Errors: kInvalidArgument for no pass or num_slots 0 or above 4096;
  /// create_sequence's (allocation failure).
  static Expected<std::unique_ptr<CpuMultiForward>> create(std::unique_ptr<CpuForward> pass, uint32_t num_slots);

  /// Errors per step (the others run): kInvalidArgument for a slot that does not exist or appears twice in the call,
  /// CpuForward::check_step's (a token outside the vocabulary, a full context, a logits buffer of the wrong size).
  void step(std::span<const SequenceStep> steps, std::span<Status> results) override;
  uint32_t num_slots() const override { return static_cast<uint32_t>(slots_.size()); }
  uint32_t num_positions(uint32_t slot_idx) const override { return slots_[slot_idx]->num_positions; }
  uint32_t context_length() const override { return pass_->context_length(); }
  uint32_t vocab_size() const override { return pass_->vocab_size(); }
  void reset(uint32_t slot_idx) override { CpuForward::reset_sequence(*slots_[slot_idx]); }
  Status truncate(uint32_t slot_idx, uint32_t num_positions) override {
    return pass_->truncate_sequence(*slots_[slot_idx], num_positions);
  }

  /// The pass every slot runs through.
  const CpuForward& pass() const { return *pass_; }

 private:
  CpuMultiForward() = default;

  std::unique_ptr<CpuForward> pass_;
  std::vector<std::unique_ptr<CpuForward::Sequence>> own_sequences_;  // slots 1..
  std::vector<CpuForward::Sequence*> slots_;                          // (num_slots)
  // Scratch of step(), sized in create().
  std::vector<uint8_t> slot_in_step_;              // (num_slots)
  std::vector<size_t> decode_steps_;               // (num_slots) indices of the one-token steps
  std::vector<CpuForward::GroupToken> group_;      // (max_group_tokens)
};

}  // namespace hetmoe
