#include "kernels/core/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace xpd::kernels {
namespace {

// XCR0 via inline asm so this file needs no -mxsave; only called after
// CPUID reports OSXSAVE, otherwise the instruction would fault.
uint64_t ReadXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t{edx} << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  const unsigned max_leaf = eax;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx >> 27) & 1;
  const bool fma = (ecx >> 12) & 1;
  const bool f16c = (ecx >> 29) & 1;
  if (!osxsave) return f;  // the OS does not save vector state: nothing beyond SSE
  const uint64_t xcr0 = ReadXcr0();
  // The OS must save XMM+YMM (bits 1, 2) for AVX and, additionally, opmask,
  // ZMM_Hi256 and Hi16_ZMM (bits 5-7) for AVX-512; a CPU flag alone is not enough.
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  if (!os_avx || max_leaf < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned leaf7_max_subleaf = eax;
  f.avx2 = (ebx >> 5) & 1;
  f.fma = fma;
  f.f16c = f16c;
  if (os_avx512) {
    f.avx512f = (ebx >> 16) & 1;
    f.avx512dq = (ebx >> 17) & 1;
    f.avx512bw = (ebx >> 30) & 1;
    f.avx512vl = (ebx >> 31) & 1;
    if (leaf7_max_subleaf >= 1) {
      __cpuid_count(7, 1, eax, ebx, ecx, edx);
      f.avx512bf16 = (eax >> 5) & 1;
    }
  }
  // Test/ops override: cap at a lower ISA to exercise portable paths.
  if (const char* cap = std::getenv("XPD_CPU_ISA")) {
    if (std::strcmp(cap, "avx2") == 0) {
      f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512bf16 = false;
    } else if (std::strcmp(cap, "avx512") == 0) {
      f.avx512bf16 = false;
    }
  }
  return f;
}

}  // namespace

std::string CpuFeatures::Describe() const {
  std::string out;
  auto add = [&out](bool on, const char* name) {
    if (!on) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(HasAvx512(), "avx512");
  add(HasAvx512Bf16(), "avx512bf16");
  return out;
}

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace xpd::kernels
