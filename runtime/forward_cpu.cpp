#include "runtime/forward_cpu.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "cpu_kernels/reference.h"

namespace hetmoe {
namespace {

bool uses_q8_activations(TensorType type) { return type == TensorType::kMXFP4 || type == TensorType::kQ8_0; }

/// Runs rows [r0, r1) of one job (weights of any supported type; one token → GEMV, several → GEMM).
void run_job_rows(const cpu::KernelTable& k, const CpuForward::MatJob& job, int64_t r0, int64_t r1) {
  const WeightView& w = *job.w;
  const uint8_t* base = w.row(0, job.expert_idx);
  const auto num_cols = static_cast<int64_t>(w.num_cols);
  if (job.num_tokens == 1) {
    float* y = job.y + r0;
    switch (w.type) {
      case TensorType::kMXFP4: k.gemv_mxfp4(base, w.row_bytes, r0, r1, job.x_q8, num_cols, y); break;
      case TensorType::kQ8_0: k.gemv_q8_0(base, w.row_bytes, r0, r1, job.x_q8, num_cols, y); break;
      case TensorType::kF32: k.gemv_f32(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
      case TensorType::kF16: k.gemv_f16(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
      case TensorType::kBF16: k.gemv_bf16(base, w.row_bytes, r0, r1, job.x_f32, num_cols, y); break;
    }
  } else {
    switch (w.type) {
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
  auto kv = KvCache::create(hp, options.context_length, options.kv_type,
                            options.max_batch_tokens - 1 + options.rollback_slots);
  if (!kv) return kv.error();
  return std::unique_ptr<CpuForward>(new CpuForward(model, std::move(*kv), options, kernels));
}

CpuForward::CpuForward(const Model& model, KvCache kv, const CpuForwardOptions& options,
                       const cpu::KernelTable& kernels)
    : model_(&model), kv_(std::move(kv)), kernels_(&kernels) {
  const ModelHparams& hp = model.hparams;
  if (options.arena) {
    arena_ = options.arena;
    num_threads_ = arena_->max_concurrency();
  } else {
    num_threads_ = options.num_threads > 0 ? options.num_threads
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    own_arena_ = std::make_unique<tbb::task_arena>(num_threads_);
    arena_ = own_arena_.get();
  }
  max_batch_ = std::min(options.max_batch_tokens, kv_.context_length());
  rollback_slots_ = options.rollback_slots;
  const size_t B = max_batch_, D = hp.hidden_dim, Q = hp.q_dim(), KV = hp.kv_dim(), F = hp.expert_ffn_dim;
  const size_t E = hp.num_experts, K = hp.num_experts_used, G = hp.num_heads / hp.num_kv_heads;
  const size_t blk = cpu::kActBlockElems;
  x_.resize(B * D);
  xb_.resize(B * D);
  xq_.resize(B * D / blk);
  qkv_.resize(B * (Q + 2 * KV));
  attn_out_.resize(B * Q);
  attn_q8_.resize(B * Q / blk);
  proj_.resize(B * D);
  scores_.resize(static_cast<size_t>(num_threads_ + 1) * G * kv_.context_length());
  rope_cos_.resize(B * hp.head_dim / 2);
  rope_sin_.resize(B * hp.head_dim / 2);
  router_.resize(B * E);
  chosen_.resize(B * K);
  chosen_w_.resize(B * K);
  expert_of_group_.resize(E);
  group_begin_.resize(E + 1);
  gathered_token_.resize(B * K);
  gathered_weight_.resize(B * K);
  gathered_x_.resize(B * K * D / blk);
  gathered_xf_.resize(B * K * D);
  gate_.resize(B * K * F);
  up_.resize(B * K * F);
  act_q8_.resize(B * K * F / blk);
  down_.resize(B * K * D);
  jobs_.resize(3 * E + 3);
  job_row_begin_.resize(jobs_.size() + 1);
}

void CpuForward::quantize_rows(const float* src, cpu::ActQ8Block* dst, uint32_t num_tokens, uint32_t num_cols) {
  for (uint32_t t = 0; t < num_tokens; ++t)
    kernels_->quantize_act_q8(src + static_cast<size_t>(t) * num_cols, dst + static_cast<size_t>(t) * num_cols / 32,
                              num_cols);
}

void run_mat_jobs(const cpu::KernelTable& kernels, std::span<const CpuForward::MatJob> jobs, int num_threads,
                  std::span<int64_t> row_begin) {
  row_begin[0] = 0;
  for (size_t j = 0; j < jobs.size(); ++j)
    row_begin[j + 1] = row_begin[j] + static_cast<int64_t>(jobs[j].w->num_rows);
  const int64_t total = row_begin[jobs.size()];
  // About 8 chunks per thread, in multiples of 16 rows so the kernels' row unrolling stays whole.
  int64_t grain = total / (8 * static_cast<int64_t>(num_threads));
  grain = std::max<int64_t>(16, grain / 16 * 16);
  const int64_t* begin = row_begin.data();
  const size_t num_jobs = jobs.size();
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, total, static_cast<size_t>(grain)),
      [&](const tbb::blocked_range<int64_t>& range) {
        int64_t i = range.begin();
        size_t j = static_cast<size_t>(std::upper_bound(begin, begin + num_jobs + 1, i) - begin) - 1;
        while (i < range.end()) {
          const int64_t r0 = i - begin[j];
          const int64_t r1 = std::min(range.end(), begin[j + 1]) - begin[j];
          run_job_rows(kernels, jobs[j], r0, r1);
          i = begin[j] + r1;
          ++j;
        }
      },
      tbb::simple_partitioner());
}

void CpuForward::run_jobs(std::span<const MatJob> jobs) { run_mat_jobs(*kernels_, jobs, num_threads_, job_row_begin_); }

Status CpuForward::truncate(uint32_t target) {
  if (target > num_positions_)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("cannot truncate to {} positions: only {} are processed", target, num_positions_));
  if (num_positions_ - target > rollback_slots_)
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("cannot go back {} positions: the KV ring keeps {} spare slots (rollback_slots)",
                                  num_positions_ - target, rollback_slots_));
  num_positions_ = target;
  return {};
}

Status CpuForward::forward(int32_t token_id, std::span<float> logits_out) {
  const int32_t one[] = {token_id};
  return forward_batch(one, logits_out);
}

Status CpuForward::forward_batch(std::span<const int32_t> token_ids, std::span<float> last_logits) {
  const ModelHparams& hp = model_->hparams;
  if (static_cast<uint64_t>(num_positions_) + token_ids.size() > kv_.context_length())
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("{} tokens at position {} do not fit: the context is full ({} positions)",
                                  token_ids.size(), num_positions_, kv_.context_length()));
  for (size_t i = 0; i < token_ids.size(); ++i)
    if (token_ids[i] < 0 || static_cast<uint32_t>(token_ids[i]) >= hp.vocab_size)
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("token id {} is out of range (vocabulary has {} tokens)", token_ids[i],
                                    hp.vocab_size));
  if (!last_logits.empty() && last_logits.size() != hp.vocab_size)
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("logits buffer has {} floats, expected {}", last_logits.size(), hp.vocab_size));
  arena_->execute([&] {
    for (size_t start = 0; start < token_ids.size(); start += max_batch_) {
      const auto n = static_cast<uint32_t>(std::min<size_t>(max_batch_, token_ids.size() - start));
      for (uint32_t t = 0; t < n; ++t)
        ref::dequantize_row(model_->token_embd.type,
                            model_->token_embd.row(static_cast<uint64_t>(token_ids[start + t])),
                            &x_[static_cast<size_t>(t) * hp.hidden_dim], hp.hidden_dim);
      const bool last = start + n == token_ids.size();
      run_batch(n, last ? last_logits : std::span<float>());
    }
  });
  return {};
}

void CpuForward::run_batch(uint32_t num_tokens, std::span<float> last_logits) {
  const ModelHparams& hp = model_->hparams;
  const ref::RopeYarnParams rope = rope_params(hp);
  for (uint32_t t = 0; t < num_tokens; ++t)
    ref::rope_yarn_cos_sin(rope, num_positions_ + t, &rope_cos_[t * hp.head_dim / 2], &rope_sin_[t * hp.head_dim / 2]);
  for (uint32_t l = 0; l < hp.num_layers; ++l) {
    attention_layer(l, num_tokens);
    moe_layer(l, num_tokens);
  }
  if (!last_logits.empty()) {
    const float* x_last = &x_[static_cast<size_t>(num_tokens - 1) * hp.hidden_dim];
    ref::rms_norm(x_last, model_->output_norm.data(), xb_.data(), hp.hidden_dim, hp.rms_eps);
    quantize_rows(xb_.data(), xq_.data(), 1, hp.hidden_dim);
    MatJob job;
    job.w = &model_->output;
    job.x_f32 = xb_.data();
    job.x_q8 = xq_.data();
    job.y = last_logits.data();
    run_jobs({&job, 1});
  }
  num_positions_ += num_tokens;
}

void CpuForward::attention_layer(uint32_t l, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];
  const uint32_t D = hp.hidden_dim, Q = hp.q_dim(), KV = hp.kv_dim(), HD = hp.head_dim;
  const uint32_t qkv_stride = Q + 2 * KV;

  // 1. RMSNorm, quantize.
  for (uint32_t t = 0; t < num_tokens; ++t)
    ref::rms_norm(&x_[t * D], w.attn_norm.data(), &xb_[t * D], D, hp.rms_eps);
  quantize_rows(xb_.data(), xq_.data(), num_tokens, D);

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
  run_jobs({jobs_.data(), 3});

  // 3. RoPE on q and k, then store K and V of every token of the batch.
  for (uint32_t t = 0; t < num_tokens; ++t) {
    float* q = &qkv_[static_cast<size_t>(t) * qkv_stride];
    const float* c = &rope_cos_[t * HD / 2];
    const float* s = &rope_sin_[t * HD / 2];
    for (uint32_t h = 0; h < hp.num_heads; ++h) ref::rope_neox_apply(q + h * HD, static_cast<int32_t>(HD), c, s);
    for (uint32_t g = 0; g < hp.num_kv_heads; ++g) ref::rope_neox_apply(q + Q + g * HD, static_cast<int32_t>(HD), c, s);
    kv_.store(l, num_positions_ + t, q + Q, q + Q + KV);
  }

  // 4. Attention with sinks, one task per (token, KV head): the group's query heads share each K/V row read.
  const uint32_t group = hp.num_heads / hp.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  const bool f16 = kv_.type() == KvCacheType::kF16;
  const uint32_t ctx = kv_.context_length();
  tbb::parallel_for(uint32_t{0}, num_tokens * hp.num_kv_heads, [&](uint32_t task) {
    const uint32_t t = task / hp.num_kv_heads, g = task % hp.num_kv_heads;
    const uint32_t pos = num_positions_ + t;
    const uint32_t first = kv_.first_visible_position(l, pos);
    const uint32_t num_keys = pos - first + 1;
    const int slot = std::max(0, tbb::this_task_arena::current_thread_index());
    float* scores = &scores_[static_cast<size_t>(slot) * group * ctx];  // (group, num_keys)
    const float* q = &qkv_[static_cast<size_t>(t) * qkv_stride + static_cast<size_t>(g) * group * HD];
    float* out = &attn_out_[static_cast<size_t>(t) * Q + static_cast<size_t>(g) * group * HD];
    std::fill(out, out + group * HD, 0.0f);
    // Positions [first, pos] lie in at most two runs of consecutive ring slots (the ring may wrap once).
    const uint32_t capacity = kv_.capacity(l);
    const auto stride = static_cast<int64_t>(kv_.slot_stride_bytes());
    const auto for_each_run = [&](auto&& body) {
      for (uint32_t j = 0; j < num_keys;) {
        const uint32_t run = std::min(num_keys - j, capacity - (first + j) % capacity);
        body(j, run);
        j += run;
      }
    };
    for_each_run([&](uint32_t j, uint32_t run) {
      (f16 ? kernels_->attn_scores_f16 : kernels_->attn_scores_f32)(q, group, kv_.k_row(l, first + j, g), stride, run,
                                                                     HD, scale, scores + j, num_keys);
    });
    for (uint32_t h = 0; h < group; ++h)  // the sink is a raw logit, not scaled
      kernels_->softmax_with_sink(&scores[static_cast<size_t>(h) * num_keys], num_keys, w.sinks[g * group + h]);
    for_each_run([&](uint32_t j, uint32_t run) {
      (f16 ? kernels_->attn_values_f16 : kernels_->attn_values_f32)(scores + j, num_keys, group,
                                                                     kv_.v_row(l, first + j, g), stride, run, HD, out);
    });
  });

  // 5. Output projection with bias, residual add.
  quantize_rows(attn_out_.data(), attn_q8_.data(), num_tokens, Q);
  MatJob job;
  job.w = &w.wo;
  job.x_f32 = attn_out_.data();
  job.x_q8 = attn_q8_.data();
  job.num_tokens = num_tokens;
  job.y = proj_.data();
  job.y_stride = D;
  job.bias = w.bo.data();
  run_jobs({&job, 1});
  for (size_t i = 0; i < static_cast<size_t>(num_tokens) * D; ++i) x_[i] += proj_[i];
}

void CpuForward::moe_layer(uint32_t l, uint32_t num_tokens) {
  const ModelHparams& hp = model_->hparams;
  const LayerWeights& w = model_->layers[l];
  const uint32_t D = hp.hidden_dim, F = hp.expert_ffn_dim, E = hp.num_experts, K = hp.num_experts_used;
  constexpr uint32_t blk = cpu::kActBlockElems;

  // 1. Post-attention RMSNorm, quantize; router logits for every token.
  for (uint32_t t = 0; t < num_tokens; ++t)
    ref::rms_norm(&x_[t * D], w.post_attn_norm.data(), &xb_[t * D], D, hp.rms_eps);
  quantize_rows(xb_.data(), xq_.data(), num_tokens, D);
  MatJob router_job;
  router_job.w = &w.router;
  router_job.x_f32 = xb_.data();
  router_job.x_q8 = xq_.data();
  router_job.num_tokens = num_tokens;
  router_job.y = router_.data();
  router_job.y_stride = E;
  router_job.bias = w.router_bias.data();
  run_jobs({&router_job, 1});

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
  }

  // 3. Group the batch's (token, expert) pairs by expert and gather each group's inputs.
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
  for (uint32_t gi = 0; gi < num_groups; ++gi) {
    uint32_t row = group_begin_[gi];
    for (uint32_t i = 0; i < num_tokens * K; ++i) {
      if (chosen_[i] != expert_of_group_[gi]) continue;
      const uint32_t t = i / K;
      gathered_token_[row] = t;
      gathered_weight_[row] = chosen_w_[i];
      if (quantized_experts) {
        std::memcpy(&gathered_x_[static_cast<size_t>(row) * D / blk], &xq_[static_cast<size_t>(t) * D / blk],
                    D / blk * sizeof(cpu::ActQ8Block));
      } else {
        std::memcpy(&gathered_xf_[static_cast<size_t>(row) * D], &xb_[static_cast<size_t>(t) * D], D * sizeof(float));
      }
      ++row;
    }
  }

  // 4. gate and up projections of every group, one parallel region.
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
  run_jobs({jobs_.data(), num_jobs});

  // 5. SwiGLU-OAI, quantize, down projections.
  const uint32_t num_rows = group_begin_[num_groups];
  ref::swiglu_oai(gate_.data(), up_.data(), gate_.data(), static_cast<int64_t>(num_rows) * F);
  if (uses_q8_activations(w.down_exps.type)) quantize_rows(gate_.data(), act_q8_.data(), num_rows, F);
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
  run_jobs({jobs_.data(), num_jobs});

  // 6. Weighted sum into the residual stream.
  for (uint32_t row = 0; row < num_rows; ++row) {
    float* x = &x_[static_cast<size_t>(gathered_token_[row]) * D];
    const float* y = &down_[static_cast<size_t>(row) * D];
    const float weight = gathered_weight_[row];
    for (uint32_t i = 0; i < D; ++i) x[i] += weight * y[i];
  }
}

}  // namespace hetmoe
