#include "kernels/matmul/matmul.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/dtype.h"
#include "kernels/matmul/matmul_internal.h"
#include "kernels/matmul/weight_packing.h"

namespace xpd::kernels {
namespace {

using matmul_internal::DefaultIsa;
using matmul_internal::DetectIsa;
using matmul_internal::Isa;
using matmul_internal::IsaName;
using matmul_internal::MatMulCpuIsa;

// Owns the storage behind a WeightMatrix view.
struct TestWeights {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> f8;
  std::vector<float> scales;
  PackedWeight packed;  // set when the view is packed (owns its data)
  WeightMatrix view;
};

TestWeights MakeWeights(DType dtype, int64_t n, int64_t k, uint32_t seed, int block_rows = 128,
                        int block_cols = 128) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  TestWeights t;
  t.view.dtype = dtype;
  t.view.rows = n;
  t.view.cols = k;
  switch (dtype) {
    case DType::kF32:
      t.f32.resize(n * k);
      for (float& v : t.f32) v = normal(rng);
      t.view.data = t.f32.data();
      break;
    case DType::kBF16:
      t.bf16.resize(n * k);
      for (uint16_t& v : t.bf16) v = F32ToBf16(normal(rng));
      t.view.data = t.bf16.data();
      break;
    case DType::kF8E4M3: {
      t.f8.resize(n * k);
      std::uniform_int_distribution<int> code(0, 255);
      for (uint8_t& v : t.f8) {
        int c;
        do c = code(rng);
        while ((c & 0x7f) == 0x7f);  // every finite code, subnormals included
        v = static_cast<uint8_t>(c);
      }
      t.view.data = t.f8.data();
      t.view.block_rows = block_rows;
      t.view.block_cols = block_cols;
      const int64_t grid = ((n + block_rows - 1) / block_rows) * t.view.scale_cols();
      std::uniform_real_distribution<float> scale(0.5f, 2.0f);
      t.scales.resize(grid);
      for (float& s : t.scales) s = scale(rng) / 256.0f;
      t.view.block_scales = t.scales.data();
      break;
    }
  }
  return t;
}

std::vector<float> RandomVector(int64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(size);
  for (float& e : v) e = normal(rng);
  return v;
}

std::vector<Isa> IsasToTest() {
  std::vector<Isa> isas = {Isa::kAvx2};
  if (DetectIsa() >= Isa::kAvx512) isas.push_back(Isa::kAvx512);
  if (DetectIsa() >= Isa::kAvx512Bf16) isas.push_back(Isa::kAvx512Bf16);
  return isas;
}

struct Case {
  DType dtype;
  Precision precision;
  bool packed = false;  // packed into tiles (BF16 and FP8 as the model loader does)
};
const Case kCases[] = {
    {DType::kF32, Precision::kF32},          {DType::kBF16, Precision::kF32},
    {DType::kF8E4M3, Precision::kF32},       {DType::kBF16, Precision::kBF16},
    {DType::kBF16, Precision::kF32, true},   {DType::kBF16, Precision::kBF16, true},
    {DType::kF32, Precision::kF32, true},    {DType::kF8E4M3, Precision::kF32, true},
    {DType::kF8E4M3, Precision::kBF16, true}};

TestWeights MakeCaseWeights(const Case& c, int64_t n, int64_t k, uint32_t seed,
                            int block_rows = 128, int block_cols = 128) {
  TestWeights t = MakeWeights(c.dtype, n, k, seed, block_rows, block_cols);
  if (c.packed) {
    absl::StatusOr<PackedWeight> packed = PackTiles(t.view);
    EXPECT_TRUE(packed.ok()) << packed.status();
    t.packed = *std::move(packed);
    t.view = t.packed.matrix;
  }
  return t;
}

std::string Describe(Isa isa, const Case& c, int64_t m, const WeightMatrix& w) {
  return std::string(IsaName(isa)) + (c.packed ? " packed " : " ") +
         std::string(DTypeName(c.dtype)) + (c.precision == Precision::kBF16 ? " kBF16" : " kF32") +
         " m=" + std::to_string(m) + " n=" + std::to_string(w.rows) +
         " k=" + std::to_string(w.cols) + " block=" + std::to_string(w.block_rows) + "x" +
         std::to_string(w.block_cols);
}

// Runs optimized and reference with the given layout and compares within
// f32 summation error: 1e-5 * sum |x| |w| per output.
void CheckAgainstReference(Isa isa, const Case& c, int64_t m, const WeightMatrix& w, int threads,
                           OutputMode mode, int64_t x_pad, int64_t y_pad) {
  const int64_t k = w.cols, n = w.rows;
  const int64_t xs = k + x_pad, ys = n + y_pad;
  const std::vector<float> x = RandomVector(std::max<int64_t>(1, m * xs), 7 + m);
  const std::vector<float> y0 = RandomVector(std::max<int64_t>(1, m * ys), 11 + m);
  std::vector<float> y_ref = y0, y_opt = y0;
  MatMulArgs args;
  args.x = x.data();
  args.x_stride = x_pad ? xs : 0;
  args.w = &w;
  args.m = m;
  args.y_stride = y_pad ? ys : 0;
  args.precision = c.precision;
  args.output = mode;
  args.y = y_ref.data();
  ASSERT_TRUE(MatMulReference(args).ok());
  args.y = y_opt.data();
  ThreadPool pool(threads);
  ASSERT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
  const std::string what = Describe(isa, c, m, w);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < ys; ++j) {
      const int64_t at = i * ys + j;
      if (j >= n) {  // padding between rows must be untouched
        ASSERT_EQ(std::memcmp(&y_opt[at], &y0[at], sizeof(float)), 0) << what;
        continue;
      }
      double scale = 0.0;
      for (int64_t q = 0; q < k; ++q) {
        const float xv =
            c.precision == Precision::kBF16 ? RoundToBf16(x[i * xs + q]) : x[i * xs + q];
        scale += std::fabs(static_cast<double>(xv) * w.At(j, q));
      }
      if (mode == OutputMode::kAccumulate) scale += std::fabs(y0[at]);
      ASSERT_NEAR(y_opt[at], y_ref[at], 1e-5 * scale + 1e-30) << what << " i=" << i << " j=" << j;
    }
  }
}

TEST(MatMulTest, MatchesReferenceOnOddShapes) {
  struct Shape {
    int64_t m, n, k;
  };
  // n covers every remainder modulo the tile widths (6 and 3), m every
  // remainder modulo 4, k multiples and non-multiples of 8/16/32; large k
  // exercises the split of k into cache chunks.
  const Shape shapes[] = {{1, 1, 1},     {1, 7, 13},   {1, 50, 300},  {2, 6, 16},     {2, 9, 77},
                          {3, 10, 40},   {4, 13, 129}, {5, 19, 200},  {16, 24, 64},   {37, 23, 257},
                          {3, 1, 1000},  {1, 29, 31},  {4, 11, 33},   {300, 17, 160}, {9, 7, 2500},
                          {6, 13, 4200}, {5, 70, 96},  {13, 100, 50}, {1, 64, 20}};
  for (Isa isa : IsasToTest()) {
    for (const Case& c : kCases) {
      for (const Shape& s : shapes) {
        const TestWeights w = MakeCaseWeights(c, s.n, s.k, 3);
        CheckAgainstReference(isa, c, s.m, w.view, 3, OutputMode::kOverwrite, 0, 0);
      }
    }
  }
}

TEST(MatMulTest, Fp8BlockShapes) {
  const int blocks[][2] = {{128, 128}, {16, 16}, {8, 24}, {5, 7}, {1, 300}};
  for (Isa isa : IsasToTest()) {
    for (bool packed : {false, true}) {
      const Case c = {DType::kF8E4M3, Precision::kF32, packed};
      for (const auto& b : blocks) {
        // n and k are not multiples of the block: partial edge blocks.
        const TestWeights w = MakeCaseWeights(c, 150, 290, 5, b[0], b[1]);
        for (int64_t m : {1, 3, 37}) {
          CheckAgainstReference(isa, c, m, w.view, 2, OutputMode::kOverwrite, 0, 0);
        }
      }
    }
  }
}

// Packed FP8 widens each weight to exactly WeightMatrix::At and then runs
// the F32 tiles' FMA chains: the same product with those values packed as
// F32 gives the same bits, in registers (m <= 16) and via a widened tile.
TEST(MatMulTest, PackedFp8EqualsItsValuesPackedAsF32) {
  for (Isa isa : IsasToTest()) {
    for (const auto& [block_rows, block_cols] : {std::pair{128, 128}, {16, 16}, {5, 7}}) {
      const TestWeights f8 = MakeCaseWeights({DType::kF8E4M3, Precision::kF32, true}, 70, 333, 43,
                                             block_rows, block_cols);
      TestWeights values = MakeWeights(DType::kF32, 70, 333, 1);
      for (int64_t r = 0; r < 70; ++r) {
        for (int64_t c = 0; c < 333; ++c) values.f32[r * 333 + c] = f8.view.At(r, c);
      }
      absl::StatusOr<PackedWeight> f32 = PackTiles(values.view);
      ASSERT_TRUE(f32.ok()) << f32.status();
      for (int64_t m : {1, 5, 16, 17, 40}) {
        const std::vector<float> x = RandomVector(m * 333, 47);
        auto run = [&](const WeightMatrix& w) {
          std::vector<float> y(m * 70);
          MatMulArgs args{.x = x.data(), .w = &w, .y = y.data(), .m = m};
          ThreadPool pool(2);
          EXPECT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
          return y;
        };
        EXPECT_EQ(run(f8.view), run(f32->matrix))
            << IsaName(isa) << " blocks " << block_rows << "x" << block_cols << " m=" << m;
      }
    }
  }
}

TEST(MatMulTest, AccumulateAndStrides) {
  for (Isa isa : IsasToTest()) {
    for (const Case& c : kCases) {
      const TestWeights w = MakeCaseWeights(c, 29, 145, 9, 16, 32);
      for (int64_t m : {1, 4, 9}) {
        CheckAgainstReference(isa, c, m, w.view, 3, OutputMode::kAccumulate, 0, 0);
        CheckAgainstReference(isa, c, m, w.view, 3, OutputMode::kOverwrite, 5, 3);
        CheckAgainstReference(isa, c, m, w.view, 1, OutputMode::kAccumulate, 7, 1);
      }
      // Enough rows and tiles for threads to claim tiles a few at a time
      // (packed), reading x rounded once for all of them.
      const TestWeights wide = MakeCaseWeights(c, 300, 145, 9, 16, 32);
      CheckAgainstReference(isa, c, 40, wide.view, 3, OutputMode::kAccumulate, 7, 1);
      CheckAgainstReference(isa, c, 40, wide.view, 2, OutputMode::kOverwrite, 0, 0);
    }
  }
}

TEST(MatMulTest, DefaultDispatchMatchesReference) {
  for (const Case& c : kCases) {
    const TestWeights w = MakeCaseWeights(c, 40, 333, 13);
    CheckAgainstReference(DefaultIsa(), c, 21, w.view, 2, OutputMode::kOverwrite, 0, 0);
    // The public entry point must pick the same path as DefaultIsa().
    const std::vector<float> x = RandomVector(21 * 333, 1);
    std::vector<float> a(21 * 40), b(21 * 40);
    MatMulArgs args;
    args.x = x.data();
    args.w = &w.view;
    args.m = 21;
    args.precision = c.precision;
    ThreadPool pool(2);
    args.y = a.data();
    ASSERT_TRUE(MatMulCpu(args, pool).ok());
    args.y = b.data();
    ASSERT_TRUE(MatMulCpuIsa(args, pool, DefaultIsa()).ok());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
}

// y[i][j] must be bitwise the same whatever m is, wherever the row sits and
// however many threads run: row alone (m = 1, 1 thread) vs inside batches.
TEST(MatMulTest, BatchInvariantBitwise) {
  // n = 70: packed weights span three tiles, the last one partial; n = 330:
  // eleven tiles, which threads claim a few at a time in big batches.
  // k = 2100 is split into cache chunks for big batches.
  const std::pair<int64_t, int64_t> sizes[] = {
      {29, 300}, {29, 2100}, {70, 300}, {70, 2100}, {330, 300}};
  for (const auto& [n, k] : sizes) {
    {
      for (Isa isa : IsasToTest()) {
        for (const Case& c : kCases) {
          const TestWeights w = MakeCaseWeights(c, n, k, 17);
          const std::vector<float> x = RandomVector(300 * k, 23);
          auto run = [&](const std::vector<float>& xs, int64_t m, int threads) {
            std::vector<float> y(m * n);
            MatMulArgs args;
            args.x = xs.data();
            args.w = &w.view;
            args.y = y.data();
            args.m = m;
            args.precision = c.precision;
            ThreadPool pool(threads);
            EXPECT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
            return y;
          };
          // Each of the first 37 rows alone.
          std::vector<std::vector<float>> alone(37);
          for (int64_t i = 0; i < 37; ++i) {
            alone[i] = run(std::vector<float>(x.begin() + i * k, x.begin() + (i + 1) * k), 1, 1);
          }
          const std::string what = Describe(isa, c, 37, w.view);
          for (int threads : {1, 2, 3}) {
            // In a batch of 37, in order.
            const std::vector<float> batch =
                run(std::vector<float>(x.begin(), x.begin() + 37 * k), 37, threads);
            // Reversed inside a batch of 300 (other positions, other tile shapes).
            std::vector<float> big(x);
            for (int64_t i = 0; i < 37; ++i) {
              std::copy(x.begin() + i * k, x.begin() + (i + 1) * k, big.begin() + (299 - i) * k);
            }
            const std::vector<float> big_y = run(big, 300, threads);
            for (int64_t i = 0; i < 37; ++i) {
              ASSERT_EQ(std::memcmp(alone[i].data(), &batch[i * n], n * sizeof(float)), 0)
                  << what << " threads=" << threads << " row " << i;
              ASSERT_EQ(std::memcmp(alone[i].data(), &big_y[(299 - i) * n], n * sizeof(float)), 0)
                  << what << " threads=" << threads << " row " << i << " at " << 299 - i;
            }
            // Small batches use the in-register widening path; check m = 2..5 too.
            for (int64_t m = 2; m <= 5; ++m) {
              const std::vector<float> small =
                  run(std::vector<float>(x.begin() + 10 * k, x.begin() + (10 + m) * k), m, threads);
              for (int64_t i = 0; i < m; ++i) {
                ASSERT_EQ(std::memcmp(alone[10 + i].data(), &small[i * n], n * sizeof(float)), 0)
                    << what << " m=" << m << " row " << i;
              }
            }
          }
        }
      }
    }
  }
}

// x_is_bf16 only skips rounding that would change nothing: x rounded by the
// caller gives the same bits with or without it, on every path.
TEST(MatMulTest, PreRoundedXSkipsRoundingWithTheSameResult) {
  for (Isa isa : IsasToTest()) {
    for (const Case& c : kCases) {
      if (c.precision != Precision::kBF16) continue;
      const TestWeights w = MakeCaseWeights(c, 300, 145, 31);
      for (int64_t m : {1, 5, 40}) {
        const std::vector<float> x = RandomVector(m * 150, 37);
        std::vector<float> rounded(x);
        for (float& v : rounded) v = RoundToBf16(v);
        for (int threads : {1, 2}) {
          auto run = [&](const std::vector<float>& xs, bool x_is_bf16) {
            std::vector<float> y(m * 300);
            MatMulArgs args{.x = xs.data(),
                            .x_stride = 150,
                            .w = &w.view,
                            .y = y.data(),
                            .m = m,
                            .precision = c.precision,
                            .x_is_bf16 = x_is_bf16};
            ThreadPool pool(threads);
            EXPECT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
            return y;
          };
          EXPECT_EQ(run(x, false), run(rounded, true))
              << Describe(isa, c, m, w.view) << " threads=" << threads;
        }
      }
    }
  }
}

// Packed weights: each output is one FMA chain over k, so the AVX2 and
// AVX-512 kernels must agree bit for bit (unlike the row-major kernels).
TEST(MatMulTest, PackedIsBitwiseTheSameOnEveryIsa) {
  if (DetectIsa() < Isa::kAvx512) GTEST_SKIP() << "needs AVX-512 to compare against AVX2";
  for (const Case& c :
       {Case{DType::kBF16, Precision::kF32, true}, Case{DType::kBF16, Precision::kBF16, true},
        Case{DType::kF8E4M3, Precision::kF32, true},
        Case{DType::kF8E4M3, Precision::kBF16, true}}) {
    const TestWeights w = MakeCaseWeights(c, 75, 333, 19);
    for (int64_t m : {1, 2, 3, 5, 13, 40}) {
      const std::vector<float> x = RandomVector(m * 333, 29);
      auto run = [&](Isa isa) {
        std::vector<float> y(m * 75);
        MatMulArgs args{
            .x = x.data(), .w = &w.view, .y = y.data(), .m = m, .precision = c.precision};
        ThreadPool pool(2);
        EXPECT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
        return y;
      };
      const std::vector<float> avx2 = run(Isa::kAvx2), avx512 = run(Isa::kAvx512);
      EXPECT_EQ(std::memcmp(avx2.data(), avx512.data(), avx2.size() * sizeof(float)), 0)
          << Describe(Isa::kAvx512, c, m, w.view);
    }
  }
}

TEST(WeightPackingTest, KeepsEveryValueAndZeroPadsTheLastTile) {
  for (int64_t n : {1, 16, 17, 32, 33, 70}) {
    const TestWeights f = MakeWeights(DType::kF32, n, 37, 37);
    absl::StatusOr<PackedWeight> f32 = PackTiles(f.view);
    ASSERT_TRUE(f32.ok()) << f32.status();
    EXPECT_EQ(f32->matrix.layout, WeightLayout::kF32Tiles32);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < 37; ++c) {
        ASSERT_EQ(f32->matrix.At(r, c), f.view.At(r, c)) << r << "," << c;
        // Row r of a tile is lane r of each column's line.
        ASSERT_EQ(static_cast<const float*>(f32->matrix.data)[((r / 32) * 37 + c) * 32 + r % 32],
                  f.f32[r * 37 + c]);
      }
    }
    EXPECT_EQ(StoredBytes(f32->matrix), (n + 31) / 32 * 32 * 37 * 4);

    const TestWeights w = MakeWeights(DType::kBF16, n, 37, 31);
    absl::StatusOr<PackedWeight> packed = PackTiles(w.view);
    ASSERT_TRUE(packed.ok()) << packed.status();
    const WeightMatrix& p = packed->matrix;
    EXPECT_EQ(p.layout, WeightLayout::kBf16Tiles32);
    EXPECT_EQ(p.rows, n);
    EXPECT_EQ(p.cols, 37);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < 37; ++c) ASSERT_EQ(p.At(r, c), w.view.At(r, c)) << r << "," << c;
    }
    const int64_t padded = (n + 31) / 32 * 32;
    EXPECT_EQ(StoredBytes(p), padded * 37 * 2);
    EXPECT_EQ(StoredBytes(w.view), n * 37 * 2);
    // Rows past n in the last tile read as zero (the layout's padding).
    WeightMatrix padded_view = p;
    padded_view.rows = padded;
    for (int64_t r = n; r < padded; ++r) {
      for (int64_t c = 0; c < 37; ++c) ASSERT_EQ(padded_view.At(r, c), 0.0f);
    }
    // Row r, column c sits where the layout comment says.
    const auto* words = static_cast<const uint16_t*>(p.data);
    const int64_t r = n - 1, c = 36;
    EXPECT_EQ(words[((r / 32) * 37 + c) * 32 + (r % 16) * 2 + (r % 32) / 16], w.bf16[r * 37 + c]);
  }
}

// FP8 keeps its codes (row r of a tile at byte r of each 32-byte line) and
// takes its scales along as scale lines: every finite code, scale blocks
// that do not divide the matrix, a partial last tile, and row slices.
TEST(WeightPackingTest, Fp8KeepsEveryCodeAndItsScale) {
  for (const auto& [block_rows, block_cols] : {std::pair{128, 128}, {5, 7}, {16, 16}}) {
    for (int64_t n : {3, 32, 70}) {
      TestWeights f8 = MakeWeights(DType::kF8E4M3, n, 45, 41, block_rows, block_cols);
      for (int64_t i = 0, code = 0; i < n * 45 && code < 256; ++i, ++code) {
        if ((code & 0x7f) == 0x7f) ++code;
        if (code < 256) f8.f8[i] = static_cast<uint8_t>(code);
      }
      absl::StatusOr<PackedWeight> packed = PackTiles(f8.view);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const WeightMatrix& p = packed->matrix;
      EXPECT_EQ(p.dtype, DType::kF8E4M3);
      EXPECT_EQ(p.layout, WeightLayout::kF8Tiles32);
      const int64_t tiles = (n + 31) / 32, scale_cols = (45 + block_cols - 1) / block_cols;
      EXPECT_EQ(StoredBytes(p), (tiles * 32 * 45 + 63) / 64 * 64 + tiles * scale_cols * 32 * 4);
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < 45; ++c) {
          ASSERT_EQ(std::bit_cast<uint32_t>(p.At(r, c)), std::bit_cast<uint32_t>(f8.view.At(r, c)))
              << "blocks " << block_rows << "x" << block_cols << " [" << r << ", " << c << "] code "
              << int{f8.f8[r * 45 + c]};
          ASSERT_EQ(static_cast<const uint8_t*>(p.data)[((r / 32) * 45 + c) * 32 + r % 32],
                    f8.f8[r * 45 + c]);
        }
      }
      // A slice from the second tile on reads the same values.
      if (n > 32) {
        const WeightMatrix slice = p.RowSlice(32, n - 32);
        for (int64_t r = 0; r < n - 32; ++r) {
          for (int64_t c = 0; c < 45; ++c) ASSERT_EQ(slice.At(r, c), p.At(32 + r, c));
        }
      }
    }
  }
}

TEST(WeightPackingTest, RejectsWhatItCannotPack) {
  TestWeights f8 = MakeWeights(DType::kF8E4M3, 4, 8, 1);
  f8.view.block_scales = nullptr;
  absl::StatusOr<PackedWeight> s = PackTiles(f8.view);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("F8_E4M3 matrix [4, 8] without block scales"),
            std::string::npos)
      << s.status();
  const TestWeights bf16 = MakeWeights(DType::kBF16, 4, 8, 1);
  absl::StatusOr<PackedWeight> once = PackTiles(bf16.view);
  ASSERT_TRUE(once.ok());
  s = PackTiles(once->matrix);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("already packed"), std::string::npos) << s.status();
  // E4M3 has no infinity; 0x7f and 0xff are NaN.
  for (uint8_t nan : {uint8_t{0x7f}, uint8_t{0xff}}) {
    TestWeights poisoned = MakeWeights(DType::kF8E4M3, 40, 70, 1);
    poisoned.f8[33 * 70 + 65] = nan;
    poisoned.f8[35 * 70 + 2] = nan;
    s = PackTiles(poisoned.view);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("F8_E4M3 matrix [40, 70] holds a NaN code at [33, 65]"),
              std::string::npos)
        << s.status();
  }
}

TEST(MatMulTest, EmptyDimensions) {
  for (Isa isa : IsasToTest()) {
    for (bool packed : {false, true}) {
      ThreadPool pool(2);
      // k = 0: y = 0 or unchanged
      const TestWeights w0 = MakeCaseWeights({DType::kBF16, Precision::kF32, packed}, 5, 0, 1);
      std::vector<float> x(1), y = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
      MatMulArgs args;
      args.x = x.data();
      args.w = &w0.view;
      args.y = y.data();
      args.m = 2;
      args.output = OutputMode::kAccumulate;
      ASSERT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
      EXPECT_EQ(y, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
      args.output = OutputMode::kOverwrite;
      ASSERT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
      EXPECT_EQ(y, std::vector<float>(10, 0.0f));
      args.m = 0;
      args.x = nullptr;
      args.y = nullptr;
      EXPECT_TRUE(MatMulCpuIsa(args, pool, isa).ok());
      EXPECT_TRUE(MatMulReference(args).ok());
    }
  }
}

TEST(MatMulTest, ValidationErrors) {
  const TestWeights bf16 = MakeWeights(DType::kBF16, 4, 8, 1);
  const TestWeights f8 = MakeWeights(DType::kF8E4M3, 4, 8, 1);
  const TestWeights f32 = MakeWeights(DType::kF32, 4, 8, 1);
  std::vector<float> x(64), y(64);
  auto base = [&] {
    MatMulArgs a;
    a.x = x.data();
    a.w = &bf16.view;
    a.y = y.data();
    a.m = 2;
    return a;
  };
  auto expect_invalid = [&](const MatMulArgs& a, const std::string& needle) {
    const absl::Status s = ValidateMatMulArgs(a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    ThreadPool pool(1);
    EXPECT_EQ(MatMulCpu(a, pool).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(MatMulReference(a).code(), absl::StatusCode::kInvalidArgument);
  };
  EXPECT_TRUE(ValidateMatMulArgs(base()).ok());
  MatMulArgs a = base();
  a.x = nullptr;
  expect_invalid(a, "x is null");
  a = base();
  a.y = nullptr;
  expect_invalid(a, "y is null");
  a = base();
  a.w = nullptr;
  expect_invalid(a, "w is null");
  a = base();
  a.m = -1;
  expect_invalid(a, "m = -1");
  a = base();
  a.x_stride = 7;
  expect_invalid(a, "x_stride 7 < k = 8");
  a = base();
  a.y_stride = 3;
  expect_invalid(a, "y_stride 3 < n = 4");
  WeightMatrix no_scales = f8.view;
  no_scales.block_scales = nullptr;
  a = base();
  a.w = &no_scales;
  expect_invalid(a, "without block_scales");
  WeightMatrix bad_block = f8.view;
  bad_block.block_cols = 0;
  a.w = &bad_block;
  expect_invalid(a, "not positive");
  bad_block = f8.view;
  bad_block.block_rows = -128;
  a.w = &bad_block;
  expect_invalid(a, "not positive");
  a = base();
  a.precision = Precision::kBF16;
  a.w = &f8.view;
  expect_invalid(a, "needs BF16 or packed F8_E4M3 weights, got F8_E4M3");
  a.w = &f32.view;
  expect_invalid(a, "needs BF16 or packed F8_E4M3 weights, got F32");
  WeightMatrix no_data = bf16.view;
  no_data.data = nullptr;
  a = base();
  a.w = &no_data;
  expect_invalid(a, "weight data is null");
  WeightMatrix packed_f32 = f32.view;
  packed_f32.layout = WeightLayout::kBf16Tiles32;
  a = base();
  a.w = &packed_f32;
  expect_invalid(a, "packed tiles need BF16 weights, got F32");
  WeightMatrix packed_bf16 = bf16.view;
  packed_bf16.layout = WeightLayout::kF32Tiles32;
  a.w = &packed_bf16;
  expect_invalid(a, "packed tiles need F32 weights, got BF16");
  WeightMatrix packed_f8 = bf16.view;
  packed_f8.layout = WeightLayout::kF8Tiles32;
  a.w = &packed_f8;
  expect_invalid(a, "packed tiles need F8_E4M3 weights, got BF16");
}

}  // namespace
}  // namespace xpd::kernels
