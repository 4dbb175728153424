// Runtime choice of the kernel variant (no ISA flags in this TU). Features come from cpuid; the OS support for the
// YMM/ZMM register state from xgetbv (XCR0), as ggml-cpu's arch/x86/cpu-feats.cpp does: a CPU can report AVX-512
// while the OS does not save the ZMM state, and then the instructions fault.

#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include "cpu_kernels/kernels.h"
#include "cpu_kernels/kernels_variants.h"

#if defined(HETMOE_CPU_KERNELS_X86)
#include <cpuid.h>
#endif

namespace hetmoe::cpu {
namespace {

constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx2Vnni, Isa::kAvx512};

struct CpuFeatures {
  bool avx = false, avx2 = false, fma = false, f16c = false, avx_vnni = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
  bool avx512bf16 = false;
  bool avx512vbmi = false;
  bool os_ymm = false;  // XCR0 bits 1 and 2: SSE and AVX state
  bool os_zmm = false;  // XCR0 bits 1, 2 and 5..7: plus opmask, ZMM0-15 upper halves, ZMM16-31
};

#if defined(HETMOE_CPU_KERNELS_X86)
uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect_features() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  f.fma = (ecx >> 12) & 1;
  f.avx = (ecx >> 28) & 1;
  f.f16c = (ecx >> 29) & 1;
  const bool osxsave = (ecx >> 27) & 1;
  if (osxsave) {
    const uint64_t xcr0 = read_xcr0();
    f.os_ymm = (xcr0 & 0x06) == 0x06;
    f.os_zmm = (xcr0 & 0xE6) == 0xE6;
  }
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = (ebx >> 5) & 1;
    f.avx512f = (ebx >> 16) & 1;
    f.avx512dq = (ebx >> 17) & 1;
    f.avx512bw = (ebx >> 30) & 1;
    f.avx512vl = (ebx >> 31) & 1;
    f.avx512vbmi = (ecx >> 1) & 1;  // leaf 7.0 ECX bit 1
    f.avx512vnni = (ecx >> 11) & 1;
  }
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
    f.avx_vnni = (eax >> 4) & 1;    // leaf 7.1 EAX bit 4
    f.avx512bf16 = (eax >> 5) & 1;  // leaf 7.1 EAX bit 5
  }
  return f;
}
#else
CpuFeatures detect_features() { return {}; }
#endif

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect_features();
  return features;
}

/// ggml-style feature score: 0 if a required feature is missing (or the variant is not compiled), else a rank.
int isa_score(Isa isa, const CpuFeatures& f) {
  if (!isa_compiled(isa)) return 0;
  const bool avx2_ok = f.avx && f.avx2 && f.fma && f.f16c && f.os_ymm;
  switch (isa) {
    case Isa::kScalar:
      return 1;
    case Isa::kAvx2:
      return avx2_ok ? 2 : 0;
    case Isa::kAvx2Vnni:
      return avx2_ok && f.avx_vnni ? 3 : 0;
    case Isa::kAvx512:
      return avx2_ok && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.os_zmm ? 4 : 0;
  }
  return 0;
}

std::string isa_list(const std::vector<Isa>& isas) {
  std::string s;
  for (Isa isa : isas) {
    if (!s.empty()) s += ", ";
    s += isa_name(isa);
  }
  return s;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx2Vnni:
      return "avx2_vnni";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool isa_compiled(Isa isa) {
#if defined(HETMOE_CPU_KERNELS_X86)
  (void)isa;
  return true;
#else
  return isa == Isa::kScalar;
#endif
}

namespace {

/// A variant's table (kernels_<isa>.cpp) completed with its attention kernels (attention_<isa>.cpp); copies function
/// pointers only, no SIMD code runs.
template <const KernelTable& (*Base)(), void (*AddAttention)(KernelTable&)>
const KernelTable& complete_table() {
  static const KernelTable table = [] {
    KernelTable t = Base();
    AddAttention(t);
    return t;
  }();
  return table;
}

}  // namespace

const KernelTable& kernel_table(Isa isa) {
#if defined(HETMOE_CPU_KERNELS_X86)
  if (isa == Isa::kAvx2) return complete_table<detail::kernel_table_avx2, detail::add_attention_kernels_avx2>();
  if (isa == Isa::kAvx2Vnni)
    return complete_table<detail::kernel_table_avx2_vnni, detail::add_attention_kernels_avx2>();
  if (isa == Isa::kAvx512) {
    // The bf16 tile entries where the CPU has AVX512_BF16 and the MXFP4_R16 kernel with vpermb where it has
    // AVX512_VBMI (the AVX-512 variant itself needs neither).
    static const KernelTable table = [] {
      KernelTable t = detail::kernel_table_avx512();
      if (cpu_features().avx512bf16) detail::add_attention_kernels_avx512_with_bf16(t);
      else detail::add_attention_kernels_avx512(t);
      if (cpu_features().avx512vbmi) t.gemm_mxfp4_r16 = detail::gemm_mxfp4_r16_avx512vbmi;
      return t;
    }();
    return table;
  }
#endif
  (void)isa;
  return complete_table<detail::kernel_table_scalar, detail::add_attention_kernels_scalar>();
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : kAllIsas)
    if (isa_score(isa, cpu_features()) > 0) isas.push_back(isa);
  return isas;
}

Isa best_isa() {
  Isa best = Isa::kScalar;
  int best_score = 0;
  for (Isa isa : kAllIsas) {
    const int score = isa_score(isa, cpu_features());
    if (score > best_score) {
      best = isa;
      best_score = score;
    }
  }
  return best;
}

Expected<Isa> select_isa(const char* env_value, const std::vector<Isa>& supported) {
  if (supported.empty()) return make_error(ErrorCode::kInvalidArgument, "no supported CPU kernel variant");
  if (env_value == nullptr || *env_value == '\0') return supported.back();
  const std::string_view value(env_value);
  for (Isa isa : kAllIsas) {
    if (value != isa_name(isa)) continue;
    for (Isa s : supported)
      if (s == isa) return isa;
    return make_error(ErrorCode::kInvalidArgument, "HETMOE_ISA=" + std::string(value) +
                                                       ": this CPU or build cannot run it; supported: " +
                                                       isa_list(supported));
  }
  return make_error(ErrorCode::kInvalidArgument, "HETMOE_ISA=" + std::string(value) +
                                                     ": unknown ISA (expected scalar, avx2, avx2_vnni or avx512); "
                                                     "supported: " + isa_list(supported));
}

Expected<Isa> selected_isa() { return select_isa(std::getenv("HETMOE_ISA"), supported_isas()); }

namespace detail {

void* thread_scratch(uint64_t bytes) {
  struct AlignedFree {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t{64}); }
  };
  thread_local std::unique_ptr<void, AlignedFree> buffer;
  thread_local uint64_t capacity = 0;
  if (bytes > capacity) {
    buffer.reset();
    capacity = 0;
    void* p = ::operator new(static_cast<size_t>(bytes), std::align_val_t{64}, std::nothrow);
    if (p == nullptr) return nullptr;
    buffer.reset(p);
    capacity = bytes;
  }
  return buffer.get();
}

}  // namespace detail

}  // namespace hetmoe::cpu
