// cuBLAS is opened at run time (gpu_kernels/cublas_library.h), not linked: a process that never creates a GPU pass
// does not map libcublas (about 170 MB of resident memory), a missing library is a clear error, and the library that
// the build found resolves every function hetmoe calls. None of this needs a GPU: dlopen of cuBLAS does not touch the
// device. In a build without CUDA every test skips.

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#if HETMOE_HAVE_CUDA
#include "gpu_kernels/cublas_library.h"
#endif

namespace {

std::string self_maps() {
  std::ifstream in("/proc/self/maps");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#if HETMOE_HAVE_CUDA

// Runs first in its process (gtest runs tests in file order; ctest starts a process per test): before anything asks
// for cuBLAS, the process has not mapped it.
TEST(CublasLibraryWithoutAGpu, ProcessDoesNotMapCublasUntilAsked) {
  const std::string maps = self_maps();
  EXPECT_EQ(maps.find("libcublas"), std::string::npos) << "libcublas is mapped at start-up (linked, not dlopened)";
}

TEST(CublasLibraryWithoutAGpu, MissingLibraryIsAnErrorNamingThePath) {
  auto lib = hetmoe::gpu::load_cublas("/nonexistent/libcublas.so.99");
  ASSERT_FALSE(lib);
  EXPECT_NE(lib.error().message.find("/nonexistent/libcublas.so.99"), std::string::npos) << lib.error().message;
  EXPECT_NE(lib.error().message.find("cannot load cuBLAS"), std::string::npos) << lib.error().message;
}

TEST(CublasLibraryWithoutAGpu, LibraryWithoutTheFunctionsIsAnErrorNamingTheFunction) {
  auto lib = hetmoe::gpu::load_cublas("libc.so.6");  // loads, but has no cuBLAS functions
  ASSERT_FALSE(lib);
  EXPECT_NE(lib.error().message.find("cublasCreate_v2"), std::string::npos) << lib.error().message;
}

TEST(CublasLibraryWithoutAGpu, ToolkitLibraryResolvesEveryFunctionAndIsMappedAfterwards) {
  auto lib = hetmoe::gpu::cublas_library();
  ASSERT_TRUE(lib) << lib.error().message;
  EXPECT_NE((*lib)->create, nullptr);
  EXPECT_NE((*lib)->destroy, nullptr);
  EXPECT_NE((*lib)->set_stream, nullptr);
  EXPECT_NE((*lib)->gemm_ex, nullptr);
  EXPECT_EQ(hetmoe::gpu::loaded_cublas(), *lib);
  EXPECT_NE(self_maps().find("libcublas"), std::string::npos);
}

#else

TEST(CublasLibraryWithoutAGpu, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
