#include "runtime/exec/forward_cpu.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <utility>

#include "cpu_kernels/reference.h"
#include "runtime/exec/attention_cpu.h"
#include "runtime/model/weights_repack.h"

namespace hetmoe {
namespace {

bool uses_q8_activations(TensorType type) {
  return type == TensorType::kMXFP4 || type == TensorType::kQ8_0 || type == TensorType::kMXFP4_R16 ||
         type == TensorType::kQ8_0_R16;
}

/// Runs rows [r0, r1) of one job (weights of any supported type; one token → GEMV, several → GEMM). kMXFP4_R16 and
/// kQ8_0_R16: one kernel for any token count, r0 and r1 multiples of 16 (run_mat_jobs' chunks of their rows are).
void run_job_rows(const cpu::KernelTable& k, const CpuForward::MatJob& job, int64_t r0, int64_t r1) {
  const WeightView& w = *job.w;
  const uint8_t* base = w.row(0, job.expert_idx);
  const auto num_cols = static_cast<int64_t>(w.num_cols);
  const TensorType type = w.expert_type(job.expert_idx);  // a RAM tier repacks only its resident experts
  if (type == TensorType::kMXFP4_R16 || type == TensorType::kQ8_0_R16) {
    (type == TensorType::kMXFP4_R16 ? k.gemm_mxfp4_r16 : k.gemm_q8_0_r16)(
        base, w.row_bytes, r0, r1, job.x_q8, job.num_tokens, num_cols, job.y + r0,
        job.num_tokens == 1 ? r1 - r0 : job.y_stride);
  } else if (job.num_tokens == 1) {
    float* y = job.y + r0;
    switch (type) {
      case TensorType::kMXFP4: k.gemv_mxfp4(base, w.row_bytes, r0, r1, job.x_q8, num_cols, y); break;
      case TensorType::kQ8_0: k.gemv_q8_0(base, w.row_bytes, r0, r1, job.x_q8, num_cols, y); break;
      case TensorType::kF32: k.gemv_f32(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
      case TensorType::kF16: k.gemv_f16(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
      case TensorType::kBF16: k.gemv_bf16(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
      case TensorType::kMXFP4_R16:
      case TensorType::kQ8_0_R16: break;  // above
    }
  } else {
    switch (type) {
      case TensorType::kMXFP4:
        k.gemm_mxfp4(base, w.row_bytes, r0, r1, job.x_q8, job.num_tokens, num_cols, job.y + r0, job.y_stride);
        break;
      case TensorType::kQ8_0:
        k.gemm_q8_0(base, w.row_bytes, r0, r1, job.x_q8, job.num_tokens, num_cols, job.y + r0, job.y_stride);
        break;
      case TensorType::kF32:
        k.gemm_f32(base, w.row_bytes, r0, r1, job.x_f32, job.num_tokens, num_cols, job.y + r0, job.y_stride);
        break;
      case TensorType::kF16:
        k.gemm_f16(base, w.row_bytes, r0, r1, job.x_f32, job.num_tokens, num_cols, job.y + r0, job.y_stride);
        break;
      case TensorType::kBF16:
        k.gemm_bf16(base, w.row_bytes, r0, r1, job.x_f32, job.num_tokens, num_cols, job.y + r0, job.y_stride);
        break;
      case TensorType::kMXFP4_R16:
      case TensorType::kQ8_0_R16: break;  // above
    }
  }
  if (job.bias)
    for (int64_t t = 0; t < job.num_tokens; ++t) {
      float* y = job.y + t * job.y_stride;
      for (int64_t r = r0; r < r1; ++r) y[r] += job.bias[r];
    }
}

}  // namespace

Expected<std::unique_ptr<CpuForward>> CpuForward::create(const Model& model, const CpuForwardOptions& options,
                                                         const cpu::KernelTable& kernels) {
  if (options.max_batch_tokens == 0 || options.max_batch_tokens > 4096)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("max_batch_tokens {} is out of range (expected 1..4096)", options.max_batch_tokens));
  const ModelHparams& hp = model.hparams;
  if (hp.hidden_dim % cpu::kActBlockElems != 0 || hp.q_dim() % cpu::kActBlockElems != 0 ||
      hp.expert_ffn_dim % cpu::kActBlockElems != 0 || hp.head_dim > cpu::kMaxAttnHeadDim)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("the CPU path needs hidden ({}), q ({}) and expert FFN ({}) sizes that are multiples "
                                  "of 32 and a head size ({}) of at most {}; use --reference",
                                  hp.hidden_dim, hp.q_dim(), hp.expert_ffn_dim, hp.head_dim, cpu::kMaxAttnHeadDim));
  if (options.rollback_slots > (1u << 20))
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("rollback_slots {} is out of range (expected 0..{})", options.rollback_slots, 1u << 20));
  for (const auto& [type, kernel] : {std::pair{TensorType::kMXFP4_R16, kernels.gemm_mxfp4_r16 != nullptr},
                                      std::pair{TensorType::kQ8_0_R16, kernels.gemm_q8_0_r16 != nullptr}})
    if (!kernel && has_repacked_weights(model, type))
      return make_error(ErrorCode::kUnsupported,
                        fmt::format("the model's weights are repacked ({}) for kernels the {} variant does not have: "
                                    "load the model again without repacking (--no-repack)",
                                    tensor_type_traits(type).name, cpu::isa_name(kernels.isa)));
  if (!options.node_arenas.empty()) {
    const size_t expected = static_cast<size_t>(hp.num_layers) * hp.num_experts;
    if (options.node_arenas.size() > 255 || options.node_arenas[0] != options.arena ||
        std::find(options.node_arenas.begin(), options.node_arenas.end(), nullptr) != options.node_arenas.end())
      return make_error(ErrorCode::kInvalidArgument, "node_arenas: expected up to 255 arenas, the first being `arena`");
    if (options.expert_node.size() != expected)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("expert_node has {} entries, expected num_layers × num_experts = {}",
                                    options.expert_node.size(), expected));
    for (uint8_t n : options.expert_node)
      if (n >= options.node_arenas.size())
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("expert_node names arena {} of {}", n, options.node_arenas.size()));
  }
  auto kv = KvCache::create(hp, options.context_length, options.kv_type, options.kv_type_v.value_or(options.kv_type),
                            options.max_batch_tokens - 1 + options.rollback_slots);
  if (!kv) return kv.error();
  return std::unique_ptr<CpuForward>(new CpuForward(model, std::move(*kv), options, kernels));
}

CpuForward::CpuForward(const Model& model, KvCache kv, const CpuForwardOptions& options,
                       const cpu::KernelTable& kernels)
    : model_(&model), own_{std::move(kv)}, kernels_(&kernels) {
  const ModelHparams& hp = model.hparams;
  if (options.arena) {
    arena_ = options.arena;
    arena_owner_ = options.arena_owner;
    num_threads_ = arena_->max_concurrency();
  } else {
    num_threads_ = options.num_threads > 0 ? options.num_threads
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    own_arena_ = std::make_unique<tbb::task_arena>(num_threads_);
    arena_ = own_arena_.get();
  }
  max_batch_ = std::min(options.max_batch_tokens, own_.kv.context_length());
  kv_extra_slots_ = options.max_batch_tokens - 1 + options.rollback_slots;  // as create() made own_.kv
  rollback_slots_ = options.rollback_slots;
  attention_bf16_ = options.attention_bf16;
  expert_counts_ = options.expert_counts;
  const size_t B = max_batch_, D = hp.hidden_dim, Q = hp.q_dim(), KV = hp.kv_dim(), F = hp.expert_ffn_dim;
  const size_t E = hp.num_experts, K = hp.num_experts_used, G = hp.num_heads / hp.num_kv_heads;
  const size_t blk = cpu::kActBlockElems;
  token_sequence_.resize(B);
  token_pos_.resize(B);
  token_logits_.resize(B);
  group_logits_.resize(B > 1 ? static_cast<size_t>(max_group_tokens()) * hp.vocab_size : 0);
  x_.resize(B * D);
  xb_.resize(B * D);
  xq_.resize(B * D / blk);
  qkv_.resize(B * (Q + 2 * KV));
  attn_out_.resize(B * Q);
  attn_q8_.resize(B * Q / blk);
  proj_.resize(B * D);
  tile_scratch_.reserve(static_cast<size_t>(num_threads_) + 1);
  for (int i = 0; i <= num_threads_; ++i)
    tile_scratch_.emplace_back(static_cast<uint32_t>(std::min<size_t>(B, kAttentionTileTokens) * G), hp.head_dim);
  tile_begin_.resize(B + 1);
  rope_cos_.resize(B * hp.head_dim / 2);
  rope_sin_.resize(B * hp.head_dim / 2);
  router_.resize(B * E);
  chosen_.resize(B * K);
  chosen_w_.resize(B * K);
  expert_of_group_.resize(E);
  group_begin_.resize(E + 1);
  gathered_token_.resize(B * K);
  gathered_weight_.resize(B * K);
  token_rows_.resize(B * K);
  token_num_rows_.resize(B);
  gathered_x_.resize(B * K * D / blk);
  gathered_xf_.resize(B * K * D);
  gate_.resize(B * K * F);
  up_.resize(B * K * F);
  act_q8_.resize(B * K * F / blk);
  down_.resize(B * K * D);
  jobs_.resize(3 * E + 3);
  job_row_begin_.resize(jobs_.size() + 1);
  if (options.node_arenas.size() > 1) {
    node_arenas_ = options.node_arenas;
    expert_node_ = options.expert_node;
    for (size_t n = 0; n < node_arenas_.size(); ++n) node_groups_.push_back(std::make_unique<tbb::task_group>());
    node_jobs_.resize(jobs_.size());
    node_job_begin_.resize(node_arenas_.size() + 1);
    node_job_next_.resize(node_arenas_.size());
    node_row_begin_.resize(node_arenas_.size() * (jobs_.size() + 1));
  }
}

namespace {

/// The chunks one lane of a parallel region owns, on two cache lines of its own (the adjacent-line prefetcher pairs
/// them), so lanes claim chunks without sharing a line, but for the takeovers at the end.
struct alignas(128) LaneChunks {
  std::atomic<int64_t> next{0};  // the lane's next unclaimed chunk
  int64_t end = 0;               // one past the lane's last chunk
};

/// Runs body(chunk_idx, lane) once for every chunk_idx in [0, num_chunks), in one parallel region of up to
/// num_lanes lanes (oneTBB tasks of the calling arena). Lane w owns chunks [w·C/L, (w+1)·C/L) and claims them in
/// order, then claims what the other lanes have not claimed yet, so a delayed thread's chunks are taken over: one
/// relaxed fetch_add per chunk on the owner's cache line. `lane` records the lane's pieces (profiler::TraceWorkLane:
/// one clock read per job boundary, none per chunk) when `trace` is not null; otherwise it records nothing.
template <class Body>
void run_chunks(int num_lanes, int64_t num_chunks, const profiler::TraceWorkInfo* trace, const Body& body) {
  if (num_chunks <= 0) return;
  const int L = static_cast<int>(std::clamp<int64_t>(num_lanes, 1, num_chunks));
  if (L == 1) {
    profiler::TraceWorkLane lane = trace ? profiler::TraceWorkLane(*trace) : profiler::TraceWorkLane();
    for (int64_t c = 0; c < num_chunks; ++c) body(c, lane);
    return;
  }
  // On the stack for up to 16 lanes; a region with more lanes computes long enough for one allocation.
  constexpr int kStackLanes = 16;
  std::array<LaneChunks, kStackLanes> stack_lanes;
  std::unique_ptr<LaneChunks[]> heap_lanes;
  if (L > kStackLanes) heap_lanes = std::make_unique<LaneChunks[]>(static_cast<size_t>(L));
  LaneChunks* lanes = L > kStackLanes ? heap_lanes.get() : stack_lanes.data();
  for (int w = 0; w < L; ++w) {
    lanes[w].next.store(num_chunks * w / L, std::memory_order_relaxed);
    lanes[w].end = num_chunks * (w + 1) / L;
  }
  tbb::parallel_for(
      0, L, 1,
      [&](int w) {
        profiler::TraceWorkLane lane = trace ? profiler::TraceWorkLane(*trace) : profiler::TraceWorkLane();
        for (int k = 0; k < L; ++k) {  // its own chunks first, then what the other lanes have not claimed yet
          LaneChunks& from = lanes[(w + k) % L];
          for (int64_t c; (c = from.next.fetch_add(1, std::memory_order_relaxed)) < from.end;) body(c, lane);
        }
      },
      tbb::simple_partitioner());
}

/// Rows per chunk of the element-wise steps of a batch (norms, quantization, SwiGLU): below two chunks' worth they
/// run on the calling thread (decode).
constexpr int64_t kRowChunk = 16;

/// fn(r0, r1) over [0, num_rows) in chunks of at least min_rows rows on up to num_lanes lanes (run_chunks), or once
/// on the calling thread when there are fewer than 2 · min_rows rows. For steps whose rows are independent: the same
/// results however they are split.
template <class Fn>
void for_row_chunks(int num_lanes, int64_t num_rows, int64_t min_rows, const Fn& fn) {
  if (num_lanes <= 1 || num_rows < 2 * min_rows) {
    if (num_rows > 0) fn(int64_t{0}, num_rows);
    return;
  }
  const int64_t num_chunks = std::min<int64_t>(num_rows / min_rows, 4 * static_cast<int64_t>(num_lanes));
  run_chunks(num_lanes, num_chunks, nullptr, [&](int64_t c, profiler::TraceWorkLane&) {
    fn(num_rows * c / num_chunks, num_rows * (c + 1) / num_chunks);
  });
}

}  // namespace

void CpuForward::quantize_rows(const float* src, cpu::ActQ8Block* dst, uint32_t num_tokens, uint32_t num_cols) {
  for_row_chunks(num_threads_, num_tokens, kRowChunk, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      kernels_->quantize_act_q8(src + static_cast<size_t>(t) * num_cols, dst + static_cast<size_t>(t) * num_cols / 32,
                                num_cols);
  });
}

void CpuForward::norm_and_quantize(const std::vector<float>& weight, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const uint32_t D = hp.hidden_dim;
  for_row_chunks(num_threads_, num_tokens, kRowChunk, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      ref::rms_norm(&x_[static_cast<size_t>(t) * D], weight.data(), &xb_[static_cast<size_t>(t) * D], D, hp.rms_eps);
      kernels_->quantize_act_q8(&xb_[static_cast<size_t>(t) * D], &xq_[static_cast<size_t>(t) * D / 32], D);
    }
  });
}

int64_t MatChunks::num_chunks() const { return guided ? num_lanes * per_lane : (total + grain - 1) / grain; }

int64_t MatChunks::begin(int64_t chunk_idx) const {
  if (!guided) return std::min(total, chunk_idx * grain);
  if (chunk_idx >= num_chunks()) return total;
  const int64_t lane = chunk_idx / per_lane, k = chunk_idx % per_lane;
  const int64_t lo = total / 16 * lane / num_lanes * 16, hi = total / 16 * (lane + 1) / num_lanes * 16;
  if (k == 0) return lo;
  // Rows left in the lane from its chunk k on: half as many per chunk, in whole 16-row groups, at least 16.
  const int64_t n = hi - lo;
  const int64_t left = std::min(n, std::max<int64_t>(16, (n >> k) / 16 * 16));
  return hi - left;
}

MatChunks mat_chunks(int64_t total, int num_lanes, bool batched) {
  MatChunks c;
  c.total = total;
  c.num_lanes = std::max(1, num_lanes);
  if (batched) {
    c.grain = std::max<int64_t>(16, total / (32 * static_cast<int64_t>(c.num_lanes)) / 16 * 16);
    return c;
  }
  c.guided = true;
  const int64_t lane_rows = (total / 16 + c.num_lanes - 1) / c.num_lanes * 16;  // the largest lane's rows
  c.per_lane = 1;  // the last chunk, ⌊(lane_rows >> (per_lane − 1)) / 16⌋ · 16 rows, at most kMatChunkMinRows
  while ((lane_rows >> (c.per_lane - 1)) / 16 * 16 > kMatChunkMinRows) ++c.per_lane;
  return c;
}

void run_mat_jobs(const cpu::KernelTable& kernels, std::span<const CpuForward::MatJob> jobs, int num_threads,
                  std::span<int64_t> row_begin, const profiler::TraceWorkInfo& trace) {
  // Every job starts at a multiple of 16 (its rows padded to one), so the chunks below hold whole 16-row groups of
  // every job: the R16 kernels' contract, whatever the jobs before.
  row_begin[0] = 0;
  for (size_t j = 0; j < jobs.size(); ++j)
    row_begin[j + 1] = row_begin[j] + (static_cast<int64_t>(jobs[j].w->num_rows) + 15) / 16 * 16;
  const int64_t total = row_begin[jobs.size()];
  int64_t max_tokens = 1;
  for (const CpuForward::MatJob& job : jobs) max_tokens = std::max(max_tokens, job.num_tokens);
  const MatChunks chunks = mat_chunks(total, num_threads, max_tokens >= 16);
  const int64_t* begin = row_begin.data();
  const size_t num_jobs = jobs.size();
  const bool expert_jobs = trace.category == profiler::TraceCategory::kExpert;
  run_chunks(num_threads, chunks.num_chunks(), profiler::trace_enabled() ? &trace : nullptr,
             [&](int64_t chunk, profiler::TraceWorkLane& lane) {
               int64_t i = chunks.begin(chunk);
               const int64_t chunk_end = chunks.begin(chunk + 1);
               size_t j = static_cast<size_t>(std::upper_bound(begin, begin + num_jobs + 1, i) - begin) - 1;
               for (; i < chunk_end; ++j) {
                 const int64_t r0 = i - begin[j];
                 const auto num_rows = static_cast<int64_t>(jobs[j].w->num_rows);
                 const int64_t r1 = std::min(chunk_end - begin[j], num_rows);
                 if (r1 <= r0) {  // a job without rows, or the padding past its last row
                   i = begin[j + 1];
                   continue;
                 }
                 // One span per lane and expert (gate and up together), or per lane for the other matrices.
                 const auto expert = expert_jobs ? static_cast<int64_t>(jobs[j].expert_idx) : -1;
                 lane.piece(static_cast<uint32_t>(expert + 1), expert, r1 - r0,
                            (r1 - r0) * static_cast<int64_t>(jobs[j].w->row_bytes));
                 run_job_rows(kernels, jobs[j], r0, r1);
                 i = r1 == num_rows ? begin[j + 1] : begin[j] + r1;
               }
             });
}

void CpuForward::run_jobs(std::span<const MatJob> jobs, const profiler::TraceWorkInfo& trace) {
  run_mat_jobs(*kernels_, jobs, num_threads_, job_row_begin_, trace);
}

void CpuForward::run_expert_jobs(uint32_t l, std::span<const MatJob> jobs, const profiler::TraceWorkInfo& trace) {
  const size_t num_nodes = node_arenas_.size();
  if (num_nodes <= 1) return run_jobs(jobs, trace);
  // Group the jobs by node (counting sort into node_jobs_).
  const size_t E = model_->hparams.num_experts;
  const auto node_of = [&](const MatJob& job) { return expert_node_[l * E + job.expert_idx]; };
  std::fill(node_job_begin_.begin(), node_job_begin_.end(), size_t{0});
  for (const MatJob& job : jobs) ++node_job_begin_[node_of(job) + 1u];
  for (size_t n = 0; n < num_nodes; ++n) node_job_begin_[n + 1] += node_job_begin_[n];
  std::copy(node_job_begin_.begin(), node_job_begin_.end() - 1, node_job_next_.begin());
  for (const MatJob& job : jobs) node_jobs_[node_job_next_[node_of(job)]++] = job;
  const size_t stride = jobs_.size() + 1;
  const auto run_node = [&](size_t n) {
    const std::span<const MatJob> mine(node_jobs_.data() + node_job_begin_[n],
                                       node_job_begin_[n + 1] - node_job_begin_[n]);
    if (!mine.empty())
      run_mat_jobs(*kernels_, mine, node_arenas_[n]->max_concurrency(),
                   {&node_row_begin_[n * stride], mine.size() + 1}, trace);
  };
  // Nodes 1.. get their jobs through a task_group in their arena (their workers pick them up); this thread runs
  // node 0's in its own arena meanwhile, then waits for the others.
  for (size_t n = 1; n < num_nodes; ++n)
    if (node_job_begin_[n + 1] > node_job_begin_[n])
      node_arenas_[n]->execute([&, n] { node_groups_[n]->run([&run_node, n] { run_node(n); }); });
  run_node(0);  // this thread is in node 0's arena
  for (size_t n = 1; n < num_nodes; ++n)
    if (node_job_begin_[n + 1] > node_job_begin_[n]) node_arenas_[n]->execute([&, n] { node_groups_[n]->wait(); });
}

Expected<CpuForward::Sequence> CpuForward::create_sequence() const {
  auto kv = KvCache::create(model_->hparams, own_.kv.context_length(), own_.kv.k_type(), own_.kv.v_type(),
                            kv_extra_slots_);
  if (!kv) return kv.error();
  return Sequence{std::move(*kv)};
}

uint32_t CpuForward::max_group_tokens() const {
  return std::min(static_cast<uint32_t>(cpu::kGemmMatchesGemvBelowTokens - 1), max_batch_);
}

Status CpuForward::truncate_sequence(Sequence& seq, uint32_t target) const {
  if (target > seq.num_positions)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot truncate to {} positions: only {} are processed", target, seq.num_positions));
  // Measured from the furthest position ever written, not the current one: after truncate → shorter write, the
  // ring slots of the discarded positions still hold keys that overwrote older ones.
  seq.furthest_written = std::max(seq.furthest_written, seq.num_positions);
  if (seq.furthest_written - target > rollback_slots_)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("cannot go back to {} positions: {} were written, and the KV ring keeps {} spare "
                                  "slots (rollback_slots)",
                                  target, seq.furthest_written, rollback_slots_));
  seq.num_positions = target;
  return {};
}

Status CpuForward::append_repeated_positions(uint32_t num_positions) {
  Sequence& seq = own_;
  const uint32_t context = seq.kv.context_length();
  if (seq.num_positions == 0)
    return make_error(ErrorCode::kInvalidArgument, "append_repeated_positions: no position is cached yet to repeat");
  if (num_positions > context - seq.num_positions)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("append_repeated_positions: {} + {} positions exceed the context of {}",
                                  seq.num_positions, num_positions, context));
  const ModelHparams& hp = model_->hparams;
  uint32_t period = seq.num_positions;
  for (uint32_t l = 0; l < hp.num_layers; ++l)
    if (hp.is_sliding(l)) period = std::min(period, hp.sliding_window);
  // A sliding layer's ring holds its last capacity ≥ sliding_window ≥ period positions, so p − period is still
  // there when p is written (or is p's own slot, leaving the window).
  const uint32_t end = seq.num_positions + num_positions;
  for (uint32_t p = seq.num_positions; p < end; ++p)
    for (uint32_t l = 0; l < hp.num_layers; ++l) seq.kv.copy_position(l, p - period, p);
  seq.num_positions = end;
  seq.furthest_written = std::max(seq.furthest_written, end);
  return {};
}

Status CpuForward::forward(int32_t token_id, std::span<float> logits_out) {
  const int32_t one[] = {token_id};
  return forward_batch(one, logits_out);
}

Status CpuForward::forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) {
  return forward_sequence(own_, token_ids, last_logits);
}

Status CpuForward::check_step(const Sequence& seq, std::span<const int32_t> token_ids,
                              std::span<float> last_logits) const {
  const ModelHparams& hp = model_->hparams;
  if (static_cast<uint64_t>(seq.num_positions) + token_ids.size() > seq.kv.context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} tokens at position {} do not fit: the context is full ({} positions)",
                                  token_ids.size(), seq.num_positions, seq.kv.context_length()));
  for (size_t i = 0; i < token_ids.size(); ++i)
    if (token_ids[i] < 0 || static_cast<uint32_t>(token_ids[i]) >= hp.vocab_size)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("token id {} is out of range (vocabulary has {} tokens)", token_ids[i],
                                    hp.vocab_size));
  if (!last_logits.empty() && last_logits.size() != hp.vocab_size)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("logits buffer has {} floats, expected {}", last_logits.size(), hp.vocab_size));
  return {};
}

Status CpuForward::forward_sequence(Sequence& seq, std::span<const int32_t> token_ids, std::span<float> last_logits) {
  HETMOE_RETURN_IF_ERROR(check_step(seq, token_ids, last_logits));
  const ModelHparams& hp = model_->hparams;
  arena_->execute([&] {
    for (size_t start = 0; start < token_ids.size(); start += max_batch_) {
      const auto n = static_cast<uint32_t>(std::min<size_t>(max_batch_, token_ids.size() - start));
      const bool last = start + n == token_ids.size();
      for (uint32_t t = 0; t < n; ++t) {
        ref::dequantize_row(model_->token_embd.type,
                            model_->token_embd.row(static_cast<uint64_t>(token_ids[start + t])),
                            &x_[static_cast<size_t>(t) * hp.hidden_dim], hp.hidden_dim);
        token_sequence_[t] = &seq;
        token_pos_[t] = seq.num_positions + t;
        token_logits_[t] = last && t == n - 1 && !last_logits.empty() ? last_logits.data() : nullptr;
      }
      run_batch(n, n == 1 ? "decode" : "prefill");
    }
  });
  return {};
}

Status CpuForward::forward_group(std::span<const GroupToken> tokens) {
  if (tokens.empty() || tokens.size() > max_group_tokens())
    return make_error(ErrorCode::kInvalidArgument, fmt::format("a decode group of {} tokens (expected 1..{})",
                                                               tokens.size(), max_group_tokens()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!tokens[i].sequence)
      return make_error(ErrorCode::kInvalidArgument, fmt::format("decode group token {} has no sequence", i));
    for (size_t j = 0; j < i; ++j)
      if (tokens[j].sequence == tokens[i].sequence)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("decode group tokens {} and {} belong to the same sequence", j, i));
    HETMOE_RETURN_IF_ERROR(check_step(*tokens[i].sequence, {&tokens[i].token_id, 1}, tokens[i].logits));
  }
  const ModelHparams& hp = model_->hparams;
  arena_->execute([&] {
    for (size_t t = 0; t < tokens.size(); ++t) {
      ref::dequantize_row(model_->token_embd.type, model_->token_embd.row(static_cast<uint64_t>(tokens[t].token_id)),
                          &x_[t * hp.hidden_dim], hp.hidden_dim);
      token_sequence_[t] = tokens[t].sequence;
      token_pos_[t] = tokens[t].sequence->num_positions;
      token_logits_[t] = tokens[t].logits.empty() ? nullptr : tokens[t].logits.data();
    }
    run_batch(static_cast<uint32_t>(tokens.size()), "decode");
  });
  return {};
}

void CpuForward::run_batch(uint32_t num_tokens, const char* step_name) {
  const ModelHparams& hp = model_->hparams;
  profiler::TraceSpan step(profiler::TraceCategory::kStep, step_name,
                           {{"position", token_pos_[0]}, {"num_tokens", num_tokens}});
  const ref::RopeYarnParams rope = rope_params(hp);
  for (uint32_t t = 0; t < num_tokens; ++t)
    ref::rope_yarn_cos_sin(rope, token_pos_[t], &rope_cos_[t * hp.head_dim / 2], &rope_sin_[t * hp.head_dim / 2]);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    attention_layer(l, num_tokens);
    moe_layer(l, num_tokens);
  }
  output_layer(num_tokens);
  // Every selected expert runs on the CPU in this pass.
  profiler::trace_counter(profiler::kTraceCounterExpertHitsCpu,
                          static_cast<double>(num_tokens) * hp.num_experts_used * hp.num_layers);
  for (uint32_t t = 0; t < num_tokens; ++t) ++token_sequence_[t]->num_positions;
}

void CpuForward::output_layer(uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const uint32_t D = hp.hidden_dim;
  // The tokens that want logits, normed into consecutive rows of xb_ (prefill: the last one; a group: each one).
  uint32_t num_rows = 0;
  for (uint32_t t = 0; t < num_tokens; ++t)
    if (token_logits_[t])
      ref::rms_norm(&x_[static_cast<size_t>(t) * D], model_->output_norm.data(),
                    &xb_[static_cast<size_t>(num_rows++) * D], D, hp.rms_eps);
  if (num_rows == 0) return;
  profiler::TraceSpan op(profiler::TraceCategory::kOp, "output");
  quantize_rows(xb_.data(), xq_.data(), num_rows, D);
  MatJob job;
  job.w = &model_->output;
  job.x_f32 = xb_.data();
  job.x_q8 = xq_.data();
  job.num_tokens = num_rows;
  // One row: straight into its buffer (the GEMV); several (at most max_group_tokens(), so the GEMM gives each the
  // GEMV's bits): into group_logits_, then copied out.
  job.y = num_rows == 1 ? nullptr : group_logits_.data();
  job.y_stride = hp.vocab_size;
  for (uint32_t t = 0; t < num_tokens && num_rows == 1; ++t)
    if (token_logits_[t]) job.y = token_logits_[t];
  run_jobs({&job, 1}, {.name = "output"});
  if (num_rows == 1) return;
  uint32_t row = 0;
  for (uint32_t t = 0; t < num_tokens; ++t)
    if (token_logits_[t])
      std::memcpy(token_logits_[t], &group_logits_[static_cast<size_t>(row++) * hp.vocab_size],
                  hp.vocab_size * sizeof(float));
}

void CpuForward::attention_layer(uint32_t l, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];
  const uint32_t D = hp.hidden_dim, Q = hp.q_dim(), KV = hp.kv_dim(), HD = hp.head_dim;
  const uint32_t qkv_stride = Q + 2 * KV;
  const auto layer_arg = static_cast<int32_t>(l);
  profiler::TraceSpan block(profiler::TraceCategory::kLayer, "attention block", {{"layer", l}});
  profiler::TraceSpan op(profiler::TraceCategory::kOp, "qkv", {{"layer", l}});

  // 1. RMSNorm, quantize.
  norm_and_quantize(w.attn_norm, num_tokens);

  // 2. q | k | v projections with biases, one parallel region.
  const auto job_for = [&](const WeightView& m, const std::vector<float>& bias, uint32_t y_offset) {
    MatJob job;
    job.w = &m;
    job.x_f32 = xb_.data();
    job.x_q8 = xq_.data();
    job.num_tokens = num_tokens;
    job.y = qkv_.data() + y_offset;
    job.y_stride = qkv_stride;
    job.bias = bias.data();
    return job;
  };
  jobs_[0] = job_for(w.wq, w.bq, 0);
  jobs_[1] = job_for(w.wk, w.bk, Q);
  jobs_[2] = job_for(w.wv, w.bv, Q + KV);
  run_jobs({jobs_.data(), 3}, {.name = "qkv", .layer_idx = layer_arg});

  // 3. RoPE on q and k, then store K and V of every token of the batch.
  op.next("rope");
  // The tokens are independent, split over the workers for a batch (pp512: ~1 ms per layer, mostly the KV stores'
  // 16 rows per token). Their KV slots are distinct: a sliding ring has a slot for every token of a batch
  // (extra_sliding_slots), a full layer one per position.
  for_row_chunks(num_threads_, num_tokens, kRowChunk, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* q = &qkv_[static_cast<size_t>(t) * qkv_stride];
      const float* c = &rope_cos_[t * HD / 2];
      const float* s = &rope_sin_[t * HD / 2];
      for (uint32_t h = 0; h < hp.num_heads; ++h) kernels_->rope_neox(q + h * HD, static_cast<int32_t>(HD), c, s);
      for (uint32_t g = 0; g < hp.num_kv_heads; ++g)
        kernels_->rope_neox(q + Q + g * HD, static_cast<int32_t>(HD), c, s);
      token_sequence_[t]->kv.store(l, token_pos_[t], q + Q, q + Q + KV, *kernels_);
    }
  });

  // 4. Attention with sinks, one task per (tile, KV head): a tile is up to kAttentionTileTokens consecutive tokens of
  // one sequence (prefill) or one token (decode), whose query heads of the KV head share every K/V row converted
  // (attention_cpu.h: attention_tile).
  op.next("attention");
  const profiler::TraceWorkInfo attention_trace{.name = "attention", .layer_idx = layer_arg};
  const uint32_t group = hp.num_heads / hp.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  // Every sequence's cache has the same types and context.
  const KvTileKernels tile_kernels =
      kv_tile_kernels(*kernels_, own_.kv.k_type(), own_.kv.v_type(), attention_bf16_);
  const uint64_t kv_row_bytes = own_.kv.k_stride_bytes() + own_.kv.v_stride_bytes();
  uint32_t num_tiles = 0;
  for (uint32_t t = 0; t < num_tokens; ++t)
    if (t == 0 || token_sequence_[t] != token_sequence_[t - 1] ||
        t - tile_begin_[num_tiles - 1] == kAttentionTileTokens)
      tile_begin_[num_tiles++] = t;
  tile_begin_[num_tiles] = num_tokens;
  // The key span of a tile: from its tokens' first visible key to its last token's own position.
  const auto tile_span = [&](uint32_t tile_idx, uint32_t* span_lo, uint32_t* span_hi) {
    *span_lo = UINT32_MAX;
    *span_hi = 0;
    for (uint32_t t = tile_begin_[tile_idx]; t < tile_begin_[tile_idx + 1]; ++t) {
      *span_lo = std::min(*span_lo, token_sequence_[t]->kv.first_visible_position(l, token_pos_[t]));
      *span_hi = std::max(*span_hi, token_pos_[t] + 1);
    }
  };
  const uint32_t num_tasks = num_tiles * hp.num_kv_heads;
  // Few tasks and many keys (decode at depth): split each task's key span into chunks over the threads and merge
  // (flash-decoding, attention_cpu.h), by the tile with the fewest keys.
  uint32_t min_num_keys = UINT32_MAX;
  for (uint32_t i = 0; i < num_tiles; ++i) {
    uint32_t lo = 0, hi = 0;
    tile_span(i, &lo, &hi);
    min_num_keys = std::min(min_num_keys, hi - lo);
  }
  const uint32_t num_chunks = attention_num_chunks(num_tasks, min_num_keys, num_threads_);
  const size_t part_floats = tile_scratch_[0].part_floats();
  if (num_chunks > 1) attn_chunks_.resize(static_cast<size_t>(num_tasks) * num_chunks * part_floats);
  run_chunks(num_threads_, static_cast<int64_t>(num_tasks) * num_chunks,
             profiler::trace_enabled() ? &attention_trace : nullptr,
             [&](int64_t chunk_task, profiler::TraceWorkLane& lane) {
               const auto task = static_cast<uint32_t>(chunk_task / num_chunks);
               const auto c = static_cast<uint32_t>(chunk_task % num_chunks);
               const uint32_t tile_idx = task / hp.num_kv_heads, g = task % hp.num_kv_heads;
               const uint32_t t0 = tile_begin_[tile_idx], num_tile_tokens = tile_begin_[tile_idx + 1] - t0;
               // The tile's own sequence's KV cache, each token at its own position there.
               const KvCache& kv = token_sequence_[t0]->kv;
               std::array<uint32_t, kAttentionTileTokens> key_lo{}, key_hi{};
               for (uint32_t i = 0; i < num_tile_tokens; ++i) {
                 key_lo[i] = kv.first_visible_position(l, token_pos_[t0 + i]);
                 key_hi[i] = token_pos_[t0 + i] + 1;
               }
               uint32_t lo = 0, hi = 0;
               tile_span(tile_idx, &lo, &hi);
               const uint32_t begin = lo + static_cast<uint32_t>(static_cast<uint64_t>(hi - lo) * c / num_chunks);
               const uint32_t end = lo + static_cast<uint32_t>(static_cast<uint64_t>(hi - lo) * (c + 1) / num_chunks);
               lane.piece(0, -1, 1, static_cast<int64_t>((end - begin) * kv_row_bytes));  // K and V rows read
               const int slot = std::max(0, tbb::this_task_arena::current_thread_index());
               AttentionTileScratch& scratch = tile_scratch_[static_cast<size_t>(slot)];
               AttentionTile tile;
               tile.q = &qkv_[static_cast<size_t>(t0) * qkv_stride + static_cast<size_t>(g) * group * HD];
               tile.q_token_stride = qkv_stride;
               tile.num_tokens = num_tile_tokens;
               tile.key_lo = key_lo.data();
               tile.key_hi = key_hi.data();
               tile.scale = scale;
               attention_tile(*kernels_, tile_kernels, kv, l, g, tile, group, begin, end, scratch);
               float* out = &attn_out_[static_cast<size_t>(t0) * Q + static_cast<size_t>(g) * group * HD];
               if (num_chunks == 1)
                 attention_tile_combine(1, scratch.part(), part_floats, scratch.max_rows(), num_tile_tokens * group,
                                        group, HD, &w.sinks[g * group], out, Q);
               else
                 std::memcpy(&attn_chunks_[(static_cast<size_t>(task) * num_chunks + c) * part_floats], scratch.part(),
                             part_floats * sizeof(float));
             });
  if (num_chunks > 1) {
    for (uint32_t task = 0; task < num_tasks; ++task) {
      const uint32_t tile_idx = task / hp.num_kv_heads, g = task % hp.num_kv_heads;
      const uint32_t t0 = tile_begin_[tile_idx], num_tile_tokens = tile_begin_[tile_idx + 1] - t0;
      attention_tile_combine(num_chunks, &attn_chunks_[static_cast<size_t>(task) * num_chunks * part_floats],
                             part_floats, tile_scratch_[0].max_rows(), num_tile_tokens * group, group, HD,
                             &w.sinks[g * group],
                             &attn_out_[static_cast<size_t>(t0) * Q + static_cast<size_t>(g) * group * HD], Q);
    }
  }

  // 5. Output projection with bias, residual add.
  op.next("o_proj");
  quantize_rows(attn_out_.data(), attn_q8_.data(), num_tokens, Q);
  MatJob job;
  job.w = &w.wo;
  job.x_f32 = attn_out_.data();
  job.x_q8 = attn_q8_.data();
  job.num_tokens = num_tokens;
  job.y = proj_.data();
  job.y_stride = D;
  job.bias = w.bo.data();
  run_jobs({&job, 1}, {.name = "o_proj", .layer_idx = layer_arg});
  for_row_chunks(num_threads_, num_tokens, kRowChunk, [&](int64_t t0, int64_t t1) {
    for (size_t i = static_cast<size_t>(t0) * D; i < static_cast<size_t>(t1) * D; ++i) x_[i] += proj_[i];
  });
}

void CpuForward::moe_layer(uint32_t l, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];
  const uint32_t D = hp.hidden_dim, F = hp.expert_ffn_dim, E = hp.num_experts, K = hp.num_experts_used;
  constexpr uint32_t blk = cpu::kActBlockElems;
  const auto layer_arg = static_cast<int32_t>(l);
  profiler::TraceFlowSet expert_flows;  // one flow per CPU expert span → the combine step that waits for them
  profiler::TraceSpan block(profiler::TraceCategory::kLayer, "moe block", {{"layer", l}});
  profiler::TraceSpan op(profiler::TraceCategory::kOp, "router", {{"layer", l}});

  // 1. Post-attention RMSNorm, quantize; router logits for every token.
  norm_and_quantize(w.post_attn_norm, num_tokens);
  MatJob router_job;
  router_job.w = &w.router;
  router_job.x_f32 = xb_.data();
  router_job.x_q8 = xq_.data();
  router_job.num_tokens = num_tokens;
  router_job.y = router_.data();
  router_job.y_stride = E;
  router_job.bias = w.router_bias.data();
  run_jobs({&router_job, 1}, {.name = "router", .layer_idx = layer_arg});

  // 2. Top-k by raw logit (ties: lower expert index first), softmax over the k.
  for (uint32_t t = 0; t < num_tokens; ++t) {
    const float* r = &router_[static_cast<size_t>(t) * E];
    int32_t* c = &chosen_[static_cast<size_t>(t) * K];
    float* cw = &chosen_w_[static_cast<size_t>(t) * K];
    for (uint32_t k = 0; k < K; ++k) {
      int32_t best = -1;
      for (uint32_t e = 0; e < E; ++e) {
        if (std::find(c, c + k, static_cast<int32_t>(e)) != c + k) continue;
        if (best < 0 || r[e] > r[best]) best = static_cast<int32_t>(e);
      }
      c[k] = best;
      cw[k] = r[best];
    }
    ref::softmax(cw, K);
    if (expert_counts_)  // atomic: the server's /metrics reads them meanwhile
      for (uint32_t k = 0; k < K; ++k)
        std::atomic_ref<uint64_t>(expert_counts_[static_cast<size_t>(l) * E + static_cast<uint32_t>(c[k])])
            .fetch_add(1, std::memory_order_relaxed);
  }

  // 3. Group the batch's (token, expert) pairs by expert and gather each group's inputs.
  op.next("gather");
  std::fill(group_begin_.begin(), group_begin_.end(), 0u);
  uint32_t num_groups = 0;
  for (uint32_t e = 0; e < E; ++e) {
    uint32_t count = 0;
    for (uint32_t i = 0; i < num_tokens * K; ++i) count += chosen_[i] == static_cast<int32_t>(e);
    if (count == 0) continue;
    expert_of_group_[num_groups] = static_cast<int32_t>(e);
    group_begin_[num_groups + 1] = group_begin_[num_groups] + count;
    ++num_groups;
  }
  const bool quantized_experts = uses_q8_activations(w.gate_exps.type);
  // Rows in expert order; token t's K rows in token_rows_[t·K ..] in ascending row order (the order the combine adds
  // them in).
  std::fill(token_num_rows_.begin(), token_num_rows_.begin() + num_tokens, 0u);
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    uint32_t row = group_begin_[gi];
    for (uint32_t i = 0; i < num_tokens * K; ++i) {
      if (chosen_[i] != expert_of_group_[gi]) continue;
      const uint32_t t = i / K;
      gathered_token_[row] = t;
      gathered_weight_[row] = chosen_w_[i];
      token_rows_[static_cast<size_t>(t) * K + token_num_rows_[t]++] = row;
      ++row;
    }
  }
  for_row_chunks(num_threads_, group_begin_[num_groups], kRowChunk, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const size_t t = gathered_token_[row];
      if (quantized_experts)
        std::memcpy(&gathered_x_[static_cast<size_t>(row) * D / blk], &xq_[t * D / blk],
                    D / blk * sizeof(cpu::ActQ8Block));
      else
        std::memcpy(&gathered_xf_[static_cast<size_t>(row) * D], &xb_[t * D], D * sizeof(float));
    }
  });

  // 4. gate and up projections of every group, one parallel region.
  op.next("experts");
  uint32_t num_jobs = 0;
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    const auto e = static_cast<uint64_t>(expert_of_group_[gi]);
    const uint32_t row = group_begin_[gi];
    for (int which = 0; which < 2; ++which) {
      MatJob& job = jobs_[num_jobs++];
      job = MatJob{};
      job.w = which == 0 ? &w.gate_exps : &w.up_exps;
      job.expert_idx = e;
      job.x_q8 = &gathered_x_[static_cast<size_t>(row) * D / blk];
      job.x_f32 = &gathered_xf_[static_cast<size_t>(row) * D];
      job.num_tokens = group_begin_[gi + 1] - row;
      job.y = (which == 0 ? gate_.data() : up_.data()) + static_cast<size_t>(row) * F;
      job.y_stride = F;
      job.bias = (which == 0 ? w.gate_bias.data() : w.up_bias.data()) + e * F;
    }
  }
  run_expert_jobs(l, {jobs_.data(), num_jobs},
           {.category = profiler::TraceCategory::kExpert, .name = "expert gate_up", .layer_idx = layer_arg});

  // 5. SwiGLU-OAI, quantize, down projections.
  const uint32_t num_rows = group_begin_[num_groups];
  const bool quantized_down = uses_q8_activations(w.down_exps.type);
  for_row_chunks(num_threads_, num_rows, kRowChunk, [&](int64_t r0, int64_t r1) {
    float* g = gate_.data() + static_cast<size_t>(r0) * F;
    kernels_->swiglu_oai(g, up_.data() + static_cast<size_t>(r0) * F, g, (r1 - r0) * F, ref::kSwigluAlpha,
                         ref::kSwigluLimit);
    for (int64_t r = r0; r < r1 && quantized_down; ++r)
      kernels_->quantize_act_q8(gate_.data() + static_cast<size_t>(r) * F, &act_q8_[static_cast<size_t>(r) * F / blk],
                                F);
  });
  num_jobs = 0;
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    const auto e = static_cast<uint64_t>(expert_of_group_[gi]);
    const uint32_t row = group_begin_[gi];
    MatJob& job = jobs_[num_jobs++];
    job = MatJob{};
    job.w = &w.down_exps;
    job.expert_idx = e;
    job.x_q8 = &act_q8_[static_cast<size_t>(row) * F / blk];
    job.x_f32 = &gate_[static_cast<size_t>(row) * F];
    job.num_tokens = group_begin_[gi + 1] - row;
    job.y = down_.data() + static_cast<size_t>(row) * D;
    job.y_stride = D;
    job.bias = w.down_bias.data() + e * D;
  }
  run_expert_jobs(l, {jobs_.data(), num_jobs}, {.category = profiler::TraceCategory::kExpert, .name = "expert down",
                                      .layer_idx = layer_arg, .flows = &expert_flows});

  // 6. Weighted sum into the residual stream.
  op.next("combine");
  expert_flows.end_all();
  // Per token over its rows in ascending row order (as one pass over the rows adds them), tokens split over the
  // workers for a batch.
  for_row_chunks(num_threads_, num_tokens, kRowChunk, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* x = &x_[static_cast<size_t>(t) * D];
      for (uint32_t k = 0; k < K; ++k) {
        const uint32_t row = token_rows_[static_cast<size_t>(t) * K + k];
        const float* y = &down_[static_cast<size_t>(row) * D];
        const float weight = gathered_weight_[row];
        for (uint32_t i = 0; i < D; ++i) x[i] += weight * y[i];
      }
    }
  });
}

}  // namespace hetmoe
