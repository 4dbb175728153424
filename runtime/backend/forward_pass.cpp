#include "runtime/backend/forward_pass.h"

#include <fmt/format.h>

namespace hetmoe {

Status ForwardPass::forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) {
  if (static_cast<uint64_t>(num_positions()) + token_ids.size() > context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} tokens at position {} do not fit the context of {}", token_ids.size(),
                                  num_positions(), context_length()));
  for (size_t i = 0; i < token_ids.size(); ++i)
    if (token_ids[i] < 0 || static_cast<uint32_t>(token_ids[i]) >= vocab_size())
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("token {} of the batch is id {}, outside the vocabulary of {}", i, token_ids[i],
                                    vocab_size()));
  for (size_t i = 0; i < token_ids.size(); ++i) {
    const bool last = i + 1 == token_ids.size();
    HETMOE_RETURN_IF_ERROR(forward(token_ids[i], last ? last_logits : std::span<float>()));
  }
  return {};
}

Status ForwardPass::append_repeated_positions(uint32_t) {
  return make_error(ErrorCode::kUnsupported, "this forward pass cannot append repeated KV positions (CPU path only)");
}

Status ForwardPass::truncate(uint32_t target) {
  if (target > num_positions())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot truncate to {} positions: only {} are processed", target, num_positions()));
  if (target == num_positions()) return {};
  return make_error(ErrorCode::kUnsupported, "this forward pass keeps no spare KV ring slots: it cannot truncate");
}

}  // namespace hetmoe
