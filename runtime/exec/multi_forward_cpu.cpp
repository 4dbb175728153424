#include "runtime/exec/multi_forward_cpu.h"

#include <fmt/format.h>

namespace hetmoe {

Expected<std::unique_ptr<CpuMultiForward>> CpuMultiForward::create(std::unique_ptr<CpuForward> pass,
                                                                   uint32_t num_slots) {
  if (!pass) return make_error(ErrorCode::kInvalidArgument, "the batched CPU forward needs a CPU forward pass");
  if (num_slots == 0 || num_slots > 4096)
    return make_error(ErrorCode::kInvalidArgument, fmt::format("{} slots (expected 1..4096)", num_slots));
  std::unique_ptr<CpuMultiForward> multi(new CpuMultiForward());
  multi->slots_.push_back(&pass->sequence());
  for (uint32_t s = 1; s < num_slots; ++s) {
    auto seq = pass->create_sequence();
    if (!seq) return make_error(seq.error().code, fmt::format("slot {}: {}", s, seq.error().to_string()));
    multi->own_sequences_.push_back(std::make_unique<CpuForward::Sequence>(std::move(*seq)));
    multi->slots_.push_back(multi->own_sequences_.back().get());
  }
  multi->slot_in_step_.assign(num_slots, 0);
  multi->decode_steps_.reserve(num_slots);
  multi->group_.reserve(pass->max_group_tokens());
  multi->pass_ = std::move(pass);
  return multi;
}

void CpuMultiForward::step(std::span<const SequenceStep> steps, std::span<Status> results) {
  std::fill(slot_in_step_.begin(), slot_in_step_.end(), uint8_t{0});
  decode_steps_.clear();
  // Checks first, so a bad step is refused before anything runs and the others go on.
  for (size_t i = 0; i < steps.size(); ++i) {
    const SequenceStep& s = steps[i];
    if (s.slot_idx >= slots_.size()) {
      results[i] = make_error(ErrorCode::kInvalidArgument,
                              fmt::format("slot {} does not exist ({} slots)", s.slot_idx, slots_.size()));
      continue;
    }
    if (slot_in_step_[s.slot_idx]) {
      results[i] = make_error(ErrorCode::kInvalidArgument,
                              fmt::format("slot {} appears twice in one step", s.slot_idx));
      continue;
    }
    slot_in_step_[s.slot_idx] = 1;
    results[i] = pass_->check_step(*slots_[s.slot_idx], s.token_ids, s.last_logits);
    if (results[i] && s.token_ids.size() == 1) decode_steps_.push_back(i);
  }
  // Prompt chunks: each slot's own batches.
  for (size_t i = 0; i < steps.size(); ++i)
    if (results[i] && steps[i].token_ids.size() > 1)
      results[i] = pass_->forward_sequence(*slots_[steps[i].slot_idx], steps[i].token_ids, steps[i].last_logits);
  // One-token steps: as few groups as the group limit allows, of even sizes (the weights are read once per group).
  const size_t num_decode = decode_steps_.size();
  const size_t max_group = pass_->max_group_tokens();
  const size_t num_groups = (num_decode + max_group - 1) / max_group;
  for (size_t g = 0; g < num_groups; ++g) {
    group_.clear();
    const size_t begin = num_decode * g / num_groups, end = num_decode * (g + 1) / num_groups;
    for (size_t k = begin; k < end; ++k) {
      const SequenceStep& s = steps[decode_steps_[k]];
      group_.push_back(CpuForward::GroupToken{slots_[s.slot_idx], s.token_ids[0], s.last_logits});
    }
    const Status status = pass_->forward_group(group_);
    if (!status)  // checked above, so not expected; every step of the group then reports it
      for (size_t k = begin; k < end; ++k) results[decode_steps_[k]] = status;
  }
}

}  // namespace hetmoe
