#include "gpu_kernels/cublas_library.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <atomic>
#include <mutex>

namespace hetmoe::gpu {
namespace {

template <typename Fn>
Status resolve(void* handle, const std::string& path, const char* symbol, Fn* out) {
  dlerror();
  void* sym = dlsym(handle, symbol);
  if (sym == nullptr) {
    const char* why = dlerror();
    return make_error(ErrorCode::kIo, fmt::format("{}: no function {} ({})", path, symbol,
                                                  why != nullptr ? why : "dlsym returned null"));
  }
  *out = reinterpret_cast<Fn>(sym);
  return {};
}

}  // namespace

Expected<CublasLibrary> load_cublas(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return make_error(ErrorCode::kIo,
                      fmt::format("cannot load cuBLAS from {}: {}", path, why != nullptr ? why : "dlopen failed"));
  }
  CublasLibrary lib;
  Status s = resolve(handle, path, "cublasCreate_v2", &lib.create);
  if (s) s = resolve(handle, path, "cublasDestroy_v2", &lib.destroy);
  if (s) s = resolve(handle, path, "cublasSetStream_v2", &lib.set_stream);
  if (s) s = resolve(handle, path, "cublasGemmEx", &lib.gemm_ex);
  if (!s) {
    dlclose(handle);
    return s.error();
  }
  return lib;  // the handle is kept open for the life of the process
}

namespace {
std::once_flag g_once;
Expected<CublasLibrary> g_loaded = make_error(ErrorCode::kIo, "cuBLAS not loaded");
std::atomic<bool> g_ready{false};
}  // namespace

Expected<const CublasLibrary*> cublas_library() {
  auto& loaded = g_loaded;
  std::call_once(g_once, [&] {
    const std::string soname = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
    loaded = load_cublas(soname);
#ifdef HETMOE_CUDA_LIBRARY_DIR
    if (!loaded) {
      const std::string in_toolkit = std::string(HETMOE_CUDA_LIBRARY_DIR) + "/" + soname;
      auto second = load_cublas(in_toolkit);
      if (second)
        loaded = std::move(second);
      else
        loaded = make_error(ErrorCode::kIo, fmt::format("{}; {} (install cuBLAS {} or add its folder to "
                                                        "LD_LIBRARY_PATH)",
                                                        loaded.error().message, second.error().message,
                                                        CUBLAS_VER_MAJOR));
    }
#endif
    g_ready.store(static_cast<bool>(loaded), std::memory_order_release);
  });
  if (!loaded) return loaded.error();
  return &*loaded;
}

const CublasLibrary* loaded_cublas() {
  return g_ready.load(std::memory_order_acquire) ? &*g_loaded : nullptr;
}

}  // namespace hetmoe::gpu
