// A model whose MXFP4 experts and Q8_0 matrices are repacked in memory for the CPU kernels (kMXFP4_R16, kQ8_0_R16,
// runtime/model/weights_repack.h):
// the CPU pass on it meets the fixture agreement bar and stays within quantization noise of the file layout's pass,
// repacking is refused for a mapped file and is idempotent, a mapped model with a RAM tier repacks exactly its
// resident matrices and experts (the paged ones keep the file's layout) and still meets the bar, and every reader that needs the file's layout (the
// reference pass, a CPU variant without R16 kernels) refuses a repacked model with an error naming the cause.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "cpu_kernels/kernels.h"
#include "runtime/exec/forward_cpu.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/exec/forward_reference.h"
#include "runtime/model/model.h"
#include "runtime/model/weights_repack.h"
#include "tests/logit_metrics.h"

namespace hetmoe {
namespace {

const std::string kData = HETMOE_TEST_DATA_DIR;

Model load_tiny(gguf::File::LoadMode mode) {
  auto m = Model::load(kData + "/gpt-oss-tiny.gguf", mode);
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().to_string());
  return std::move(*m);
}

const std::vector<int32_t>& fixture_ids() {
  static const auto ids = test::read_numbers<int32_t>(kData + "/gpt-oss-tiny.ids.txt");
  return ids;
}

std::unique_ptr<CpuForward> make(const Model& model, cpu::Isa isa, uint32_t max_batch = 64) {
  CpuForwardOptions o;
  o.context_length = 256;
  o.num_threads = 2;
  o.max_batch_tokens = max_batch;
  auto f = CpuForward::create(model, o, cpu::kernel_table(isa));
  EXPECT_TRUE(f.has_value()) << (f ? "" : f.error().to_string());
  return f ? std::move(*f) : nullptr;
}

std::vector<float> decode_all(CpuForward& f, std::span<const int32_t> ids, size_t vocab) {
  std::vector<float> out(ids.size() * vocab);
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_TRUE(f.forward(ids[i], std::span<float>(&out[i * vocab], vocab)).has_value());
  return out;
}

/// The tiny fixture in memory, repacked for what the variant has kernels for (AVX2: the MXFP4 experts only).
Model repacked_for(cpu::Isa isa) {
  Model model = load_tiny(gguf::File::LoadMode::kMemory);
  const cpu::KernelTable& k = cpu::kernel_table(isa);
  const auto r = repack_weights_r16(
      model, 2, {.mxfp4_experts = k.gemm_mxfp4_r16 != nullptr, .q8_0_matrices = k.gemm_q8_0_r16 != nullptr});
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().to_string());
  return model;
}

/// The supported variants with R16 kernels.
std::vector<cpu::Isa> r16_isas() {
  std::vector<cpu::Isa> isas;
  for (cpu::Isa isa : cpu::supported_isas())
    if (cpu::kernel_table(isa).gemm_mxfp4_r16 != nullptr) isas.push_back(isa);
  return isas;
}

TEST(RepackedModel, RepacksEveryTargetTensorOnceAndOnlyInMemory) {
  Model mapped = load_tiny(gguf::File::LoadMode::kMmap);
  auto refused = repack_weights_r16(mapped, 2);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(refused.error().message.find("mapped"), std::string::npos) << refused.error().message;
  EXPECT_FALSE(has_repacked_weights(mapped));

  Model model = load_tiny(gguf::File::LoadMode::kMemory);
  const std::vector<uint8_t> before(model.layers[1].down_exps.data,
                                    model.layers[1].down_exps.data + model.layers[1].down_exps.info->num_bytes);
  // The fixture's attention matrices are Q8_0 with 256 or 64 rows; its unembedding has 4106 rows (not a multiple of
  // 16), so it stays Q8_0.
  ASSERT_EQ(model.output.type, TensorType::kQ8_0);
  ASSERT_NE(model.output.num_rows % 16, 0u);
  auto r = repack_weights_r16(model, 2);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->num_tensors, 7u * model.hparams.num_layers);
  for (const LayerWeights& w : model.layers) {
    for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps}) EXPECT_EQ(v->type, TensorType::kMXFP4_R16);
    for (const WeightView* v : {&w.wq, &w.wk, &w.wv, &w.wo}) EXPECT_EQ(v->type, TensorType::kQ8_0_R16);
  }
  EXPECT_EQ(model.output.type, TensorType::kQ8_0);
  EXPECT_EQ(model.token_embd.type, TensorType::kQ8_0);
  EXPECT_NE(0, std::memcmp(before.data(), model.layers[1].down_exps.data, before.size()));  // the bytes moved
  auto again = repack_weights_r16(model, 2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->num_tensors, 0u);

  // Only the targets asked for: the experts alone, then the matrices.
  Model experts_only = load_tiny(gguf::File::LoadMode::kMemory);
  auto e = repack_weights_r16(experts_only, 2, {.mxfp4_experts = true, .q8_0_matrices = false});
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->num_tensors, 3u * experts_only.hparams.num_layers);
  EXPECT_EQ(experts_only.layers[0].wq.type, TensorType::kQ8_0);
  auto m = repack_weights_r16(experts_only, 2, {.mxfp4_experts = false, .q8_0_matrices = true});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->num_tensors, 4u * experts_only.hparams.num_layers);
  EXPECT_EQ(experts_only.layers[0].wq.type, TensorType::kQ8_0_R16);
}

TEST(RepackedModel, MeetsTheFixtureAgreementBarAndStaysNearTheFileLayout) {
  if (r16_isas().empty()) GTEST_SKIP() << "no kernel variant with R16 kernels on this CPU";
  Model file_layout = load_tiny(gguf::File::LoadMode::kMemory);
  const size_t vocab = file_layout.hparams.vocab_size;
  for (const cpu::Isa isa : r16_isas()) {
    Model repacked = repacked_for(isa);
    auto f = make(repacked, isa);
    auto g = make(file_layout, isa);
    ASSERT_TRUE(f && g);
    const auto ours = decode_all(*f, fixture_ids(), vocab);
    const auto theirs = decode_all(*g, fixture_ids(), vocab);
    for (float x : ours) ASSERT_TRUE(std::isfinite(x));
    const auto reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
    const auto margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
    const auto a = test::agreement(reference, ours, 4106, margin);
    std::printf("[ agreement ] cpu %s, repacked, vs f32 reference: KL p50 %.3g, p99 (margin >= 0.15) %.3g, top-1 "
                "%.1f %%\n",
                cpu::isa_name(isa), a.p50_all, a.p99_confident, 100 * a.top1);
    EXPECT_LE(a.p50_all, 1e-3) << cpu::isa_name(isa);  // the fixture's bar (tests/test_forward_cpu.cpp)
    EXPECT_LE(a.p99_confident, 5e-3) << cpu::isa_name(isa);
    // The R16 kernels sum each row's blocks in order (the file layout's GEMVs in lane groups or block pairs), ~1e-13
    // apart per matrix; over 200 steps an int8 rounding of a later activation can flip, so the two passes differ by
    // quantization noise: far below their distance to the f32 reference (a wrong row or scale gives NMSE ~1).
    const double between = test::nmse(theirs, ours), to_reference = test::nmse(reference, theirs);
    std::printf("[ NMSE     ] %s: repacked vs file layout %.3g; file layout vs f32 reference %.3g\n",
                cpu::isa_name(isa), between, to_reference);
    EXPECT_LT(between, 0.2 * to_reference) << cpu::isa_name(isa);
  }
}

/// The file byte range of expert e of an expert view.
gguf::File::ByteRange expert_range(const Model& model, const WeightView& v, uint64_t e) {
  return {model.file->data_offset() + v.info->offset + e * v.num_rows * v.row_bytes, v.num_rows * v.row_bytes};
}

TEST(RepackedModel, RamTierRepacksOnlyTheResidentExpertsAndMatrices) {
  if (r16_isas().empty()) GTEST_SKIP() << "no kernel variant with R16 kernels on this CPU";
  Model file_layout = load_tiny(gguf::File::LoadMode::kMemory);
  const size_t vocab = file_layout.hparams.vocab_size;
  const uint64_t E = file_layout.hparams.num_experts;
  for (const cpu::Isa isa : r16_isas()) {
    Model model = load_tiny(gguf::File::LoadMode::kMmap);
    auto nothing = repack_resident_weights_r16(model, 2);  // nothing resident yet
    ASSERT_FALSE(nothing.has_value());
    EXPECT_EQ(nothing.error().code, ErrorCode::kUnsupported);
    // A RAM tier's shape: the attention matrices and the even experts resident, the odd ones paged from the file.
    std::vector<gguf::File::ByteRange> ranges;
    for (const LayerWeights& w : model.layers) {
      for (const WeightView* v : {&w.wq, &w.wk, &w.wv, &w.wo})
        ranges.push_back({model.file->data_offset() + v->info->offset, v->info->num_bytes});
      for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps})
        for (uint64_t e = 0; e < E; e += 2) ranges.push_back(expert_range(model, *v, e));
    }
    ASSERT_TRUE(model.file->make_resident(ranges, /*lock=*/false).has_value());
    const cpu::KernelTable& k = cpu::kernel_table(isa);
    const RepackTargets targets{.mxfp4_experts = k.gemm_mxfp4_r16 != nullptr,
                                .q8_0_matrices = k.gemm_q8_0_r16 != nullptr};
    auto r = repack_resident_weights_r16(model, 2, targets);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    // Pages are rounded out, so a paged expert next to a resident one may be resident too: each expert is repacked
    // exactly when all its bytes are resident, and in this fixture some are and some are not.
    uint64_t num_repacked = 0, num_paged = 0;
    for (const LayerWeights& w : model.layers)
      for (const WeightView* v : {&w.gate_exps, &w.up_exps, &w.down_exps}) {
        EXPECT_EQ(v->type, TensorType::kMXFP4);
        for (uint64_t e = 0; e < E; ++e) {
          const auto range = expert_range(model, *v, e);
          const bool resident = model.file->is_resident(range.offset, range.num_bytes);
          EXPECT_EQ(v->expert_type(e), resident ? TensorType::kMXFP4_R16 : TensorType::kMXFP4) << "expert " << e;
          (resident ? num_repacked : num_paged) += 1;
        }
      }
    EXPECT_EQ(r->num_experts, num_repacked);
    EXPECT_GT(num_repacked, 0u);
    EXPECT_GT(num_paged, 0u);
    EXPECT_EQ(r->num_tensors, targets.q8_0_matrices ? 4u * model.hparams.num_layers : 0u);
    EXPECT_EQ(model.layers[0].wq.type, targets.q8_0_matrices ? TensorType::kQ8_0_R16 : TensorType::kQ8_0);
    EXPECT_EQ(model.output.type, TensorType::kQ8_0);  // not resident (and 4106 rows)
    EXPECT_TRUE(has_repacked_weights(model));
    // The reference pass needs the file's layout everywhere.
    EXPECT_FALSE(ReferenceForward::create(model, 64, KvCacheType::kF16, KvCacheType::kF16, 1).has_value());
    // The mixed model against the file layout, as above.
    auto f = make(model, isa);
    auto g = make(file_layout, isa);
    ASSERT_TRUE(f && g);
    const auto ours = decode_all(*f, fixture_ids(), vocab);
    const auto theirs = decode_all(*g, fixture_ids(), vocab);
    const auto reference = test::read_f32_file(kData + "/gpt-oss-tiny.reference.logits.f32");
    const auto margin = test::read_numbers<double>(kData + "/gpt-oss-tiny.router-margin.txt");
    const auto a = test::agreement(reference, ours, 4106, margin);
    EXPECT_LE(a.p50_all, 1e-3) << cpu::isa_name(isa);
    EXPECT_LE(a.p99_confident, 5e-3) << cpu::isa_name(isa);
    const double between = test::nmse(theirs, ours), to_reference = test::nmse(reference, theirs);
    std::printf("[ NMSE     ] %s RAM tier: repacked resident vs file layout %.3g; file layout vs reference %.3g\n",
                cpu::isa_name(isa), between, to_reference);
    EXPECT_LT(between, 0.2 * to_reference) << cpu::isa_name(isa);
  }
}

TEST(RepackedModel, BatchedPrefillMatchesTokenByToken) {
  if (r16_isas().empty()) GTEST_SKIP() << "no kernel variant with R16 kernels on this CPU";
  const auto& ids = fixture_ids();
  for (const cpu::Isa isa : r16_isas()) {
    Model repacked = repacked_for(isa);
    const size_t vocab = repacked.hparams.vocab_size;
    auto one = make(repacked, isa);
    ASSERT_TRUE(one);
    const auto step = decode_all(*one, std::span<const int32_t>(ids).subspan(0, 100), vocab);
    for (uint32_t batch : {64u, 7u}) {
      auto f = make(repacked, isa, batch);
      ASSERT_TRUE(f);
      std::vector<float> last(vocab);
      ASSERT_TRUE(f->forward_batch(std::span<const int32_t>(ids).subspan(0, 100), last).has_value());
      const std::vector<float> want(step.begin() + 99 * vocab, step.end());
      // The experts give every token of a batch the bits it gets alone; attention and the Q8_0 matrices sum in
      // another order from 9 tokens on (tests/test_forward_cpu.cpp, check_batched): quantization noise, NMSE ~1e-4.
      EXPECT_LT(test::nmse(want, last), batch < 9 ? 1e-3 : 2e-3) << cpu::isa_name(isa) << ", batch " << batch;
    }
  }
}

TEST(RepackedModel, ReadersOfTheFileLayoutRefuseIt) {
  Model repacked = load_tiny(gguf::File::LoadMode::kMemory);
  ASSERT_TRUE(repack_weights_r16(repacked, 2).has_value());
  // The reference pass.
  auto ref = ReferenceForward::create(repacked, 64, KvCacheType::kF16, KvCacheType::kF16, 1);
  ASSERT_FALSE(ref.has_value());
  EXPECT_EQ(ref.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(ref.error().message.find("Q8_0_R16"), std::string::npos) << ref.error().message;
  ForwardOptions options;
  options.context_length = 64;
  options.use_reference = true;
  auto via_factory = create_forward(repacked, options);
  ASSERT_FALSE(via_factory.has_value());
  EXPECT_NE(via_factory.error().message.find("--reference"), std::string::npos) << via_factory.error().message;
  // A CPU variant without R16 kernels for every repacked type (scalar: none; AVX2: no Q8_0_R16).
  for (cpu::Isa isa : cpu::supported_isas()) {
    if (cpu::kernel_table(isa).gemm_mxfp4_r16 != nullptr && cpu::kernel_table(isa).gemm_q8_0_r16 != nullptr) continue;
    CpuForwardOptions o;
    o.context_length = 64;
    o.num_threads = 1;
    auto f = CpuForward::create(repacked, o, cpu::kernel_table(isa));
    ASSERT_FALSE(f.has_value()) << cpu::isa_name(isa);
    EXPECT_EQ(f.error().code, ErrorCode::kUnsupported);
    EXPECT_NE(f.error().message.find(cpu::isa_name(isa)), std::string::npos) << f.error().message;
    const char* missing = cpu::kernel_table(isa).gemm_mxfp4_r16 == nullptr ? "(MXFP4_R16)" : "(Q8_0_R16)";
    EXPECT_NE(f.error().message.find(missing), std::string::npos) << f.error().message;
  }
}

TEST(RepackedModel, CreateForwardRepacksOnlyWhenAskedAndUseful) {
  const auto best = cpu::selected_isa();
  ASSERT_TRUE(best.has_value());
  const bool has_r16 = cpu::kernel_table(*best).gemm_mxfp4_r16 != nullptr;
  ForwardOptions options;
  options.context_length = 64;
  options.num_threads = 2;
  EXPECT_FALSE(options.repack_weights) << "off for library callers (the CLI turns it on)";
  {
    Model model = load_tiny(gguf::File::LoadMode::kMemory);
    options.repack_weights = false;
    ASSERT_TRUE(create_forward(model, options).has_value());
    EXPECT_FALSE(has_repacked_weights(model)) << "--no-repack";
  }
  {
    Model model = load_tiny(gguf::File::LoadMode::kMemory);
    options.repack_weights = true;
    std::vector<std::string> notes;
    ASSERT_TRUE(create_forward(model, options, &notes).has_value());
    EXPECT_EQ(has_repacked_weights(model), has_r16) << cpu::isa_name(*best);
    bool noted = false;
    for (const auto& n : notes) noted |= n.find("repacked") != std::string::npos;
    EXPECT_EQ(noted, has_r16);
  }
  {
    Model model = load_tiny(gguf::File::LoadMode::kMmap);  // mapped: nothing to rewrite, and no error
    options.repack_weights = true;
    ASSERT_TRUE(create_forward(model, options).has_value());
    EXPECT_FALSE(has_repacked_weights(model));
  }
}

}  // namespace
}  // namespace hetmoe
