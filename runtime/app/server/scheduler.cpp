#include "runtime/app/server/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "profiler/trace.h"

namespace hetmoe::server {

using Clock = std::chrono::steady_clock;

namespace {
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeout: return "timeout";
    case FinishReason::kError: return "error";
  }
  return "?";
}

size_t common_prefix_length(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

struct Scheduler::Active {
  Job job;
  std::shared_ptr<JobHandle> handle;
  uint32_t slot_idx = 0;
  uint32_t prefill_pos = 0;       // prompt tokens in the slot's KV cache
  int32_t next_token = -1;        // sampled, to be fed in the next step
  Sampler sampler;
  std::vector<float> logits;      // (vocab_size)
  JobResult result;
  Clock::time_point admitted_at;
  Clock::time_point first_token_at;
  int64_t trace_admitted_ns = -1;  // profiler::trace_now_ns() at admission while tracing, else -1
  bool done = false;

  Active(Job j, std::shared_ptr<JobHandle> h, SamplerParams p) : job(std::move(j)), handle(std::move(h)), sampler(p) {}
};

Scheduler::Scheduler(MultiSequenceForward& forward, SchedulerOptions options)
    : forward_(forward), options_(options) {
  slot_tokens_.resize(forward_.num_slots());
  slot_busy_.assign(forward_.num_slots(), false);
  stats_.num_slots = forward_.num_slots();
  if (options_.prefill_chunk == 0) options_.prefill_chunk = 1;
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Expected<std::shared_ptr<JobHandle>> Scheduler::submit(Job job) {
  if (job.prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "the prompt is empty");
  const uint32_t context = forward_.context_length();
  if (job.prompt.size() >= context)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("the prompt has {} tokens; the context holds {} (at least one more is needed for "
                                  "the answer)",
                                  job.prompt.size(), context));
  if (auto s = validate(job.sampling); !s) return s.error();
  job.max_new_tokens = std::min<uint32_t>(job.max_new_tokens, context - static_cast<uint32_t>(job.prompt.size()));
  auto handle = std::make_shared<JobHandle>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return make_error(ErrorCode::kUnsupported, "the server is shutting down");
    if (queue_.size() >= options_.max_queue)
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("queue full: {} requests are waiting for a slot", queue_.size()));
    queue_.push_back(Queued{std::move(job), handle, Clock::now()});
  }
  cv_.notify_all();
  return handle;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  SchedulerStats s = stats_;
  s.queue_length = static_cast<uint32_t>(queue_.size());
  s.slots_busy = static_cast<uint32_t>(std::count(slot_busy_.begin(), slot_busy_.end(), true));
  s.kv_cells_used = 0;
  for (const auto& t : slot_tokens_) s.kv_cells_used += t.size();
  return s;
}

std::vector<std::vector<int32_t>> Scheduler::slot_tokens() const {
  std::lock_guard lock(mutex_);
  return slot_tokens_;
}

void Scheduler::admit_locked(std::vector<Active>& active) {
  while (!queue_.empty()) {
    // The free slot that shares the longest prefix with the prompt; on ties the one holding the fewest tokens.
    Queued& q = queue_.front();
    int best = -1;
    size_t best_prefix = 0;
    for (uint32_t s = 0; s < slot_busy_.size(); ++s) {
      if (slot_busy_[s]) continue;
      const size_t prefix = options_.cache_prompts && q.job.cache_prompt ? common_prefix_length(slot_tokens_[s], q.job.prompt) : 0;
      if (best < 0 || prefix > best_prefix ||
          (prefix == best_prefix && slot_tokens_[s].size() < slot_tokens_[best].size())) {
        best = static_cast<int>(s);
        best_prefix = prefix;
      }
    }
    if (best < 0) return;
    const uint32_t slot = static_cast<uint32_t>(best);
    // At least the last prompt token is computed again: its logits give the first answer token.
    uint32_t reuse = static_cast<uint32_t>(std::min(best_prefix, q.job.prompt.size() - 1));
    if (reuse != forward_.num_positions(slot)) {
      if (reuse == 0 || !forward_.truncate(slot, reuse)) {
        forward_.reset(slot);
        reuse = 0;
      }
    }
    slot_tokens_[slot].assign(q.job.prompt.begin(), q.job.prompt.begin() + reuse);
    slot_busy_[slot] = true;

    SamplerParams params = q.job.sampling;
    Active& a = active.emplace_back(std::move(q.job), std::move(q.handle), params);
    a.slot_idx = slot;
    a.prefill_pos = reuse;
    a.logits.resize(forward_.vocab_size());
    a.admitted_at = Clock::now();
    if (profiler::trace_enabled()) a.trace_admitted_ns = profiler::trace_now_ns();
    a.result.num_prompt_tokens = static_cast<uint32_t>(a.job.prompt.size());
    a.result.num_cached_tokens = reuse;
    a.result.queue_seconds = seconds_between(q.queued_at, a.admitted_at);
    for (int32_t id : a.job.prompt) a.sampler.accept(id);
    stats_.prompt_tokens += a.job.prompt.size();
    stats_.cached_prompt_tokens += reuse;
    if (reuse > 0) ++stats_.prompt_cache_hits;
    queue_.pop_front();
  }
}

void Scheduler::finish(Active& a, FinishReason reason, Error error) {
  if (a.done) return;
  a.done = true;
  a.result.finish = reason;
  if (reason == FinishReason::kError) a.result.error = std::move(error);
  const Clock::time_point now = Clock::now();
  if (a.result.num_generated > 0 || a.result.stop_token) {
    a.result.decode_seconds = seconds_between(a.first_token_at, now);
  } else {
    a.result.prefill_seconds = seconds_between(a.admitted_at, now);
  }
  {
    std::lock_guard lock(mutex_);
    slot_busy_[a.slot_idx] = false;
    stats_.generated_tokens += a.result.num_generated;
    ++stats_.jobs_finished;
  }
  // The request on its slot's track (a slot runs one request at a time, so the spans of a track never overlap).
  if (a.trace_admitted_ns >= 0 && profiler::trace_enabled()) {
    const std::string track = fmt::format("{} {}", profiler::kTraceTrackServerSlot, a.slot_idx);
    profiler::trace_span(profiler::trace_track(track.c_str()), profiler::TraceCategory::kServe, "request",
                         a.trace_admitted_ns, profiler::trace_now_ns(),
                         {{"prompt_tokens", a.result.num_prompt_tokens},
                          {"cached_tokens", a.result.num_cached_tokens},
                          {"generated_tokens", a.result.num_generated},
                          {"finish", static_cast<int64_t>(reason)}});
  }
  if (a.job.on_done) a.job.on_done(a.result);
}

void Scheduler::run() {
  std::vector<Active> active;
  std::vector<SequenceStep> steps;
  std::vector<Active*> step_jobs;
  std::vector<Status> results;
  std::vector<int32_t> decode_tokens;  // (num_slots) storage for one-token steps
  decode_tokens.resize(forward_.num_slots());
  bool trace_named = false;         // this thread's trace track is named
  int64_t traced_queue_length = 0;  // the last queue length recorded as a counter
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active.empty(); });
      if (stopping_) break;
      if (!trace_named && profiler::trace_enabled()) {  // before this thread's first event
        profiler::trace_name_thread("server scheduler");
        trace_named = true;
      }
      admit_locked(active);
      if (profiler::trace_enabled() && static_cast<int64_t>(queue_.size()) != traced_queue_length) {
        traced_queue_length = static_cast<int64_t>(queue_.size());
        profiler::trace_counter(profiler::kTraceCounterServerQueue, static_cast<double>(traced_queue_length));
      }
    }
    const Clock::time_point now = Clock::now();
    for (Active& a : active) {
      if (a.handle->cancelled()) finish(a, FinishReason::kCancelled);
      else if (a.job.deadline && now >= *a.job.deadline) finish(a, FinishReason::kTimeout);
    }
    std::erase_if(active, [](const Active& a) { return a.done; });
    if (active.empty()) continue;

    steps.clear();
    step_jobs.clear();
    uint32_t num_decode = 0;
    uint64_t num_prefill = 0;
    for (Active& a : active) {
      SequenceStep s;
      s.slot_idx = a.slot_idx;
      if (a.prefill_pos < a.job.prompt.size()) {
        const uint32_t n = std::min<uint32_t>(options_.prefill_chunk,
                                              static_cast<uint32_t>(a.job.prompt.size()) - a.prefill_pos);
        s.token_ids = std::span<const int32_t>(a.job.prompt).subspan(a.prefill_pos, n);
        if (a.prefill_pos + n == a.job.prompt.size()) s.last_logits = a.logits;
        num_prefill += n;
      } else {
        decode_tokens[a.slot_idx] = a.next_token;
        s.token_ids = std::span<const int32_t>(&decode_tokens[a.slot_idx], 1);
        s.last_logits = a.logits;
        ++num_decode;
      }
      steps.push_back(s);
      step_jobs.push_back(&a);
    }
    results.assign(steps.size(), Status{});
    // The step and the sampling after it; the forward pass records its own prefill and decode steps inside.
    profiler::TraceSpan step_span(profiler::TraceCategory::kServe, "server step",
                                  {{"slots", static_cast<int64_t>(steps.size())},
                                   {"prefill_tokens", static_cast<int64_t>(num_prefill)},
                                   {"decode_tokens", num_decode}});
    const Clock::time_point t0 = Clock::now();
    forward_.step(steps, results);
    const Clock::time_point t1 = Clock::now();
    {
      std::lock_guard lock(mutex_);
      if (num_decode > 0) {
        stats_.decode_seconds += seconds_between(t0, t1);
        stats_.decode_tokens += num_decode;
      } else {
        stats_.prefill_seconds += seconds_between(t0, t1);
      }
      stats_.prefill_tokens_computed += num_prefill;
      for (size_t i = 0; i < steps.size(); ++i) {
        if (!results[i]) continue;
        auto& tokens = slot_tokens_[steps[i].slot_idx];
        tokens.insert(tokens.end(), steps[i].token_ids.begin(), steps[i].token_ids.end());
      }
    }

    for (size_t i = 0; i < steps.size(); ++i) {
      Active& a = *step_jobs[i];
      if (!results[i]) {
        // The slot's cache may hold part of the failed step: forget it.
        forward_.reset(a.slot_idx);
        {
          std::lock_guard lock(mutex_);
          slot_tokens_[a.slot_idx].clear();
        }
        finish(a, FinishReason::kError, results[i].error());
        continue;
      }
      if (a.prefill_pos < a.job.prompt.size()) {
        a.prefill_pos += static_cast<uint32_t>(steps[i].token_ids.size());
        if (steps[i].last_logits.empty()) continue;  // more prompt to come
        a.first_token_at = t1;
        a.result.prefill_seconds = seconds_between(a.admitted_at, t1);
        if (a.job.max_new_tokens == 0) {
          finish(a, FinishReason::kLength);
          continue;
        }
      }
      const int32_t token = a.sampler.sample(a.logits);
      a.sampler.accept(token);
      if (std::find(a.job.stop_ids.begin(), a.job.stop_ids.end(), token) != a.job.stop_ids.end()) {
        a.result.stop_token = token;
        finish(a, FinishReason::kStop);
        continue;
      }
      ++a.result.num_generated;
      const bool go_on = !a.job.on_token || a.job.on_token(token);
      if (!go_on) {
        finish(a, FinishReason::kCancelled);
      } else if (a.result.num_generated >= a.job.max_new_tokens ||
                 forward_.num_positions(a.slot_idx) >= forward_.context_length()) {
        finish(a, FinishReason::kLength);
      } else {
        a.next_token = token;
      }
    }
    step_span.end();
    std::erase_if(active, [](const Active& a) { return a.done; });
  }

  // Shutting down: every job ends.
  for (Active& a : active) finish(a, FinishReason::kCancelled);
  std::deque<Queued> left;
  {
    std::lock_guard lock(mutex_);
    left.swap(queue_);
  }
  for (Queued& q : left) {
    JobResult r;
    r.finish = FinishReason::kCancelled;
    r.num_prompt_tokens = static_cast<uint32_t>(q.job.prompt.size());
    if (q.job.on_done) q.job.on_done(r);
  }
}

}  // namespace hetmoe::server
