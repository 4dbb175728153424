#pragma once
// cuBLAS loaded at run time (dlopen) rather than linked: libcublas and libcublasLt add about 170 MB to the resident
// set of every process that links them, CPU-only runs included, although only a GPU pass's prefill GEMM uses them.
// The library is opened the first time a GPU pass asks for it; the few functions hetmoe calls are resolved then.

#include <cublas_v2.h>

#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::gpu {

/// The cuBLAS functions hetmoe calls (cublas_v2.h's signatures), resolved from one loaded library.
struct CublasLibrary {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  // cublasGemmEx with a cublasComputeType_t (C++ also sees an inline overload taking a cudaDataType).
  using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                    const void*, cudaDataType, int, const void*, cudaDataType, int, const void*,
                                    void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  GemmEx gemm_ex = nullptr;
};

/// Opens `path` (a file name, searched as dlopen searches, or a path) and resolves CublasLibrary's functions.
/// Errors: kIo naming the library and dlerror's reason when it cannot be opened or lacks a function.
/// The library stays loaded for the life of the process.
Expected<CublasLibrary> load_cublas(const std::string& path);

/// The process's cuBLAS, loaded once (thread-safe): libcublas.so.<major of the headers compiled against>, then the
/// same file in the CUDA toolkit's library folder of the build. Errors: load_cublas's, naming both places tried and
/// suggesting LD_LIBRARY_PATH. The error is remembered: later calls answer it without retrying.
Expected<const CublasLibrary*> cublas_library();

/// cublas_library()'s functions when it has loaded them, else nullptr (never loads).
const CublasLibrary* loaded_cublas();

}  // namespace hetmoe::gpu
