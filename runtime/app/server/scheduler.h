#pragma once
// The server's scheduler: requests ("jobs") wait in a bounded queue, run in slots of a MultiSequenceForward
// (runtime/backend/multi_forward.h), and report each generated token through a callback. One scheduler thread loops:
// admit waiting jobs into free slots (the slot whose cached tokens share the longest prefix with the prompt, so a
// conversation's next turn reads only its new tokens), then one step for every active slot — one decode token, or a
// bounded chunk (prefill_chunk tokens) of a prompt so a long prompt does not stall the streams — and samples.
// Cancellation (the client went away, a stop string, the time limit) takes effect before the job's next step and frees
// its slot. At temperature 0 a job's tokens do not depend on the other jobs (each slot has its own KV cache and
// sampler; the forward pass promises slot independence).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/app/sampler.h"
#include "runtime/backend/multi_forward.h"
#include "runtime/base/expected.h"

namespace hetmoe::server {

enum class FinishReason {
  kStop,       // a stop token (end of turn)
  kLength,     // max_new_tokens, or the context is full
  kCancelled,  // cancel() (client gone, stop string)
  kTimeout,    // the job's deadline passed
  kError,      // the forward pass failed (JobResult::error says why)
};
const char* finish_reason_name(FinishReason reason);

struct JobResult {
  FinishReason finish = FinishReason::kStop;
  Error error;                       // kError only
  std::optional<int32_t> stop_token; // kStop: the token that ended the turn
  uint32_t num_prompt_tokens = 0;
  uint32_t num_cached_tokens = 0;    // prompt tokens reused from the slot's KV cache (not computed again)
  uint32_t num_generated = 0;        // tokens passed to on_token
  double queue_seconds = 0.0;
  double prefill_seconds = 0.0;      // admission to the first sampled token (time to first token minus queueing)
  double decode_seconds = 0.0;
};

struct Job {
  std::vector<int32_t> prompt;      // non-empty
  SamplerParams sampling;
  uint32_t max_new_tokens = 256;    // clipped to the context left after the prompt
  std::vector<int32_t> stop_ids;    // tokens that end the turn (not fed, reported in JobResult::stop_token)
  std::optional<std::chrono::steady_clock::time_point> deadline;
  /// false: never reuse a slot's cached prefix for this job (its whole prompt is computed; the request's
  /// "cache_prompt": false, as llama-server takes it). The slot's cache still holds the job's tokens afterwards.
  bool cache_prompt = true;
  /// Called on the scheduler thread with every generated token that is not a stop token; must be quick (hand the
  /// token to another thread). Returns false to stop (as cancel()).
  std::function<bool(int32_t)> on_token;
  /// Called once on the scheduler thread when the job ends (or from submit()'s caller's thread when shutting down).
  std::function<void(const JobResult&)> on_done;
};

struct SchedulerOptions {
  uint32_t max_queue = 16;        // jobs waiting for a slot; one more is refused (kUnavailable)
  uint32_t prefill_chunk = 256;   // prompt tokens per slot per step
  bool cache_prompts = true;      // reuse a slot's KV cache for a shared prefix
};

/// A job in flight, for cancel().
class JobHandle {
 public:
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

/// Counters for /metrics (a consistent snapshot).
struct SchedulerStats {
  uint32_t num_slots = 0;
  uint32_t slots_busy = 0;
  uint32_t queue_length = 0;
  uint64_t kv_cells_used = 0;         // positions held over all slots (cached ones included)
  uint64_t prompt_tokens = 0;         // total over finished and running jobs' admitted prompts
  uint64_t cached_prompt_tokens = 0;
  uint64_t prompt_cache_hits = 0;     // jobs that reused at least one cached token
  uint64_t generated_tokens = 0;
  double prefill_seconds = 0.0;       // time in steps that only prefilled, summed
  uint64_t prefill_tokens_computed = 0;
  double decode_seconds = 0.0;        // time in steps with decode tokens, summed
  uint64_t decode_tokens = 0;
  uint64_t jobs_finished = 0;
};

class Scheduler {
 public:
  /// `forward` must outlive the scheduler. The thread starts at once.
  Scheduler(MultiSequenceForward& forward, SchedulerOptions options);
  ~Scheduler();  // stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Queues a job. Errors: kInvalidArgument for an empty prompt or one that leaves no room for a token in the context
  /// (the message gives both numbers), invalid sampling parameters; kUnsupported "queue full" when max_queue jobs wait
  /// (the server answers 503); kUnsupported when stopped.
  Expected<std::shared_ptr<JobHandle>> submit(Job job);

  /// Ends the thread; jobs still queued or running end with kCancelled.
  void stop();

  SchedulerStats stats() const;
  /// The tokens each slot's KV cache holds (for tests).
  std::vector<std::vector<int32_t>> slot_tokens() const;

 private:
  struct Active;
  void run();
  void admit_locked(std::vector<Active>& active);
  void finish(Active& a, FinishReason reason, Error error = {});

  MultiSequenceForward& forward_;
  SchedulerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  struct Queued {
    Job job;
    std::shared_ptr<JobHandle> handle;
    std::chrono::steady_clock::time_point queued_at;
  };
  std::deque<Queued> queue_;
  std::vector<std::vector<int32_t>> slot_tokens_;  // (num_slots) tokens in each slot's KV cache
  std::vector<bool> slot_busy_;
  bool stopping_ = false;
  SchedulerStats stats_;
  std::thread thread_;
};

/// Longest common prefix of two token sequences.
size_t common_prefix_length(std::span<const int32_t> a, std::span<const int32_t> b);

}  // namespace hetmoe::server
