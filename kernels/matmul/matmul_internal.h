// Private hooks of MatMulCpu for tests and benchmarks (forcing a SIMD level).
// Not part of the public contract.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/thread_pool.h"
#include "kernels/matmul/matmul.h"
#include "kernels/matmul/matmul_tiles.h"

namespace xpd::kernels::matmul_internal {

// SIMD level of the optimized path, ordered from narrowest to widest.
enum class Isa : uint8_t { kAvx2, kAvx512, kAvx512Bf16 };

// The widest level the running CPU (after XPD_CPU_ISA) supports.
Isa DetectIsa();
// The level MatMulCpu uses: DetectIsa() capped at kAvx512 unless the
// environment sets XPD_MATMUL_BF16=dot. kAvx512Bf16 only changes kBF16
// precision on row-major BF16 weights (vdpbf16ps instead of widening to f32 +
// FMA; packed weights always take the FMA path); on the Sapphire
// Rapids VM this was tuned on, vdpbf16ps ran 10-15% slower than the FMA path,
// and unlike it flushes denormals. Read once, so a process never mixes paths.
Isa DefaultIsa();
const char* IsaName(Isa isa);

// MatMulCpu with the SIMD level capped at `isa` (and at what the CPU supports).
// Within one level, results are bitwise independent of m, row position and
// thread count; different levels may differ in the last bits.
absl::Status MatMulCpuIsa(const MatMulArgs& args, ThreadPool& pool, Isa isa);

}  // namespace xpd::kernels::matmul_internal
