#pragma once
// MultiSequenceForward (runtime/backend/multi_forward.h) over one ForwardPass per slot, run one after the other in a
// step: correct and independent of the other slots by construction, but each slot reads the weights on its own (no
// batching across slots; the CPU path has CpuMultiForward, runtime/exec/multi_forward_cpu.h, for that).

#include <memory>
#include <vector>

#include "runtime/backend/forward_pass.h"
#include "runtime/backend/multi_forward.h"

namespace hetmoe {

class SequentialMultiForward final : public MultiSequenceForward {
 public:
  /// slots: at least one pass, all with the same context length and vocabulary size. Errors: kInvalidArgument
  /// otherwise.
  static Expected<std::unique_ptr<SequentialMultiForward>> create(std::vector<std::unique_ptr<ForwardPass>> slots);

  void step(std::span<const SequenceStep> steps, std::span<Status> results) override;
  uint32_t num_slots() const override { return static_cast<uint32_t>(slots_.size()); }
  uint32_t num_positions(uint32_t slot_idx) const override { return slots_[slot_idx]->num_positions(); }
  uint32_t context_length() const override { return slots_[0]->context_length(); }
  uint32_t vocab_size() const override { return slots_[0]->vocab_size(); }
  void reset(uint32_t slot_idx) override { slots_[slot_idx]->reset(); }
  Status truncate(uint32_t slot_idx, uint32_t num_positions) override {
    return slots_[slot_idx]->truncate(num_positions);
  }

 private:
  explicit SequentialMultiForward(std::vector<std::unique_ptr<ForwardPass>> slots) : slots_(std::move(slots)) {}
  std::vector<std::unique_ptr<ForwardPass>> slots_;
};

}  // namespace hetmoe
