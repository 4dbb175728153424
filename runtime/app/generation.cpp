#include "runtime/app/generation.h"

#include <fmt/format.h>

#include <algorithm>

#include "profiler/memory.h"
#include "profiler/trace.h"

namespace hetmoe {

Expected<GenerationStats> generate_tokens(ForwardPass& forward, Sampler& sampler, std::span<const int32_t> prompt_ids,
                                          int max_new_tokens, std::span<const int32_t> stop_ids,
                                          std::span<float> logits, const std::function<bool(int32_t)>& on_token) {
  if (prompt_ids.empty() && forward.num_positions() == 0)
    return make_error(ErrorCode::kInvalidArgument, "the prompt is empty");
  if (prompt_ids.empty())
    return make_error(ErrorCode::kInvalidArgument, "nothing to continue from: the new prompt is empty");
  const uint64_t needed = static_cast<uint64_t>(forward.num_positions()) + prompt_ids.size() +
                          static_cast<uint64_t>(std::max(max_new_tokens, 0));
  if (needed > forward.context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} tokens already in the context plus the prompt ({} tokens) plus {} generated "
                                  "tokens need {} positions but the context is {}",
                                  forward.num_positions(), prompt_ids.size(), max_new_tokens, needed,
                                  forward.context_length()));
  if (logits.size() != forward.vocab_size())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("logits buffer has {} floats, expected {}", logits.size(), forward.vocab_size()));

  GenerationStats stats;
  stats.num_prompt_tokens = static_cast<uint32_t>(prompt_ids.size());
  const double t0 = profiler::now_seconds();
  HETMOE_RETURN_IF_ERROR(forward.forward_batch(prompt_ids, logits));
  for (int32_t id : prompt_ids) sampler.accept(id);
  const double t1 = profiler::now_seconds();
  stats.prefill_seconds = t1 - t0;

  int64_t step_start_ns = profiler::trace_enabled() ? profiler::trace_now_ns() : 0;
  for (int i = 0; i < max_new_tokens; ++i) {
    profiler::TraceSpan sample_span(profiler::TraceCategory::kOp, "sample", {{"token", i}});
    const int32_t token = sampler.sample(logits);
    sample_span.end();
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      stats.stop_token = token;
      break;
    }
    ++stats.num_generated;
    sampler.accept(token);
    if (!on_token(token)) {
      stats.stopped_by_caller = true;
      break;
    }
    if (i + 1 < max_new_tokens) HETMOE_RETURN_IF_ERROR(forward.forward(token, logits));
    if (profiler::trace_enabled()) {  // tok/s of this step: sample, stream out, forward
      const int64_t now = profiler::trace_now_ns();
      if (now > step_start_ns)
        profiler::trace_counter(profiler::kTraceCounterDecode, 1e9 / static_cast<double>(now - step_start_ns));
      step_start_ns = now;
    }
  }
  stats.decode_seconds = profiler::now_seconds() - t1;
  return stats;
}

}  // namespace hetmoe
