// CUDA kernels (gpu_kernels/ops.h) against the CPU reference: the scalar functions of cpu_kernels/reference.h, or a
// plain loop here in double where the reference is a forward-pass step (attention with sinks, the MoE block:
// runtime/exec/forward_reference.cpp). One metric, NMSE = mse(a, b) / mse(a, 0) with a the reference, and a tolerance
// per op with its reason; exact equality where the kernel's arithmetic is exact (dequantization, f16 stores, top-k
// ids). Shapes stress the edges: rows 1, 7, 111, 2880 (partial warps and blocks); columns 32, 96, 2880 (one, three
// and 90 quantization blocks); tokens 1, 3, 17 (the GEMV's 8-token chunks); keys 1, 5, 129, 300 (one key, the
// sliding window of 128, several 128-key splits, the ring wrap); 32 experts with only some resident (slot −1).
// Without a GPU, or in a build without CUDA, every test skips.

#include <gtest/gtest.h>

#include "gpu_kernels/cuda_device.h"
#include "tests/gpu_test_support.h"

#if HETMOE_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/kv_blocks.h"
#include "cpu_kernels/reference.h"
#include "gpu_kernels/cublas_library.h"
#include "gpu_kernels/cuda_step_device.h"
#include "gpu_kernels/ops.h"
#include "runtime/base/ggml_types.h"
#include "runtime/model/kv_type.h"
#include "tests/kv_rows.h"
#include "tests/logit_metrics.h"

namespace hetmoe::gpu {
namespace {

// ---- tolerances ----------------------------------------------------------------------------------------------------

// Dot products and sums in f32 on the device against double on the host: the f32 rounding error of a sum of n terms
// is ~1e-7·sqrt(n) relative to the sum of |terms|, so NMSE ≲ 1e-12 for n ≤ 2880 (GEMV, RMSNorm, the MoE chain with
// its expf). 1e-9 leaves three orders of margin and still catches one wrong element of a 2880-long row (~1e-4) or a
// wrong nibble or scale (NMSE ~1).
constexpr double kF32AccumNmse = 1e-9;
// RoPE: θ and cos/sin in double on both sides (the device's pow/cos/sin within 2 ulp of double), rounded once to
// float: the tables differ by at most 1 float ulp where a double result lies next to a rounding boundary, i.e. a
// relative error ≤ 1.2e-7 per element after the rotation's float products: NMSE ≤ 1e-12.
constexpr double kRopeNmse = 1e-11;
// Attention: scores are f32 dot products of 32 to 128 terms, the online softmax rescales in f32 with expf and the
// split merge reorders the sums over ≤ 300 keys; K and V are the same values on both sides (f16 widened, or q8_0 /
// q4_0 blocks dequantized with the same float product d · q as cpu::dequantize_kv_*). Relative error ~1e-6 per
// output, NMSE ~1e-12; 1e-9 for margin. A wrong mask, a missing sink, one misread block scale or nibble order (NMSE
// ≳ 1e-4 on 300 keys) fails it.
constexpr double kAttentionNmse = 1e-9;
// Router softmax over ≤ 8 logits: f32 expf on the device vs f32 std::exp in ref::softmax, double sum on both.
constexpr double kRouterWeightNmse = 1e-12;
// cuBLAS f16 GEMM against a double reference on the same f16-rounded operands: only the f32 accumulation order of
// the tensor-core GEMM differs (as kF32AccumNmse).
constexpr double kGemmNmse = 1e-9;

using test::nmse;

// ---- device buffers ------------------------------------------------------------------------------------------------

/// Owns count elements of T on the device (cudaMalloc: 256-byte aligned).
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(count, 1) * sizeof(T)), cudaSuccess);
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), count_);
    if (count_ == 0) return;
    ASSERT_EQ(cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }
  void fill_bytes(int value) { EXPECT_EQ(cudaMemset(ptr_, value, std::max<size_t>(count_, 1) * sizeof(T)), cudaSuccess); }
  T* get() { return ptr_; }
  const T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// ---- random data ---------------------------------------------------------------------------------------------------

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

uint16_t f32_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

/// A random matrix (num_rows, num_cols) of `type` in the GGUF layout, values of standard deviation ≈ std.
/// MXFP4: exponents within 2^±2 of std/4, every 37th block at e = 0 or 1 (subnormal scales); all 16 codes.
/// Q8_0: d ≈ std/73 as f16, q in [−127, 127].
std::vector<uint8_t> random_weights(TensorType type, int64_t num_rows, int64_t num_cols, uint32_t seed, float std) {
  std::mt19937 rng(seed);
  const uint64_t row_bytes = tensor_row_bytes(type, static_cast<uint64_t>(num_cols));
  std::vector<uint8_t> w(row_bytes * static_cast<uint64_t>(num_rows));
  std::normal_distribution<float> normal(0.0f, std);
  switch (type) {
    case TensorType::kMXFP4: {
      const int e_mid = 128 + static_cast<int>(std::lround(std::log2(std / 4.0f)));
      std::uniform_int_distribution<int> e_dist(e_mid - 2, e_mid + 2), byte(0, 255);
      for (size_t b = 0; b < w.size() / kMXFP4BlockBytes; ++b) {
        uint8_t* block = w.data() + b * kMXFP4BlockBytes;
        block[0] = static_cast<uint8_t>(b % 37 == 5 ? b % 2 : e_dist(rng));
        for (int j = 1; j < 17; ++j) block[j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    }
    case TensorType::kQ8_0: {
      std::uniform_real_distribution<float> d_dist(0.5f * std / 73.0f, 1.5f * std / 73.0f);
      std::uniform_int_distribution<int> q_dist(-127, 127);
      for (size_t b = 0; b < w.size() / kQ8_0BlockBytes; ++b) {
        uint8_t* block = w.data() + b * kQ8_0BlockBytes;
        const uint16_t d = ref::f32_to_f16(d_dist(rng));
        std::memcpy(block, &d, 2);
        for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q_dist(rng)));
      }
      break;
    }
    case TensorType::kF32:
      for (size_t i = 0; i < w.size() / 4; ++i) {
        const float v = normal(rng);
        std::memcpy(w.data() + 4 * i, &v, 4);
      }
      break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (size_t i = 0; i < w.size() / 2; ++i) {
        const float v = normal(rng);
        const uint16_t h = type == TensorType::kF16 ? ref::f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(w.data() + 2 * i, &h, 2);
      }
      break;
    case TensorType::kMXFP4_R16:  // the CPU kernels' layouts: never a GPU weight
    case TensorType::kQ8_0_R16:
      ADD_FAILURE() << "R16 weights requested";
      break;
  }
  return w;
}

constexpr TensorType kAllTypes[] = {TensorType::kMXFP4, TensorType::kQ8_0, TensorType::kF32, TensorType::kF16,
                                    TensorType::kBF16};

std::string type_name(TensorType type) { return std::string(tensor_type_traits(type).name); }

// ---- fixture -------------------------------------------------------------------------------------------------------

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    HETMOE_SKIP_WITHOUT_GPU();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  /// Waits for the stream and checks that no kernel failed.
  void sync() { ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess); }

  cudaStream_t stream_ = nullptr;
};

// ---- GEMV ----------------------------------------------------------------------------------------------------------

/// y = W·x + bias for num_tokens tokens, against ref::dot_row (double) + bias.
class MatvecTester {
 public:
  MatvecTester& type(TensorType t) { type_ = t; return *this; }
  MatvecTester& rows(int64_t n) { num_rows_ = n; return *this; }
  MatvecTester& cols(int64_t n) { num_cols_ = n; return *this; }
  MatvecTester& tokens(int64_t n) { num_tokens_ = n; return *this; }
  MatvecTester& with_bias(bool b) { with_bias_ = b; return *this; }

  void test(cudaStream_t stream) const {
    SCOPED_TRACE(type_name(type_) + " rows " + std::to_string(num_rows_) + " cols " + std::to_string(num_cols_) +
                 " tokens " + std::to_string(num_tokens_));
    const auto seed = static_cast<uint32_t>(num_rows_ * 7 + num_cols_ * 13 + num_tokens_);
    const std::vector<uint8_t> w = random_weights(type_, num_rows_, num_cols_, seed, 1.0f);
    const std::vector<float> x = random_floats(num_tokens_ * num_cols_, seed + 1);
    const std::vector<float> bias = random_floats(num_rows_, seed + 2);
    const uint64_t row_bytes = tensor_row_bytes(type_, static_cast<uint64_t>(num_cols_));
    std::vector<float> expected(static_cast<size_t>(num_tokens_ * num_rows_));
    for (int64_t t = 0; t < num_tokens_; ++t)
      for (int64_t r = 0; r < num_rows_; ++r)
        expected[t * num_rows_ + r] = ref::dot_row(type_, w.data() + r * row_bytes, &x[t * num_cols_], num_cols_) +
                                      (with_bias_ ? bias[r] : 0.0f);

    DeviceBuffer<uint8_t> d_w(w);
    DeviceBuffer<float> d_x(x), d_bias(bias), d_y(expected.size());
    d_y.fill_bytes(0xFF);  // NaN: a missed element shows
    ASSERT_EQ(matvec(type_, d_w.get(), num_rows_, num_cols_, d_x.get(), num_tokens_, with_bias_ ? d_bias.get() : nullptr,
                     d_y.get(), stream),
              cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_LT(nmse(expected, d_y.download()), kF32AccumNmse);
  }

 private:
  TensorType type_ = TensorType::kF32;
  int64_t num_rows_ = 1, num_cols_ = 32, num_tokens_ = 1;
  bool with_bias_ = true;
};

TEST_F(CudaKernels, MatvecEveryTypeOnPartialWarpsBlocksAndTokenChunks) {
  struct Shape {
    int64_t rows, cols;
  };
  constexpr Shape kShapes[] = {{1, 32}, {7, 96}, {111, 2880}, {2880, 96}};
  for (TensorType type : kAllTypes)
    for (const Shape& s : kShapes)
      for (int64_t tokens : {1, 3, 17}) MatvecTester().type(type).rows(s.rows).cols(s.cols).tokens(tokens).test(stream_);
}

TEST_F(CudaKernels, MatvecFullSizeRowsWithoutBias) {
  for (TensorType type : kAllTypes) MatvecTester().type(type).rows(2880).cols(2880).tokens(3).with_bias(false).test(stream_);
}

TEST_F(CudaKernels, MatvecRejectsPartialBlocksAndMisalignedInput) {
  DeviceBuffer<float> buf(4096);
  // 48 columns is not a multiple of the 32-element Q8_0 block; 30 not a multiple of 4 for F32.
  EXPECT_EQ(matvec(TensorType::kQ8_0, buf.get(), 4, 48, buf.get(), 1, nullptr, buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(matvec(TensorType::kF32, buf.get(), 4, 30, buf.get(), 1, nullptr, buf.get(), stream_),
            cudaErrorInvalidValue);
  // x one float past a 16-byte boundary
  EXPECT_EQ(matvec(TensorType::kF32, buf.get(), 4, 32, buf.get() + 1, 1, nullptr, buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(matvec(static_cast<TensorType>(2), buf.get(), 4, 32, buf.get(), 1, nullptr, buf.get(), stream_),
            cudaErrorInvalidValue);
}

// ---- dequantization, cuBLAS GEMM, embedding --------------------------------------------------------------------------

TEST_F(CudaKernels, DequantizeToF16IsExactlyTheRoundedReference) {
  for (TensorType type : kAllTypes) {
    SCOPED_TRACE(type_name(type));
    const int64_t rows = 7, cols = 96;
    const std::vector<uint8_t> w = random_weights(type, rows, cols, 11, 1.0f);
    std::vector<float> deq(static_cast<size_t>(rows * cols));
    ref::dequantize_row(type, w.data(), deq.data(), rows * cols);  // rows are contiguous: one long row
    DeviceBuffer<uint8_t> d_w(w);
    DeviceBuffer<uint16_t> d_out(deq.size());
    ASSERT_EQ(dequantize_to_f16(type, d_w.get(), rows, cols, d_out.get(), stream_), cudaSuccess);
    sync();
    const std::vector<uint16_t> got = d_out.download();
    for (size_t i = 0; i < deq.size(); ++i) ASSERT_EQ(got[i], ref::f32_to_f16(deq[i])) << "element " << i;
  }
}

TEST_F(CudaKernels, GemmF16MatchesDoubleOnF16RoundedOperands) {
  auto lib = cublas_library();
  ASSERT_TRUE(lib) << lib.error().message;
  cublasHandle_t cublas = nullptr;
  ASSERT_EQ((*lib)->create(&cublas), CUBLAS_STATUS_SUCCESS);
  struct Shape {
    int64_t rows, cols, tokens;
  };
  for (const Shape& s : {Shape{111, 96, 17}, Shape{2880, 2880, 33}, Shape{1, 32, 1}}) {
    SCOPED_TRACE("rows " + std::to_string(s.rows) + " cols " + std::to_string(s.cols));
    const std::vector<uint8_t> w = random_weights(TensorType::kQ8_0, s.rows, s.cols, 5, 0.05f);
    const std::vector<float> x = random_floats(s.tokens * s.cols, 6);
    const std::vector<float> bias = random_floats(s.rows, 7);
    std::vector<float> w_deq(static_cast<size_t>(s.rows * s.cols));
    ref::dequantize_row(TensorType::kQ8_0, w.data(), w_deq.data(), s.rows * s.cols);
    auto round_f16 = [](std::vector<float> v) {
      for (float& e : v) e = ref::f16_to_f32(ref::f32_to_f16(e));
      return v;
    };
    const std::vector<float> w16 = round_f16(w_deq), x16 = round_f16(x);
    std::vector<float> expected(static_cast<size_t>(s.tokens * s.rows));
    for (int64_t t = 0; t < s.tokens; ++t)
      for (int64_t r = 0; r < s.rows; ++r) {
        double sum = 0.0;
        for (int64_t k = 0; k < s.cols; ++k)
          sum += static_cast<double>(w16[r * s.cols + k]) * static_cast<double>(x16[t * s.cols + k]);
        expected[t * s.rows + r] = static_cast<float>(sum) + bias[r];
      }
    DeviceBuffer<uint8_t> d_w(w);
    DeviceBuffer<uint16_t> d_w16(w_deq.size()), d_x16(x.size());
    DeviceBuffer<float> d_x(x), d_bias(bias), d_y(expected.size());
    ASSERT_EQ(dequantize_to_f16(TensorType::kQ8_0, d_w.get(), s.rows, s.cols, d_w16.get(), stream_), cudaSuccess);
    ASSERT_EQ(gemm_f16(cublas, d_w16.get(), s.rows, s.cols, d_x.get(), s.tokens, d_bias.get(), d_x16.get(), d_y.get(),
                       stream_),
              cudaSuccess);
    sync();
    EXPECT_LT(nmse(expected, d_y.download()), kGemmNmse);
  }
  (*lib)->destroy(cublas);
}

TEST_F(CudaKernels, EmbeddingGatherIsExactDequantization) {
  for (TensorType type : kAllTypes) {
    SCOPED_TRACE(type_name(type));
    const int64_t vocab = 50, hidden = 2880;
    const std::vector<uint8_t> table = random_weights(type, vocab, hidden, 21, 1.0f);
    const std::vector<int32_t> ids = {49, 0, 17, 17, 3};
    const uint64_t row_bytes = tensor_row_bytes(type, hidden);
    std::vector<float> expected(ids.size() * hidden);
    for (size_t t = 0; t < ids.size(); ++t)
      ref::dequantize_row(type, table.data() + ids[t] * row_bytes, &expected[t * hidden], hidden);
    DeviceBuffer<uint8_t> d_table(table);
    DeviceBuffer<int32_t> d_ids(ids);
    DeviceBuffer<float> d_out(expected.size());
    ASSERT_EQ(embedding_gather(type, d_table.get(), hidden, d_ids.get(), static_cast<int64_t>(ids.size()), d_out.get(),
                               stream_),
              cudaSuccess);
    sync();
    const std::vector<float> got = d_out.download();
    for (size_t i = 0; i < expected.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(expected[i])) << "element " << i;
  }
}

// ---- RMSNorm, RoPE, residual add -------------------------------------------------------------------------------------

TEST_F(CudaKernels, RmsNormOddDimsAndInPlace) {
  for (int64_t dim : {2880, 96, 7, 1})
    for (int64_t rows : {1, 3, 17}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + " rows " + std::to_string(rows));
      const std::vector<float> x = random_floats(rows * dim, 31, 3.0f);
      const std::vector<float> w = random_floats(dim, 32);
      std::vector<float> expected(x.size());
      for (int64_t r = 0; r < rows; ++r) ref::rms_norm(&x[r * dim], w.data(), &expected[r * dim], dim, 1e-5f);
      DeviceBuffer<float> d_x(x), d_w(w), d_y(x.size());
      ASSERT_EQ(rms_norm(d_x.get(), d_w.get(), rows, dim, 1e-5f, d_y.get(), stream_), cudaSuccess);
      ASSERT_EQ(rms_norm(d_x.get(), d_w.get(), rows, dim, 1e-5f, d_x.get(), stream_), cudaSuccess);  // y aliases x
      sync();
      EXPECT_LT(nmse(expected, d_y.download()), kF32AccumNmse);
      EXPECT_LT(nmse(expected, d_x.download()), kF32AccumNmse);
    }
}

TEST_F(CudaKernels, RopeYarnNeoxAtSmallAndHugePositions) {
  const std::vector<int32_t> positions = {0, 1, 5, 127, 4096, 131071, 70000};
  const int64_t tokens = static_cast<int64_t>(positions.size());
  struct Case {
    int64_t heads, head_dim;
    int32_t rot_dims;
    float ext_factor;
  };
  // gpt-oss (64 heads of 64), the KV heads, a partial rotation (dims 32..63 untouched), and YaRN off.
  for (const Case& c : {Case{64, 64, 64, 1.0f}, Case{8, 64, 64, 1.0f}, Case{3, 64, 32, 1.0f}, Case{2, 128, 128, 0.0f}}) {
    SCOPED_TRACE("heads " + std::to_string(c.heads) + " head_dim " + std::to_string(c.head_dim));
    ref::RopeYarnParams params;
    params.num_rot_dims = c.rot_dims;
    params.ext_factor = c.ext_factor;
    const std::vector<float> x = random_floats(tokens * c.heads * c.head_dim, 41);
    std::vector<float> expected = x;
    std::vector<float> cos_tab(c.rot_dims / 2), sin_tab(c.rot_dims / 2);
    for (int64_t t = 0; t < tokens; ++t) {
      ref::rope_yarn_cos_sin(params, positions[t], cos_tab.data(), sin_tab.data());
      for (int64_t h = 0; h < c.heads; ++h)
        ref::rope_neox_apply(&expected[(t * c.heads + h) * c.head_dim], c.rot_dims, cos_tab.data(), sin_tab.data());
    }
    DeviceBuffer<float> d_x(x);
    DeviceBuffer<int32_t> d_pos(positions);
    ASSERT_EQ(rope_neox_yarn(d_x.get(), tokens, c.heads, c.head_dim, d_pos.get(), params, stream_), cudaSuccess);
    sync();
    const std::vector<float> got = d_x.download();
    EXPECT_LT(nmse(expected, got), kRopeNmse);
    if (c.rot_dims < c.head_dim) {  // the unrotated tail is untouched
      for (int64_t i = c.rot_dims; i < c.head_dim; ++i) EXPECT_EQ(got[i], x[i]);
    }
  }
}

TEST_F(CudaKernels, AddVectorsWithAndWithoutThirdTerm) {
  const int64_t n = 2880 * 3 + 5;
  const std::vector<float> a = random_floats(n, 51), b = random_floats(n, 52), c = random_floats(n, 53);
  DeviceBuffer<float> d_a(a), d_b(b), d_c(c), d_y(n);
  ASSERT_EQ(add_vectors(d_a.get(), d_b.get(), d_c.get(), n, d_y.get(), stream_), cudaSuccess);
  sync();
  std::vector<float> got = d_y.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], (a[i] + b[i]) + c[i]) << i;
  ASSERT_EQ(add_vectors(d_a.get(), d_b.get(), nullptr, n, d_a.get(), stream_), cudaSuccess);  // y aliases a
  sync();
  got = d_a.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], a[i] + b[i]) << i;
}

// ---- router ----------------------------------------------------------------------------------------------------------

TEST_F(CudaKernels, RouterTopKBreaksTiesByLowerIndex) {
  struct Case {
    int64_t experts, top_k;
  };
  for (const Case& c : {Case{32, 4}, Case{7, 1}, Case{256, 8}, Case{128, 4}, Case{8, 8}}) {
    SCOPED_TRACE("experts " + std::to_string(c.experts) + " top_k " + std::to_string(c.top_k));
    const int64_t tokens = 17;
    // Logits rounded to quarters: many exact ties, which the reference's stable sort resolves by lower index.
    std::vector<float> logits = random_floats(tokens * c.experts, 61, 2.0f);
    for (float& v : logits) v = std::round(v * 4.0f) / 4.0f;
    std::vector<int32_t> expected_ids(static_cast<size_t>(tokens * c.top_k));
    std::vector<float> expected_w(expected_ids.size());
    std::vector<int32_t> order(static_cast<size_t>(c.experts));
    for (int64_t t = 0; t < tokens; ++t) {
      const float* lt = &logits[t * c.experts];
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return lt[a] > lt[b]; });
      for (int64_t k = 0; k < c.top_k; ++k) {
        expected_ids[t * c.top_k + k] = order[k];
        expected_w[t * c.top_k + k] = lt[order[k]];
      }
      ref::softmax(&expected_w[t * c.top_k], c.top_k);
    }
    DeviceBuffer<float> d_logits(logits), d_w(expected_w.size());
    DeviceBuffer<int32_t> d_ids(expected_ids.size());
    ASSERT_EQ(router_topk_softmax(d_logits.get(), tokens, c.experts, c.top_k, d_ids.get(), d_w.get(), stream_),
              cudaSuccess);
    sync();
    EXPECT_EQ(d_ids.download(), expected_ids);
    EXPECT_LT(nmse(expected_w, d_w.download()), kRouterWeightNmse);
  }
}

TEST_F(CudaKernels, RouterRejectsTooManyExpertsOrTopK) {
  DeviceBuffer<float> buf(1024);
  DeviceBuffer<int32_t> ids(64);
  EXPECT_EQ(router_topk_softmax(buf.get(), 1, 257, 4, ids.get(), buf.get(), stream_), cudaErrorInvalidValue);
  EXPECT_EQ(router_topk_softmax(buf.get(), 1, 32, 9, ids.get(), buf.get(), stream_), cudaErrorInvalidValue);
  EXPECT_EQ(router_topk_softmax(buf.get(), 1, 3, 4, ids.get(), buf.get(), stream_), cudaErrorInvalidValue);
}

// ---- KV cache and attention ----------------------------------------------------------------------------------------

TEST_F(CudaKernels, KvStoreWritesRoundedF16AtRingSlots) {
  const int64_t kv_heads = 8, head_dim = 64, capacity = 130, tokens = 5;
  const std::vector<int32_t> positions = {127, 128, 129, 130, 131};  // 130 and 131 wrap to slots 0 and 1
  const std::vector<float> k = random_floats(tokens * kv_heads * head_dim, 71, 4.0f);
  const std::vector<float> v = random_floats(k.size(), 72, 4.0f);
  const size_t cache_elems = static_cast<size_t>(kv_heads * capacity * head_dim);
  DeviceBuffer<uint16_t> d_k(cache_elems), d_v(cache_elems);
  d_k.fill_bytes(0xFF);
  d_v.fill_bytes(0xFF);
  DeviceBuffer<float> d_kin(k), d_vin(v);
  DeviceBuffer<int32_t> d_pos(positions);
  KvLayerView kv{d_k.get(), d_v.get(), static_cast<int32_t>(capacity), 128};
  ASSERT_EQ(kv_store(kv, d_kin.get(), d_vin.get(), tokens, kv_heads, head_dim, d_pos.get(), stream_), cudaSuccess);
  sync();
  std::vector<uint16_t> expected_k(cache_elems, 0xFFFF), expected_v(cache_elems, 0xFFFF);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < kv_heads; ++g)
      for (int64_t d = 0; d < head_dim; ++d) {
        const size_t dst = static_cast<size_t>((g * capacity + positions[t] % capacity) * head_dim + d);
        const size_t src = static_cast<size_t>((t * kv_heads + g) * head_dim + d);
        expected_k[dst] = ref::f32_to_f16(k[src]);
        expected_v[dst] = ref::f32_to_f16(v[src]);
      }
  EXPECT_EQ(d_k.download(), expected_k);
  EXPECT_EQ(d_v.download(), expected_v);
}

using test::host_kv_row_load;
using test::host_kv_row_store;
using test::kv_type_name;

/// Attention over a host-built cache of K type k_type and V type v_type: positions 0 .. last_pos were written in
/// order (a ring of `capacity` slots keeps the newest), the queries are the last num_tokens positions. Reference:
/// double loop of runtime/exec/forward_reference.cpp (scores in double, the sink as an extra logit) over the K and
/// V values the CPU's scalar functions read back (host_kv_row_load), which are the values the kernels must read.
class AttentionTester {
 public:
  AttentionTester& heads(int64_t q, int64_t kv) { num_heads_ = q; num_kv_heads_ = kv; return *this; }
  AttentionTester& head_dim(int64_t d) { head_dim_ = d; return *this; }
  AttentionTester& tokens(int64_t n) { num_tokens_ = n; return *this; }
  AttentionTester& last_position(int32_t p) { last_pos_ = p; return *this; }
  /// window 0: full attention (capacity = last_pos + 1 + spare); otherwise a ring of window + num_tokens − 1 + spare.
  AttentionTester& window(int32_t w) { window_ = w; return *this; }
  /// Ring slots beyond window + num_tokens − 1 on sliding layers (default 3).
  AttentionTester& spare_slots(int32_t n) { spare_slots_ = n; return *this; }
  AttentionTester& with_sinks(bool s) { with_sinks_ = s; return *this; }
  /// attention_decode's max_position argument (default last_pos); smaller values test the overflow split.
  AttentionTester& planned_max_position(int32_t p) { planned_max_pos_ = p; return *this; }
  AttentionTester& kv_types(KvType k, KvType v) { k_type_ = k; v_type_ = v; return *this; }

  void test(cudaStream_t stream, bool prefill) const {
    const int32_t capacity =
        window_ > 0 ? window_ + static_cast<int32_t>(num_tokens_) - 1 + spare_slots_ : last_pos_ + 1 + 5;
    const int32_t window = window_ > 0 ? window_ : capacity;
    SCOPED_TRACE(std::string(prefill ? "prefill" : "decode") + " K " + kv_type_name(k_type_) + " V " +
                 kv_type_name(v_type_) + " heads " + std::to_string(num_heads_) + "/" +
                 std::to_string(num_kv_heads_) + " head_dim " + std::to_string(head_dim_) + " tokens " +
                 std::to_string(num_tokens_) + " last_pos " + std::to_string(last_pos_) + " window " +
                 std::to_string(window) + " capacity " + std::to_string(capacity));
    const auto seed = static_cast<uint32_t>(last_pos_ * 3 + num_tokens_ + head_dim_);
    const auto k_row = static_cast<size_t>(kv_type_row_bytes(k_type_, head_dim_));
    const auto v_row = static_cast<size_t>(kv_type_row_bytes(v_type_, head_dim_));
    const auto num_rows = static_cast<size_t>(num_kv_heads_ * capacity);
    std::vector<uint8_t> k_cache(num_rows * k_row), v_cache(num_rows * v_row);
    // Slots never written hold rows of 1000.0: a key read from outside the visible range moves the result far.
    const std::vector<float> big(static_cast<size_t>(head_dim_), 1000.0f);
    for (size_t r = 0; r < num_rows; ++r) {
      host_kv_row_store(k_type_, big.data(), head_dim_, &k_cache[r * k_row]);
      host_kv_row_store(v_type_, big.data(), head_dim_, &v_cache[r * v_row]);
    }
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> k_src(static_cast<size_t>(head_dim_)), v_src(static_cast<size_t>(head_dim_));
    for (int32_t p = 0; p <= last_pos_; ++p)  // written in position order: the ring keeps the newest
      for (int64_t g = 0; g < num_kv_heads_; ++g) {
        for (int64_t d = 0; d < head_dim_; ++d) {
          k_src[d] = 2.0f * normal(rng);
          v_src[d] = normal(rng);
        }
        const auto r = static_cast<size_t>(g * capacity + p % capacity);
        host_kv_row_store(k_type_, k_src.data(), head_dim_, &k_cache[r * k_row]);
        host_kv_row_store(v_type_, v_src.data(), head_dim_, &v_cache[r * v_row]);
      }
    const std::vector<float> q = random_floats(num_tokens_ * num_heads_ * head_dim_, seed + 1, 2.0f);
    const std::vector<float> sinks = random_floats(num_heads_, seed + 2, 2.0f);
    std::vector<int32_t> positions(static_cast<size_t>(num_tokens_));
    for (int64_t t = 0; t < num_tokens_; ++t) positions[t] = last_pos_ - static_cast<int32_t>(num_tokens_ - 1 - t);

    const std::vector<float> expected = reference(q, k_cache, v_cache, sinks, positions, capacity, window);
    DeviceBuffer<uint8_t> d_k(k_cache), d_v(v_cache);
    DeviceBuffer<float> d_q(q), d_sinks(sinks), d_out(expected.size());
    DeviceBuffer<int32_t> d_pos(positions);
    d_out.fill_bytes(0xFF);
    const KvLayerView kv{d_k.get(), d_v.get(), capacity, window, k_type_, v_type_};
    const float* sinks_ptr = with_sinks_ ? d_sinks.get() : nullptr;
    if (prefill) {
      ASSERT_EQ(attention_prefill(d_q.get(), kv, sinks_ptr, num_tokens_, num_heads_, num_kv_heads_, head_dim_,
                                  d_pos.get(), d_out.get(), stream),
                cudaSuccess);
    } else {
      const int32_t max_pos = planned_max_pos_ >= 0 ? planned_max_pos_ : last_pos_;
      DeviceBuffer<float> scratch(static_cast<size_t>(attention_scratch_floats(
          num_tokens_, num_heads_, head_dim_, std::min<int64_t>(int64_t{max_pos} + 1, window))));
      ASSERT_EQ(attention_decode(d_q.get(), kv, sinks_ptr, num_tokens_, num_heads_, num_kv_heads_, head_dim_,
                                 d_pos.get(), max_pos, scratch.get(), d_out.get(), stream),
                cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    }
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_LT(nmse(expected, d_out.download()), kAttentionNmse);
  }

 private:
  std::vector<float> reference(const std::vector<float>& q, const std::vector<uint8_t>& k_cache,
                               const std::vector<uint8_t>& v_cache, const std::vector<float>& sinks,
                               const std::vector<int32_t>& positions, int32_t capacity, int32_t window) const {
    const auto k_row = static_cast<size_t>(kv_type_row_bytes(k_type_, head_dim_));
    const auto v_row = static_cast<size_t>(kv_type_row_bytes(v_type_, head_dim_));
    // Every row read back once, as the CPU cache's readers do: (kv_head, slot, head_dim) f32.
    const auto num_rows = static_cast<size_t>(num_kv_heads_ * capacity);
    std::vector<float> k_values(num_rows * head_dim_), v_values(num_rows * head_dim_);
    for (size_t r = 0; r < num_rows; ++r) {
      host_kv_row_load(k_type_, &k_cache[r * k_row], head_dim_, &k_values[r * head_dim_]);
      host_kv_row_load(v_type_, &v_cache[r * v_row], head_dim_, &v_values[r * head_dim_]);
    }
    std::vector<float> out(q.size());
    const int64_t group = num_heads_ / num_kv_heads_;
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    for (int64_t t = 0; t < num_tokens_; ++t)
      for (int64_t h = 0; h < num_heads_; ++h) {
        const int64_t g = h / group;
        const int64_t pos = positions[t];
        const int64_t num_keys = std::min<int64_t>(pos + 1, window);
        const float* qh = &q[(t * num_heads_ + h) * head_dim_];
        std::vector<double> s(static_cast<size_t>(num_keys));
        double max_s = with_sinks_ ? sinks[h] : -INFINITY;
        for (int64_t j = 0; j < num_keys; ++j) {
          const int64_t slot = (pos - num_keys + 1 + j) % capacity;
          double dot = 0.0;
          for (int64_t d = 0; d < head_dim_; ++d)
            dot += static_cast<double>(qh[d]) * k_values[(g * capacity + slot) * head_dim_ + d];
          s[j] = dot * scale;
          max_s = std::max(max_s, s[j]);
        }
        double z = with_sinks_ ? std::exp(sinks[h] - max_s) : 0.0;
        for (double& v : s) {
          v = std::exp(v - max_s);
          z += v;
        }
        for (int64_t d = 0; d < head_dim_; ++d) {
          double o = 0.0;
          for (int64_t j = 0; j < num_keys; ++j) {
            const int64_t slot = (pos - num_keys + 1 + j) % capacity;
            o += s[j] * v_values[(g * capacity + slot) * head_dim_ + d];
          }
          out[(t * num_heads_ + h) * head_dim_ + d] = static_cast<float>(o / z);
        }
      }
    return out;
  }

  int64_t num_heads_ = 64, num_kv_heads_ = 8, head_dim_ = 64, num_tokens_ = 1;
  int32_t last_pos_ = 0, window_ = 0, planned_max_pos_ = -1, spare_slots_ = 3;
  bool with_sinks_ = true;
  KvType k_type_ = KvType::kF16, v_type_ = KvType::kF16;
};

// Keys per query: 1, 5, 129 and 300 on full layers; on sliding layers (window 128) at most 128, the ring wrapping
// around for positions ≥ capacity.
TEST_F(CudaKernels, AttentionDecodeFullAndSlidingAcrossSplitsAndRingWrap) {
  for (int32_t last_pos : {0, 4, 128, 299})
    for (int32_t window : {0, 128})
      for (int64_t tokens : {1, 3}) {
        if (tokens > last_pos + 1) continue;
        AttentionTester().last_position(last_pos).window(window).tokens(tokens).test(stream_, false);
      }
}

TEST_F(CudaKernels, AttentionDecodeHeadDims32And128NoSinksAndUnderplannedPosition) {
  AttentionTester().heads(4, 2).head_dim(128).last_position(299).tokens(3).with_sinks(false).test(stream_, false);
  // head_dim 32: the tiny synthetic model (tests/data, hetmoe synth --preset tiny)
  AttentionTester().heads(8, 2).head_dim(32).last_position(299).tokens(3).window(128).test(stream_, false);
  AttentionTester().heads(8, 2).head_dim(32).last_position(140).test(stream_, false);
  // max_position 0 plans one split: the last split takes every key (300) and the result is unchanged.
  AttentionTester().last_position(299).planned_max_position(0).test(stream_, false);
}

TEST_F(CudaKernels, AttentionPrefillCausalAndSlidingMasks) {
  for (int32_t window : {0, 128})
    for (int64_t tokens : {1, 17, 130}) {
      // a batch starting at position 0, and one starting late enough that the sliding ring has wrapped
      AttentionTester().window(window).tokens(tokens).last_position(static_cast<int32_t>(tokens) - 1).test(stream_, true);
      AttentionTester().window(window).tokens(tokens).last_position(299).test(stream_, true);
    }
}

TEST_F(CudaKernels, AttentionPrefillHeadDims32And128AndNoSinks) {
  AttentionTester().heads(4, 1).head_dim(128).tokens(17).last_position(140).window(128).test(stream_, true);
  AttentionTester().heads(8, 2).head_dim(32).tokens(17).last_position(140).window(128).test(stream_, true);
  AttentionTester().heads(8, 2).head_dim(32).tokens(130).last_position(129).test(stream_, true);
  AttentionTester().tokens(9).last_position(20).with_sinks(false).test(stream_, true);
}

// ---- quantized KV cache (q8_0, q4_0) ------------------------------------------------------------------------------

constexpr KvType kAllKvTypes[] = {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0};

/// kv_store into a ring of `capacity` slots with K of k_type and V of v_type: the cache bytes must equal the CPU
/// cache's store (host_kv_row_store: cpu::quantize_kv_* or ref::f32_to_f16) of the same rows at slot pos % capacity,
/// bit for bit; slots not written keep their 0xAB fill.
void expect_kv_store_matches_cpu(cudaStream_t stream, KvType k_type, KvType v_type, int64_t kv_heads, int64_t head_dim,
                                 int32_t capacity, const std::vector<int32_t>& positions, uint32_t seed) {
  SCOPED_TRACE(std::string("K ") + kv_type_name(k_type) + " V " + kv_type_name(v_type) + " kv_heads " +
               std::to_string(kv_heads) + " head_dim " + std::to_string(head_dim) + " capacity " +
               std::to_string(capacity));
  const auto tokens = static_cast<int64_t>(positions.size());
  std::vector<float> k = random_floats(tokens * kv_heads * head_dim, seed, 3.0f);
  std::vector<float> v = random_floats(k.size(), seed + 1, 0.5f);
  // Blocks that stress the rounding rules (the first block of each row of token 0):
  //  K: all zero (d = 0, id = 0); V: |x| ties of opposite sign (q4_0: the first one sets the sign of d).
  //  Token 1's first K block: amax 127 (d = 1, id = 1) with halves (q8_0 rounds half away from zero: 0.5 → 1,
  //  −2.5 → −3); its first V block: x_max −8 (q4_0 d = 1, id = 1) with halves (x + 8.5 exact: truncation decides).
  for (int64_t g = 0; g < kv_heads; ++g) {
    float* k0 = &k[static_cast<size_t>(g * head_dim)];
    float* v0 = &v[static_cast<size_t>(g * head_dim)];
    for (int j = 0; j < 32; ++j) {
      k0[j] = 0.0f;
      v0[j] = (j % 2 == 0 ? 1.0f : -1.0f) * (j % 5 == 0 ? 2.0f : 0.25f * static_cast<float>(j % 4));
    }
    if (tokens > 1) {
      float* k1 = &k[static_cast<size_t>((kv_heads + g) * head_dim)];
      float* v1 = &v[static_cast<size_t>((kv_heads + g) * head_dim)];
      for (int j = 0; j < 32; ++j) {
        k1[j] = static_cast<float>(j % 7) - 3.5f;
        v1[j] = 0.5f * static_cast<float>(j % 9) - 2.0f;
      }
      k1[31] = 127.0f;
      v1[30] = -8.0f;
    }
  }
  const auto k_row = static_cast<size_t>(kv_type_row_bytes(k_type, head_dim));
  const auto v_row = static_cast<size_t>(kv_type_row_bytes(v_type, head_dim));
  const auto num_rows = static_cast<size_t>(kv_heads * capacity);
  DeviceBuffer<uint8_t> d_k(num_rows * k_row), d_v(num_rows * v_row);
  d_k.fill_bytes(0xAB);
  d_v.fill_bytes(0xAB);
  DeviceBuffer<float> d_kin(k), d_vin(v);
  DeviceBuffer<int32_t> d_pos(positions);
  const KvLayerView kv{d_k.get(), d_v.get(), capacity, capacity, k_type, v_type};
  ASSERT_EQ(kv_store(kv, d_kin.get(), d_vin.get(), tokens, kv_heads, head_dim, d_pos.get(), stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<uint8_t> expected_k(num_rows * k_row, 0xAB), expected_v(num_rows * v_row, 0xAB);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < kv_heads; ++g) {
      const auto r = static_cast<size_t>(g * capacity + positions[static_cast<size_t>(t)] % capacity);
      const auto src = static_cast<size_t>((t * kv_heads + g) * head_dim);
      host_kv_row_store(k_type, &k[src], head_dim, &expected_k[r * k_row]);
      host_kv_row_store(v_type, &v[src], head_dim, &expected_v[r * v_row]);
    }
  // Byte for byte; the first difference of each cache is named (row = kv_head · capacity + slot).
  const auto expect_same = [](const char* what, const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                              size_t row_bytes) {
    ASSERT_EQ(got.size(), want.size());
    size_t num_diff = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (got[i] != want[i] && num_diff++ == 0) first = i;
    EXPECT_EQ(num_diff, 0u) << what << ": first difference at byte " << first << " (row " << first / row_bytes
                            << ", byte " << first % row_bytes << " of the row): " << int{got[first]}
                            << ", the CPU's " << int{want[first]};
  };
  expect_same("K", d_k.download(), expected_k, k_row);
  expect_same("V", d_v.download(), expected_v, v_row);
}

// Every K/V type pair; head_dim 32 (a q4_0 row of 18 bytes: rows only 2-byte aligned), 64 and 128; 3 KV heads;
// positions that wrap the ring (capacity 7: 5 → 5, 6 → 6, 7 → 0, 8 → 1) and a single token.
TEST_F(CudaKernels, KvStoreQuantizesBlocksBitExactlyAsTheCpuCacheAtRingSlots) {
  for (KvType k_type : kAllKvTypes)
    for (KvType v_type : kAllKvTypes)
      for (int64_t head_dim : {32, 64, 128}) {
        expect_kv_store_matches_cpu(stream_, k_type, v_type, 3, head_dim, 7, {5, 6, 7, 8},
                                    static_cast<uint32_t>(head_dim) + 10 * static_cast<uint32_t>(k_type));
        expect_kv_store_matches_cpu(stream_, k_type, v_type, 1, head_dim, 3, {2}, 99);
      }
}

// gpt-oss-20b's shape (8 KV heads of 64) with a 64-token prefill batch into a ring of 191 slots from position 150:
// the grid-stride loop over 8 · 2 · 64 blocks, and the wrap in the middle of the batch.
TEST_F(CudaKernels, KvStoreQuantizedPrefillBatchAcrossTheRingWrap) {
  std::vector<int32_t> positions(64);
  std::iota(positions.begin(), positions.end(), 150);
  expect_kv_store_matches_cpu(stream_, KvType::kQ8_0, KvType::kQ8_0, 8, 64, 191, positions, 5);
  expect_kv_store_matches_cpu(stream_, KvType::kQ4_0, KvType::kQ8_0, 8, 64, 191, positions, 6);
}

TEST_F(CudaKernels, KvStoreRejectsQuantizedRowsOfPartialBlocks) {
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<int32_t> pos(std::vector<int32_t>{0});
  for (KvType type : {KvType::kQ8_0, KvType::kQ4_0}) {
    const KvLayerView k_quantized{buf.get(), buf.get(), 4, 4, type, KvType::kF16};
    EXPECT_EQ(kv_store(k_quantized, buf.get(), buf.get(), 1, 1, 48, pos.get(), stream_), cudaErrorInvalidValue);
    const KvLayerView v_quantized{buf.get(), buf.get(), 4, 4, KvType::kF16, type};
    EXPECT_EQ(kv_store(v_quantized, buf.get(), buf.get(), 1, 1, 48, pos.get(), stream_), cudaErrorInvalidValue);
  }
  const KvLayerView bad_type{buf.get(), buf.get(), 4, 4, static_cast<KvType>(7), KvType::kF16};
  EXPECT_EQ(kv_store(bad_type, buf.get(), buf.get(), 1, 1, 64, pos.get(), stream_), cudaErrorInvalidValue);
}

// Decode over q8_0 / q4_0 K and V (and mixed with f16): full layers with 1, 5, 129 (one past a 128-key split) and
// 300 keys (a count that is no multiple of 32, 64 or 128); sliding layers (window 128) at the window's edge — 127
// (the window not yet full), 128 (exactly full), 130 (the ring's last slot, capacity 131) and 131 (the ring wrapped,
// the first visible key at slot 1; capacities for one query token) — with and without sinks, 1 and 3 query tokens.
TEST_F(CudaKernels, AttentionDecodeQuantizedKvFullSlidingWindowEdgeAndRingWrap) {
  const std::pair<KvType, KvType> pairs[] = {{KvType::kQ8_0, KvType::kQ8_0}, {KvType::kQ4_0, KvType::kQ4_0},
                                             {KvType::kQ8_0, KvType::kQ4_0}, {KvType::kF16, KvType::kQ8_0}};
  for (const auto& [k_type, v_type] : pairs) {
    for (int32_t last_pos : {0, 4, 128, 299})
      AttentionTester().kv_types(k_type, v_type).last_position(last_pos).test(stream_, false);
    for (int32_t last_pos : {127, 128, 130, 131, 299})
      for (int64_t tokens : {1, 3})
        AttentionTester().kv_types(k_type, v_type).window(128).tokens(tokens).last_position(last_pos)
            .with_sinks(last_pos % 2 == 0).test(stream_, false);
  }
}

// head_dim 32 (one block per row; q4_0 rows of 18 bytes) and 128 (four blocks, 4 dims per lane), GQA groups of 1,
// 4 and 8, and the last split taking the keys past max_position.
TEST_F(CudaKernels, AttentionDecodeQuantizedKvHeadDims32And128AndUnderplannedPosition) {
  for (KvType type : {KvType::kQ8_0, KvType::kQ4_0}) {
    AttentionTester().kv_types(type, type).heads(4, 4).head_dim(128).last_position(299).tokens(3)
        .with_sinks(false).test(stream_, false);
    AttentionTester().kv_types(type, type).heads(8, 2).head_dim(32).last_position(299).tokens(3).window(128)
        .test(stream_, false);
    AttentionTester().kv_types(type, type).heads(8, 1).head_dim(32).last_position(140).test(stream_, false);
    AttentionTester().kv_types(type, type).last_position(299).planned_max_position(0).test(stream_, false);
  }
}

// Prefill over q8_0 / q4_0 K and V: batches of 1, 17 and 130 queries (tiles of 64 keys: 130 is no multiple) from
// position 0 and late enough that the sliding ring wrapped; a batch whose first query sits exactly at the window's
// edge (positions 128 .. 144: the first sees keys 1 .. 128); head_dim 32 and 128; no sinks.
TEST_F(CudaKernels, AttentionPrefillQuantizedKvCausalSlidingWindowEdgeAndHeadDims) {
  const std::pair<KvType, KvType> pairs[] = {{KvType::kQ8_0, KvType::kQ8_0}, {KvType::kQ4_0, KvType::kQ4_0},
                                             {KvType::kQ4_0, KvType::kQ8_0}};
  for (const auto& [k_type, v_type] : pairs) {
    for (int32_t window : {0, 128})
      for (int64_t tokens : {1, 17, 130}) {
        AttentionTester().kv_types(k_type, v_type).window(window).tokens(tokens)
            .last_position(static_cast<int32_t>(tokens) - 1).test(stream_, true);
        AttentionTester().kv_types(k_type, v_type).window(window).tokens(tokens).last_position(299).test(stream_, true);
      }
    AttentionTester().kv_types(k_type, v_type).window(128).tokens(17).last_position(144).spare_slots(0)
        .test(stream_, true);
    AttentionTester().kv_types(k_type, v_type).heads(4, 1).head_dim(128).tokens(17).last_position(140).window(128)
        .test(stream_, true);
    AttentionTester().kv_types(k_type, v_type).heads(8, 2).head_dim(32).tokens(17).last_position(140).window(128)
        .test(stream_, true);
    AttentionTester().kv_types(k_type, v_type).tokens(9).last_position(20).with_sinks(false).test(stream_, true);
  }
}

TEST_F(CudaKernels, AttentionRejectsAnUnknownKvType) {
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<int32_t> pos(4);
  const KvLayerView kv{buf.get(), buf.get(), 16, 16, KvType::kQ8_0, static_cast<KvType>(3)};
  EXPECT_EQ(attention_prefill(buf.get(), kv, nullptr, 1, 2, 1, 64, pos.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(attention_decode(buf.get(), kv, nullptr, 1, 2, 1, 64, pos.get(), 3, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
}

// The device cache's row sizes and block constants are the runtime's (kv_type.h) and the CPU cache's (kv_blocks.h),
// and f32 has no device type. No GPU needed.
TEST(CudaKvCacheLayout, RowBytesAndBlocksAreTheCpuCachesWithoutAGpu) {
  EXPECT_EQ(kKvQ8_0BlockBytes, cpu::kKvQ8_0BlockBytes);
  EXPECT_EQ(kKvQ4_0BlockBytes, cpu::kKvQ4_0BlockBytes);
  EXPECT_EQ(kKvBlockElems, cpu::kKvBlockElems);
  for (uint32_t head_dim : {32u, 64u, 96u, 128u, 256u}) {
    EXPECT_EQ(static_cast<uint64_t>(kv_type_row_bytes(KvType::kF16, head_dim)),
              kv_row_bytes(KvCacheType::kF16, head_dim));
    EXPECT_EQ(static_cast<uint64_t>(kv_type_row_bytes(KvType::kQ8_0, head_dim)),
              kv_row_bytes(KvCacheType::kQ8_0, head_dim));
    EXPECT_EQ(static_cast<uint64_t>(kv_type_row_bytes(KvType::kQ4_0, head_dim)),
              kv_row_bytes(KvCacheType::kQ4_0, head_dim));
  }
  EXPECT_EQ(*device_kv_type(KvCacheType::kF16), KvType::kF16);
  EXPECT_EQ(*device_kv_type(KvCacheType::kQ8_0), KvType::kQ8_0);
  EXPECT_EQ(*device_kv_type(KvCacheType::kQ4_0), KvType::kQ4_0);
  auto f32 = device_kv_type(KvCacheType::kF32);
  ASSERT_FALSE(f32.has_value());
  EXPECT_EQ(f32.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(f32.error().message.find("f32"), std::string::npos) << f32.error().message;
}

TEST_F(CudaKernels, AttentionRejectsUnsupportedHeadDim) {
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<int32_t> pos(4);
  const KvLayerView kv{buf.get(), buf.get(), 16, 16};
  EXPECT_EQ(attention_prefill(buf.get(), kv, nullptr, 1, 2, 1, 96, pos.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(attention_decode(buf.get(), kv, nullptr, 1, 2, 1, 48, pos.get(), 3, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(attention_decode(buf.get(), kv, nullptr, 1, 3, 2, 64, pos.get(), 3, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);  // 3 heads over 2 KV heads
}

// ---- MoE -------------------------------------------------------------------------------------------------------------

/// The experts of one layer: num_experts model experts, those with slot ≥ 0 resident in `slots` device slots.
/// Reference: runtime/exec/forward_reference.cpp moe_block with ref::dot_row, ref::swiglu_oai and the f32 weighted sum.
class MoeTester {
 public:
  MoeTester& type(TensorType t) { type_ = t; return *this; }
  MoeTester& dims(int64_t hidden, int64_t ffn) { hidden_dim_ = hidden; ffn_dim_ = ffn; return *this; }
  MoeTester& tokens(int64_t n) { num_tokens_ = n; return *this; }
  MoeTester& top_k(int64_t k) { top_k_ = k; return *this; }
  /// Every `stride`-th expert is resident (slot ≥ 0), the others are on another device (slot −1); 0: none is.
  MoeTester& resident_stride(int32_t s) { resident_stride_ = s; return *this; }
  /// Experts are drawn from the first `n` only (more than 32 pairs per expert: several row tiles per expert).
  MoeTester& draw_from(int32_t n) { draw_from_ = n; return *this; }
  MoeTester& accumulate(bool a) { accumulate_ = a; return *this; }

  void test(cudaStream_t stream, bool grouped) const {
    SCOPED_TRACE(std::string(grouped ? "grouped " : "decode ") + type_name(type_) + " hidden " +
                 std::to_string(hidden_dim_) + " ffn " + std::to_string(ffn_dim_) + " tokens " +
                 std::to_string(num_tokens_) + " top_k " + std::to_string(top_k_));
    constexpr int32_t kNumExperts = 32;
    std::vector<int32_t> slot_of_expert(kNumExperts, -1);
    int32_t num_slots = 0;
    for (int32_t e = 0; e < kNumExperts; ++e)
      if (resident_stride_ > 0 && e % resident_stride_ == 0) slot_of_expert[e] = num_slots++;
    const auto seed = static_cast<uint32_t>(hidden_dim_ + ffn_dim_ * 3 + num_tokens_ * 5 + (grouped ? 1 : 0));
    // std 1/sqrt(cols): gate and up values of order 1 (both sides of the SwiGLU clamp at 7 occur in the tails)
    const float w_std_in = 1.0f / std::sqrt(static_cast<float>(hidden_dim_));
    const float w_std_out = 1.0f / std::sqrt(static_cast<float>(ffn_dim_));
    const std::vector<uint8_t> gate = random_weights(type_, num_slots * ffn_dim_, hidden_dim_, seed, 2.0f * w_std_in);
    const std::vector<uint8_t> up = random_weights(type_, num_slots * ffn_dim_, hidden_dim_, seed + 1, 2.0f * w_std_in);
    const std::vector<uint8_t> down = random_weights(type_, num_slots * hidden_dim_, ffn_dim_, seed + 2, w_std_out);
    const std::vector<float> gate_bias = random_floats(num_slots * ffn_dim_, seed + 3, 0.5f);
    const std::vector<float> up_bias = random_floats(num_slots * ffn_dim_, seed + 4, 0.5f);
    const std::vector<float> down_bias = random_floats(num_slots * hidden_dim_, seed + 5, 0.5f);
    const std::vector<float> x = random_floats(num_tokens_ * hidden_dim_, seed + 6);
    const std::vector<float> out0 = random_floats(num_tokens_ * hidden_dim_, seed + 7);

    // top_k distinct experts per token (resident or not) and softmax-like weights
    std::mt19937 rng(seed + 8);
    std::vector<int32_t> ids(static_cast<size_t>(num_tokens_ * top_k_));
    std::vector<float> weights(ids.size());
    std::vector<int32_t> pool(static_cast<size_t>(draw_from_));
    for (int64_t t = 0; t < num_tokens_; ++t) {
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), rng);
      // the first choice resident, so that every token exercises the device experts
      const auto resident = std::find_if(pool.begin(), pool.end(), [&](int32_t e) { return slot_of_expert[e] >= 0; });
      if (resident != pool.end()) std::iter_swap(pool.begin(), resident);
      float sum = 0.0f;
      for (int64_t j = 0; j < top_k_; ++j) {
        ids[t * top_k_ + j] = pool[j];
        weights[t * top_k_ + j] = std::uniform_real_distribution<float>(0.1f, 1.0f)(rng);
        sum += weights[t * top_k_ + j];
      }
      for (int64_t j = 0; j < top_k_; ++j) weights[t * top_k_ + j] /= sum;
    }

    const std::vector<float> expected =
        reference(slot_of_expert, gate, up, down, gate_bias, up_bias, down_bias, x, ids, weights, out0);

    DeviceBuffer<uint8_t> d_gate(gate), d_up(up), d_down(down);
    DeviceBuffer<float> d_gb(gate_bias), d_ub(up_bias), d_db(down_bias), d_x(x), d_w(weights), d_out(out0);
    DeviceBuffer<int32_t> d_ids(ids), d_slots(slot_of_expert);
    DeviceBuffer<float> scratch(static_cast<size_t>(moe_scratch_floats(num_tokens_, top_k_, ffn_dim_, hidden_dim_)));
    scratch.fill_bytes(0xFF);
    ExpertWeights ew;
    ew.type = type_;
    ew.gate = d_gate.get();
    ew.up = d_up.get();
    ew.down = d_down.get();
    ew.gate_bias = d_gb.get();
    ew.up_bias = d_ub.get();
    ew.down_bias = d_db.get();
    ew.slot_of_expert = d_slots.get();
    ew.hidden_dim = hidden_dim_;
    ew.ffn_dim = ffn_dim_;
    if (grouped) {
      ASSERT_EQ(moe_experts_grouped(ew, d_x.get(), d_ids.get(), d_w.get(), num_tokens_, top_k_, kNumExperts,
                                    accumulate_, scratch.get(), d_out.get(), stream),
                cudaSuccess);
    } else {
      ASSERT_EQ(moe_experts_decode(ew, d_x.get(), d_ids.get(), d_w.get(), num_tokens_, top_k_, accumulate_,
                                   scratch.get(), d_out.get(), stream),
                cudaSuccess);
    }
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_LT(nmse(expected, d_out.download()), kF32AccumNmse);
  }

 private:
  std::vector<float> reference(const std::vector<int32_t>& slot_of_expert, const std::vector<uint8_t>& gate,
                               const std::vector<uint8_t>& up, const std::vector<uint8_t>& down,
                               const std::vector<float>& gate_bias, const std::vector<float>& up_bias,
                               const std::vector<float>& down_bias, const std::vector<float>& x,
                               const std::vector<int32_t>& ids, const std::vector<float>& weights,
                               const std::vector<float>& out0) const {
    const uint64_t in_row = tensor_row_bytes(type_, static_cast<uint64_t>(hidden_dim_));
    const uint64_t out_row = tensor_row_bytes(type_, static_cast<uint64_t>(ffn_dim_));
    std::vector<float> out(out0.size());
    std::vector<float> g(static_cast<size_t>(ffn_dim_)), u(g.size()), moe(static_cast<size_t>(hidden_dim_));
    for (int64_t t = 0; t < num_tokens_; ++t) {
      const float* xt = &x[t * hidden_dim_];
      std::fill(moe.begin(), moe.end(), 0.0f);
      for (int64_t j = 0; j < top_k_; ++j) {
        const int32_t slot = slot_of_expert[ids[t * top_k_ + j]];
        if (slot < 0) continue;
        for (int64_t r = 0; r < ffn_dim_; ++r) {
          const int64_t row = slot * ffn_dim_ + r;
          g[r] = ref::dot_row(type_, gate.data() + row * in_row, xt, hidden_dim_) + gate_bias[row];
          u[r] = ref::dot_row(type_, up.data() + row * in_row, xt, hidden_dim_) + up_bias[row];
        }
        ref::swiglu_oai(g.data(), u.data(), g.data(), ffn_dim_);
        for (int64_t r = 0; r < hidden_dim_; ++r) {
          const int64_t row = slot * hidden_dim_ + r;
          const float y = ref::dot_row(type_, down.data() + row * out_row, g.data(), ffn_dim_) + down_bias[row];
          moe[r] += weights[t * top_k_ + j] * y;
        }
      }
      for (int64_t r = 0; r < hidden_dim_; ++r)
        out[t * hidden_dim_ + r] = accumulate_ ? out0[t * hidden_dim_ + r] + moe[r] : moe[r];
    }
    return out;
  }

  TensorType type_ = TensorType::kMXFP4;
  int64_t hidden_dim_ = 96, ffn_dim_ = 64, num_tokens_ = 1, top_k_ = 4;
  int32_t resident_stride_ = 3, draw_from_ = 32;
  bool accumulate_ = false;
};

TEST_F(CudaKernels, MoeDecodeEveryTypeWithNonResidentExperts) {
  for (TensorType type : kAllTypes)
    for (int64_t tokens : {1, 3}) {
      MoeTester().type(type).dims(96, 64).tokens(tokens).test(stream_, false);
      MoeTester().type(type).dims(32, 96).tokens(tokens).accumulate(true).test(stream_, false);
    }
}

TEST_F(CudaKernels, MoeWithoutResidentExpertsWritesZerosOrKeepsOut) {
  for (bool grouped : {false, true})
    for (bool accumulate : {false, true})
      MoeTester().type(TensorType::kQ8_0).dims(64, 32).tokens(5).resident_stride(0).accumulate(accumulate).test(
          stream_, grouped);
}

TEST_F(CudaKernels, MoeRejectsBatchesPastGridLimitsAndMisalignedScratch) {
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<int32_t> ids(64);
  ExpertWeights ew;
  ew.type = TensorType::kMXFP4;
  ew.gate = ew.up = ew.down = buf.get();
  ew.slot_of_expert = ids.get();
  ew.hidden_dim = 64;
  ew.ffn_dim = 64;
  // 16385 tokens × 4 = 65540 pairs > 65535 blocks of gridDim.y: decode refuses, the grouped path is for that size
  EXPECT_EQ(moe_experts_decode(ew, buf.get(), ids.get(), buf.get(), 16385, 4, false, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(moe_experts_decode(ew, buf.get(), ids.get(), buf.get(), 1, 4, false, buf.get() + 1, buf.get(), stream_),
            cudaErrorInvalidValue);
  EXPECT_EQ(moe_experts_grouped(ew, buf.get(), ids.get(), buf.get(), 1, 4, 257, false, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
  ew.ffn_dim = 48;  // not a multiple of the 32-element block
  EXPECT_EQ(moe_experts_decode(ew, buf.get(), ids.get(), buf.get(), 1, 4, false, buf.get(), buf.get(), stream_),
            cudaErrorInvalidValue);
}

TEST_F(CudaKernels, MoeDecodeGptOssSizeMxfp4) {
  MoeTester().type(TensorType::kMXFP4).dims(2880, 2880).tokens(1).resident_stride(8).accumulate(true).test(stream_,
                                                                                                            false);
}

TEST_F(CudaKernels, MoeGroupedPartialTilesAndSeveralTilesPerExpert) {
  for (TensorType type : {TensorType::kMXFP4, TensorType::kQ8_0, TensorType::kF32}) {
    MoeTester().type(type).dims(96, 96).tokens(17).test(stream_, true);          // ffn 96: a partial 64-row tile
    MoeTester().type(type).dims(64, 32).tokens(3).top_k(1).test(stream_, true);  // a single pair per token
    // 100 tokens over 6 experts (2 resident): ~66 pairs per expert, three 32-pair tiles each, the last partial
    MoeTester().type(type).dims(96, 64).tokens(100).draw_from(6).accumulate(true).test(stream_, true);
  }
  MoeTester().type(TensorType::kBF16).dims(128, 160).tokens(9).resident_stride(1).test(stream_, true);
  MoeTester().type(TensorType::kF16).dims(128, 160).tokens(9).resident_stride(32).test(stream_, true);
}

// Float expert widths need only be multiples of 4: hidden 36 and ffn 100 end in a partial 32-column K step of the
// grouped GEMM (4 of 32 and 4 of 32 columns), which must read nothing past the row (compute-sanitizer would say) and
// count nothing from there.
TEST_F(CudaKernels, MoeGroupedFloatWidthsWithAPartialKStep) {
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
    MoeTester().type(type).dims(36, 100).tokens(11).test(stream_, true);
    MoeTester().type(type).dims(100, 36).tokens(5).accumulate(true).test(stream_, true);
    MoeTester().type(type).dims(36, 100).tokens(3).test(stream_, false);  // decode: the same widths
  }
}

TEST_F(CudaKernels, MoeGroupedGptOssSizeMxfp4) {
  // 9 tokens over experts 0–7: expert 0 (resident) is every token's first choice, the others are not resident
  MoeTester().type(TensorType::kMXFP4).dims(2880, 2880).tokens(9).resident_stride(8).draw_from(8).test(stream_, true);
}

}  // namespace
}  // namespace hetmoe::gpu

#else  // !HETMOE_HAVE_CUDA

namespace hetmoe::gpu {
namespace {

TEST(CudaKernels, SkippedWithoutCudaBuild) {
  ASSERT_FALSE(cuda_built());
  HETMOE_SKIP_WITHOUT_GPU();  // fails under HETMOE_REQUIRE_GPU=1
}

}  // namespace
}  // namespace hetmoe::gpu

#endif  // HETMOE_HAVE_CUDA
