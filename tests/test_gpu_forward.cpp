// The GPU forward pass (runtime/exec/forward_factory.h create_gpu_forward) against the fixture logits: GPU-only (every
// expert resident) and hybrid (half the experts on the CPU), with the foundation issue's agreement bar, with an f16
// and a quantized (q8_0 / q4_0) KV cache, the latter also against the CPU pass with the same cache; the device arena,
// pinned staging and the VRAM budget. Skips without a CUDA build or without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "gpu_kernels/cuda_device.h"
#include "runtime/backend/gpu_backend.h"
#include "runtime/exec/forward_factory.h"
#include "placement/static_plans.h"
#include "profiler/trace.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"
#include "tests/gpu_test_support.h"
#include "tests/logit_metrics.h"
#if HETMOE_HAVE_CUDA
#include "gpu_kernels/device_runtime.h"
#endif

namespace hetmoe {
namespace {

const std::string kData = HETMOE_TEST_DATA_DIR;

bool has_gpu() { return test::gpu_usable(); }

const Model& tiny() {
  static const Model m = std::move(*Model::load(kData + "/gpt-oss-tiny.gguf"));
  return m;
}

std::vector<float> decode_fixture(ForwardPass& f) {
  const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  const size_t vocab = tiny().hparams.vocab_size;
  std::vector<float> out(ids.size() * vocab);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto s = f.forward(ids[i], std::span<float>(&out[i * vocab], vocab));
    EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().to_string());
    if (!s) break;
  }
  return out;
}

/// The placement Plan with the k experts of each layer with the largest router bias on the GPU (8: all, 0: --cpu-moe).
placement::Plan gpu_plan(uint32_t k) {
  std::vector<std::vector<float>> bias;
  for (const LayerWeights& l : tiny().layers) bias.push_back(l.router_bias);
  auto plan = placement::static_gpu_experts_plan(tiny().hparams, bias, k, 256);
  EXPECT_TRUE(plan.has_value());
  return std::move(*plan);
}

/// --device gpu with the plan, a 256-token context and 2 CPU threads.
ForwardOptions gpu_options(const placement::Plan& plan) {
  ForwardOptions o;
  o.plan = &plan;
  o.device = ForwardOptions::Device::kGpu;
  o.context_length = 256;
  o.num_threads = 2;
  return o;
}

void expect_fixture_bar(ForwardOptions options, const char* what) {
  options.device = ForwardOptions::Device::kGpu;
  options.context_length = 256;
  options.num_threads = 2;
  std::vector<std::string> notes;
  auto f = create_forward(tiny(), options, &notes);
  ASSERT_TRUE(f.has_value()) << what << ": " << f.error().to_string();
  for (const auto& n : notes) std::printf("[ note ] %s\n", n.c_str());
  const auto ours = decode_fixture(**f);
  for (float x : ours) ASSERT_TRUE(std::isfinite(x));
  const auto reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
  const auto margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
  const auto a = test::agreement(reference, ours, 4106, margin);
  std::printf("[ agreement ] %s vs f32 reference: KL p50 %.3g, p99 (margin >= 0.15) %.3g, top-1 %.1f %%\n", what,
              a.p50_all, a.p99_confident, 100 * a.top1);
  EXPECT_LE(a.p50_all, 1e-3) << what;        // the foundation issue's bar (llama.cpp: 4.3e-4)
  EXPECT_LE(a.p99_confident, 5e-3) << what;  // the foundation issue's bar (llama.cpp: 2.6e-3)
}

TEST(GpuForward, GpuOnlyMeetsTheFixtureBar) {
  HETMOE_SKIP_WITHOUT_GPU();
  const placement::Plan plan = gpu_plan(8);
  ForwardOptions o;
  o.plan = &plan;
  expect_fixture_bar(o, "GPU-only");
}

TEST(GpuForward, HybridWithHalfTheExpertsOnTheCpuMeetsTheFixtureBar) {
  HETMOE_SKIP_WITHOUT_GPU();
  const placement::Plan plan = gpu_plan(4);
  ForwardOptions o;
  o.plan = &plan;
  expect_fixture_bar(o, "hybrid, 4 of 8 experts on the GPU");
}

TEST(GpuForward, CpuMoeMeetsTheFixtureBar) {
  HETMOE_SKIP_WITHOUT_GPU();
  const placement::Plan plan = gpu_plan(0);
  ForwardOptions o;
  o.plan = &plan;
  expect_fixture_bar(o, "GPU attention, --cpu-moe");
}

using test::nmse;

/// The logits at position 149 of the fixture's first 150 tokens from two passes made with `o`: one run with
/// forward() (steps of one token), one with forward_batch() (steps of 64, 64 and 22 tokens with max_batch_tokens 64).
std::pair<std::vector<float>, std::vector<float>> stepped_and_batched(const ForwardOptions& o) {
  const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  std::vector<float> a(4106), b(4106);
  auto step = create_forward(tiny(), o);
  auto batched = create_forward(tiny(), o);
  EXPECT_TRUE(step.has_value() && batched.has_value());
  if (!step || !batched) return {};
  for (size_t t = 0; t < 150; ++t)
    EXPECT_TRUE((*step)->forward(ids[t], t == 149 ? std::span<float>(a) : std::span<float>()).has_value());
  EXPECT_TRUE((*batched)->forward_batch(std::span<const int32_t>(ids).subspan(0, 150), b).has_value());
  return {a, b};
}

// Prefill in device steps (attention_prefill, grouped MoE) against token-by-token decoding on the same device.
TEST(GpuForward, BatchedPrefillMatchesTokenByTokenForGpuOnlyAndHybrid) {
  HETMOE_SKIP_WITHOUT_GPU();
  for (uint32_t k : {8u, 4u}) {
    const placement::Plan plan = gpu_plan(k);
    ForwardOptions o = gpu_options(plan);
    o.max_batch_tokens = 64;
    const auto [a, b] = stepped_and_batched(o);
    ASSERT_EQ(a.size(), 4106u);
    // NMSE: the same math in other kernels (tiled vs split-K attention, grouped vs per-token experts, and for the
    // 64-token steps the f16 cuBLAS GEMM projections, kPrefillGemmMinTokens = 32): summation order and the f16
    // rounding of weights and activations in the GEMM, unless a near-tie flips an expert choice.
    EXPECT_LT(nmse(a, b), 1e-4) << k << " experts per layer on the GPU";
  }
}

// --stats-out on the GPU pass: every layer counts top-k selections per token, from the ids the device copies back
// (with the router output where the layer has CPU experts, alone where all are resident), decode and prefill.
TEST(GpuForward, ExpertSelectionsAreCountedOnTheGpuPass) {
  HETMOE_SKIP_WITHOUT_GPU();
  const ModelHparams& hp = tiny().hparams;
  const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  for (uint32_t k : {8u, 4u}) {
    const placement::Plan plan = gpu_plan(k);
    std::vector<uint64_t> counts(static_cast<size_t>(hp.num_layers) * hp.num_experts, 0);
    ForwardOptions o = gpu_options(plan);
    o.expert_counts = counts.data();
    auto f = create_forward(tiny(), o);
    ASSERT_TRUE(f.has_value()) << f.error().to_string();
    ASSERT_TRUE((*f)->forward_batch(std::span<const int32_t>(ids).subspan(0, 40), {}).has_value());
    for (size_t t = 40; t < 48; ++t) ASSERT_TRUE((*f)->forward(ids[t], {}).has_value());
    for (uint32_t l = 0; l < hp.num_layers; ++l) {
      uint64_t sum = 0;
      for (uint32_t e = 0; e < hp.num_experts; ++e) sum += counts[l * hp.num_experts + e];
      EXPECT_EQ(sum, 48u * hp.num_experts_used) << "layer " << l << ", " << k << " experts on the GPU";
    }
  }
}

// While a trace records, the GPU pass writes spans on the tracks "gpu compute", "h2d copy" and "d2h copy", timed by
// CUDA events and mapped onto the host clock: they lie inside the host's step spans (a mapping error of the anchor
// would shift them out), and a VRAM counter sample.
TEST(GpuForward, TraceHasGpuComputeAndCopyTracksOnTheHostClock) {
  HETMOE_SKIP_WITHOUT_GPU();
  const placement::Plan plan = gpu_plan(4);
  ForwardOptions o = gpu_options(plan);
  auto f = create_forward(tiny(), o);
  ASSERT_TRUE(f.has_value()) << f.error().to_string();
  const std::string path = std::string(HETMOE_BINARY_DIR) + "/gpu_forward_trace_test.json";
  auto session = profiler::TraceSession::start(path);
  ASSERT_TRUE(session.has_value()) << session.error().to_string();
  const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  std::vector<float> logits(4106);
  for (size_t t = 0; t < 4; ++t) ASSERT_TRUE((*f)->forward(ids[t], logits).has_value());
  ASSERT_TRUE((*session)->finish().has_value());
  std::ifstream in(path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  std::map<int64_t, std::string> track_names;
  double step_begin = 1e300, step_end = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e.value("ph", "") == "M" && e.value("name", "") == "thread_name")
      track_names[e["tid"].get<int64_t>()] = e["args"]["name"].get<std::string>();
    if (e.value("cat", "") == "step" && e.value("ph", "") == "X") {
      step_begin = std::min(step_begin, e["ts"].get<double>());
      step_end = std::max(step_end, e["ts"].get<double>() + e["dur"].get<double>());
    }
  }
  std::map<std::string, int> spans_per_track;
  bool vram_counter = false;
  for (const auto& e : trace["traceEvents"]) {
    const std::string cat = e.value("cat", "");
    if (e.value("ph", "") == "C" && e.value("name", "").find("vram") != std::string::npos) vram_counter = true;
    if ((cat != "gpu" && cat != "copy") || e.value("ph", "") != "X") continue;
    ++spans_per_track[track_names[e["tid"].get<int64_t>()]];
    const double ts = e["ts"].get<double>(), end = ts + e["dur"].get<double>();
    EXPECT_GE(end, ts);
    EXPECT_GE(ts, step_begin - 50.0) << e.dump();  // µs; the anchor is read right after its event completes
    EXPECT_LE(end, step_end + 50.0) << e.dump();
  }
  EXPECT_GT(spans_per_track["gpu compute"], 0);
  EXPECT_GT(spans_per_track["h2d copy"], 0);
  EXPECT_GT(spans_per_track["d2h copy"], 0);
  EXPECT_TRUE(vram_counter);
  std::remove(path.c_str());
}

// The GPU pass keeps its KV cache in f16, q8_0 or q4_0: --kv-type f32 is refused with a message, and --device auto
// runs it on the CPU instead (saying why). Decided before any device is touched, so it runs without a GPU.
TEST(GpuForward, F32KvCacheIsRefusedOnTheGpuAndRunsOnTheCpuWithAutoWithoutAGpuToo) {
  const placement::Plan plan = gpu_plan(8);
  ForwardOptions o;
  o.plan = &plan;
  o.context_length = 256;
  o.num_threads = 2;
  o.kv_type = KvCacheType::kF32;
  auto gpu = create_gpu_forward(tiny(), o, nullptr);
  ASSERT_FALSE(gpu.has_value());
  EXPECT_EQ(gpu.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(gpu.error().message.find("f32"), std::string::npos) << gpu.error().message;
  o.device = ForwardOptions::Device::kAuto;
  std::vector<std::string> notes;
  auto f = create_forward(tiny(), o, &notes);
  ASSERT_TRUE(f.has_value()) << f.error().to_string();
  EXPECT_EQ(forward_path_name(o, f->get()).rfind("cpu", 0), 0u);
}

// A q8_0/q4_0 KV cache (K or V, with f16 or mixed) is no longer refused by the GPU pass: without a GPU the error is
// the missing device, not the cache type, and --device auto runs on the CPU; with one, the pass is created.
TEST(GpuForward, QuantizedKvCacheIsAcceptedByTheGpuPassAndAutoFallsBackWithoutAGpu) {
  const placement::Plan plan = gpu_plan(8);
  for (const auto& [k, v] : {std::pair{KvCacheType::kQ8_0, KvCacheType::kF16},
                             std::pair{KvCacheType::kF16, KvCacheType::kQ4_0},
                             std::pair{KvCacheType::kQ8_0, KvCacheType::kQ4_0}}) {
    SCOPED_TRACE(std::string(kv_cache_type_name(k)) + "/" + kv_cache_type_name(v));
    ForwardOptions o;
    o.plan = &plan;
    o.context_length = 256;
    o.num_threads = 2;
    o.kv_type = k;
    o.kv_type_v = v;
    auto gpu = create_gpu_forward(tiny(), o, nullptr);
    if (has_gpu()) {
      EXPECT_TRUE(gpu.has_value()) << gpu.error().to_string();
    } else {
      ASSERT_FALSE(gpu.has_value());
      EXPECT_EQ(gpu.error().message.find("cache-type"), std::string::npos) << gpu.error().message;
      EXPECT_EQ(gpu.error().message.find("CPU pass only"), std::string::npos) << gpu.error().message;
    }
    o.device = ForwardOptions::Device::kAuto;
    std::vector<std::string> notes;
    auto f = create_forward(tiny(), o, &notes);
    ASSERT_TRUE(f.has_value()) << f.error().to_string();
    EXPECT_EQ(forward_path_name(o, f->get()).rfind(has_gpu() ? "gpu" : "cpu", 0), 0u);
  }
}

// The fidelity bar with q8_0 K and V on the GPU pass: GPU-only and hybrid (K and V quantized on the device
// by kv_store, read by attention_decode).
TEST(GpuForward, Q8_0KvCacheMeetsTheFixtureBarGpuOnlyAndHybrid) {
  HETMOE_SKIP_WITHOUT_GPU();
  for (uint32_t k : {8u, 4u}) {
    const placement::Plan plan = gpu_plan(k);
    ForwardOptions o;
    o.plan = &plan;
    o.kv_type = KvCacheType::kQ8_0;
    o.kv_type_v = KvCacheType::kQ8_0;
    expect_fixture_bar(o, k == 8 ? "GPU-only, KV q8_0/q8_0" : "hybrid, 4 of 8 experts on the GPU, KV q8_0/q8_0");
  }
}

/// Logits of the whole fixture decoded token by token with `options` (create_forward).
std::vector<float> decode_fixture_with(const ForwardOptions& options) {
  auto f = create_forward(tiny(), options);
  EXPECT_TRUE(f.has_value()) << f.error().to_string();
  if (!f) return {};
  return decode_fixture(**f);
}

// The GPU pass with a quantized KV cache against the CPU pass with the same cache types, position by position.
// Both quantize K and V with the same arithmetic (kv_store is bit-exact with cpu::quantize_kv_*, test_cuda_kernels)
// and read the same values back; they differ only where the two passes' f32 K/V inputs differ (the CPU's int8
// activations in its GEMVs, other summation orders), which can move a value to the neighbouring quantization step.
// q8_0 K and V: the fixture bar (KL p50 ≤ 1e-3, p99 ≤ 5e-3) between the two passes (each meets it against the f32
// reference: CPU p50 5.4e-4, docs/performance.md). q4_0 (step amax / 8, 16× q8_0's; CPU vs reference p50 3.6e-2):
// such moves are large, so no bar between the passes; instead the GPU must be about as close to the f32 reference as
// the CPU pass (KL p50 within 1.5× + 1e-3 of the CPU's). NOT MEASURED (no GPU where this was written): a misread
// block, scale or nibble, or a row at the wrong slot, gives KL ~0.1–1 per position, far past both bounds.
TEST(GpuForward, QuantizedKvCacheOnTheGpuAgreesWithTheCpuPassWithTheSameCache) {
  HETMOE_SKIP_WITHOUT_GPU();
  const auto margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
  const auto reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
  const placement::Plan plan = gpu_plan(8);
  for (const auto& [k, v] : {std::pair{KvCacheType::kQ8_0, KvCacheType::kQ8_0},
                             std::pair{KvCacheType::kQ4_0, KvCacheType::kQ4_0},
                             std::pair{KvCacheType::kQ8_0, KvCacheType::kQ4_0}}) {
    const std::string types = std::string(kv_cache_type_name(k)) + "/" + kv_cache_type_name(v);
    ForwardOptions cpu;
    cpu.device = ForwardOptions::Device::kCpu;
    cpu.context_length = 256;
    cpu.num_threads = 2;
    cpu.kv_type = k;
    cpu.kv_type_v = v;
    ForwardOptions gpu = gpu_options(plan);
    gpu.kv_type = k;
    gpu.kv_type_v = v;
    const auto cpu_logits = decode_fixture_with(cpu);
    const auto gpu_logits = decode_fixture_with(gpu);
    ASSERT_EQ(cpu_logits.size(), gpu_logits.size()) << types;
    for (float x : gpu_logits) ASSERT_TRUE(std::isfinite(x)) << types;
    const auto between = test::agreement(cpu_logits, gpu_logits, 4106, margin);
    const auto cpu_ref = test::agreement(reference, cpu_logits, 4106, margin);
    const auto gpu_ref = test::agreement(reference, gpu_logits, 4106, margin);
    std::printf("[ agreement ] KV %s: GPU-only vs CPU pass KL p50 %.3g, p99 (margin >= 0.15) %.3g, top-1 %.1f %%; "
                "vs f32 reference: CPU p50 %.3g p99 %.3g, GPU p50 %.3g p99 %.3g\n",
                types.c_str(), between.p50_all, between.p99_confident, 100 * between.top1, cpu_ref.p50_all,
                cpu_ref.p99_confident, gpu_ref.p50_all, gpu_ref.p99_confident);
    if (k == KvCacheType::kQ8_0 && v == KvCacheType::kQ8_0) {
      EXPECT_LE(between.p50_all, 1e-3) << types;
      EXPECT_LE(between.p99_confident, 5e-3) << types;
    } else {
      EXPECT_LE(gpu_ref.p50_all, 1.5 * cpu_ref.p50_all + 1e-3) << types;
    }
  }
}

// Prefill with a quantized cache: device steps of 64 tokens (kv_store of a batch across the sliding ring's wrap,
// attention_prefill over q8_0 / q4_0 blocks) against token-by-token decoding on the same device. The two paths'
// K/V inputs differ by the prefill GEMM's f16 rounding, which moves some values to the neighbouring quantization
// step, so their difference is quantization noise: bounded relative to the pass's own error against the f32
// reference at that position, as tests/test_forward_cpu.cpp bounds the CPU's batched prefill (there 0.2×, measured
// ≤ 3.6 %; here 0.5× and 1.5×, NOT MEASURED: no GPU where this was written). A wrong slot, mask or block read gives
// NMSE ~1, far past both.
TEST(GpuForward, QuantizedKvBatchedPrefillMatchesTokenByToken) {
  HETMOE_SKIP_WITHOUT_GPU();
  const auto all_reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
  ASSERT_GE(all_reference.size(), 150u * 4106);
  const std::vector<float> reference(all_reference.begin() + 149 * 4106, all_reference.begin() + 150 * 4106);
  const placement::Plan plan = gpu_plan(8);
  for (const auto& [k, v] : {std::pair{KvCacheType::kQ8_0, KvCacheType::kQ8_0},
                             std::pair{KvCacheType::kQ4_0, KvCacheType::kQ8_0}}) {
    const std::string types = std::string(kv_cache_type_name(k)) + "/" + kv_cache_type_name(v);
    ForwardOptions o = gpu_options(plan);
    o.max_batch_tokens = 64;
    o.kv_type = k;
    o.kv_type_v = v;
    const auto [stepped, batched] = stepped_and_batched(o);
    ASSERT_EQ(stepped.size(), 4106u) << types;
    const double error = nmse(reference, stepped);
    std::printf("[ prefill ] KV %s: stepped vs batched NMSE %.3g; vs f32 reference: stepped %.3g, batched %.3g\n",
                types.c_str(), nmse(stepped, batched), error, nmse(reference, batched));
    EXPECT_LT(nmse(stepped, batched), 0.5 * error) << types;
    EXPECT_LT(nmse(reference, batched), 1.5 * error) << types;
  }
}

TEST(GpuForward, BudgetBelowTheDensePartIsAnErrorNotACrash) {
  HETMOE_SKIP_WITHOUT_GPU();
  const placement::Plan plan = gpu_plan(8);
  ForwardOptions o;
  o.plan = &plan;
  o.device = ForwardOptions::Device::kGpu;
  o.context_length = 256;
  o.vram_budget_bytes = 1 << 20;  // 1 MiB: the tiny model's output matrix alone is 1.1 MB
  auto f = create_forward(tiny(), o);
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message.find("VRAM budget"), std::string::npos) << f.error().message;
}

TEST(GpuForward, WithoutAGpuTheGpuPassIsAnErrorThatNamesWhy) {
  if (has_gpu()) GTEST_SKIP() << "this machine has a GPU";
  const placement::Plan plan = gpu_plan(8);
  ForwardOptions o;
  o.plan = &plan;
  auto f = create_gpu_forward(tiny(), o, nullptr);
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code, ErrorCode::kUnsupported);
  EXPECT_FALSE(f.error().message.empty());
}

#if HETMOE_HAVE_CUDA
TEST(GpuDeviceRuntime, ArenaPinnedBuffersStreamsAndEventsWork) {
  HETMOE_SKIP_WITHOUT_GPU();
  auto budget = gpu::default_vram_budget(0, gpu::kDefaultVramReserveBytes);
  ASSERT_TRUE(budget.has_value()) << budget.error().to_string();
  auto arena = gpu::DeviceArena::create(1 << 20);
  ASSERT_TRUE(arena.has_value()) << arena.error().to_string();
  std::vector<std::string> notes;
  auto pinned = gpu::PinnedBuffer::create(4096, "test", &notes);
  ASSERT_TRUE(pinned.has_value());
  auto stream = gpu::Stream::create();
  auto event = gpu::Event::create();
  ASSERT_TRUE(stream.has_value() && event.has_value());
  DeviceBuffer b;
  b.offset = 4096;
  b.bytes = 4096;
  for (int i = 0; i < 1024; ++i) pinned->as<float>()[i] = static_cast<float>(i);
  ASSERT_EQ(cudaMemcpyAsync(arena->at(b), pinned->data(), 4096, cudaMemcpyHostToDevice, stream->get()), cudaSuccess);
  std::vector<float> back(1024);
  ASSERT_EQ(cudaMemcpyAsync(back.data(), arena->at(b), 4096, cudaMemcpyDeviceToHost, stream->get()), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(event->get(), stream->get()), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(event->get()), cudaSuccess);
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(back[static_cast<size_t>(i)], static_cast<float>(i));
}

TEST(GpuDeviceRuntime, ArenaLargerThanTheDeviceIsAnErrorNotACrash) {
  HETMOE_SKIP_WITHOUT_GPU();
  auto arena = gpu::DeviceArena::create(1ull << 50);  // 1 PiB
  ASSERT_FALSE(arena.has_value());
  EXPECT_NE(arena.error().message.find("--vram-budget"), std::string::npos) << arena.error().message;
}
#endif

}  // namespace
}  // namespace hetmoe
