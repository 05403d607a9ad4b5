// Run-time CPU feature detection: the default build targets AVX2 and picks
// wider paths only when the running CPU has them.
#pragma once

#include <string>

namespace xpd::kernels {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512bf16 = false;

  bool HasAvx512() const { return avx512f && avx512bw && avx512vl && avx512dq; }
  bool HasAvx512Bf16() const { return HasAvx512() && avx512bf16; }
  std::string Describe() const;  // e.g. "avx2 fma f16c avx512 avx512bf16"
};

// Detected once. XPD_CPU_ISA=avx2 in the environment caps detection at AVX2
// (to test the portable path on an AVX-512 machine).
const CpuFeatures& GetCpuFeatures();

}  // namespace xpd::kernels
