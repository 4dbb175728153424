#include "runtime/exec/multi_forward_sequential.h"

#include <fmt/format.h>

namespace hetmoe {

Expected<std::unique_ptr<SequentialMultiForward>> SequentialMultiForward::create(
    std::vector<std::unique_ptr<ForwardPass>> slots) {
  if (slots.empty()) return make_error(ErrorCode::kInvalidArgument, "a multi-sequence forward needs at least one slot");
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!slots[i]) return make_error(ErrorCode::kInvalidArgument, fmt::format("slot {} has no forward pass", i));
    if (slots[i]->context_length() != slots[0]->context_length() || slots[i]->vocab_size() != slots[0]->vocab_size())
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("slot {}: context {} / vocabulary {} differ from slot 0's ({} / {})", i,
                                    slots[i]->context_length(), slots[i]->vocab_size(), slots[0]->context_length(),
                                    slots[0]->vocab_size()));
  }
  return std::unique_ptr<SequentialMultiForward>(new SequentialMultiForward(std::move(slots)));
}

void SequentialMultiForward::step(std::span<const SequenceStep> steps, std::span<Status> results) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const SequenceStep& s = steps[i];
    if (s.slot_idx >= slots_.size()) {
      results[i] = make_error(ErrorCode::kInvalidArgument,
                              fmt::format("slot {} does not exist ({} slots)", s.slot_idx, slots_.size()));
      continue;
    }
    results[i] = slots_[s.slot_idx]->forward_batch(s.token_ids, s.last_logits);
  }
}

}  // namespace hetmoe
