// CpuBackend::MatMulGroup against one MatMulCpu call per product on a single
// thread: every way the group is split (decode-sized slices, whole products
// per thread, products over the whole pool) must give those results bit for
// bit, since matmul results never depend on m, blocking or threads.
#include "kernels/backend/backend.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/dtype.h"
#include "kernels/matmul/matmul.h"

namespace xpd::kernels {
namespace {

struct Product {
  std::vector<float> x;
  std::vector<uint16_t> w_bf16;
  WeightMatrix w;
  std::vector<float> y;
};

std::vector<Product> MakeProducts(const std::vector<int64_t>& rows, int64_t n, int64_t k,
                                  std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<Product> products(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    Product& p = products[i];
    p.x.resize(rows[i] * k);
    for (float& v : p.x) v = normal(rng);
    p.w_bf16.resize(n * k);
    for (uint16_t& v : p.w_bf16) v = F32ToBf16(normal(rng));
    p.w = {.dtype = DType::kBF16, .data = p.w_bf16.data(), .rows = n, .cols = k};
    p.y.assign(rows[i] * n, 0.0f);
  }
  return products;
}

std::vector<MatMulArgs> Args(std::vector<Product>& products, Precision precision) {
  std::vector<MatMulArgs> args;
  for (Product& p : products) {
    args.push_back({.x = p.x.data(),
                    .w = &p.w,
                    .y = p.y.data(),
                    .m = static_cast<int64_t>(p.x.size()) / p.w.cols,
                    .precision = precision});
  }
  return args;
}

void ExpectGroupMatchesOneByOne(const std::vector<int64_t>& rows, int64_t n, int64_t k) {
  std::mt19937 rng(static_cast<uint32_t>(rows.size() * 131 + n + k));
  std::vector<Product> grouped = MakeProducts(rows, n, k, rng);
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    std::vector<Product> single = grouped;
    for (Product& p : single) p.w.data = p.w_bf16.data();
    ThreadPool one(1);
    for (const MatMulArgs& args : Args(single, precision)) ASSERT_TRUE(MatMulCpu(args, one).ok());
    for (int threads : {2, 3}) {
      std::unique_ptr<Backend> backend = MakeCpuBackend(threads);
      const std::vector<MatMulArgs> args = Args(grouped, precision);
      ASSERT_TRUE(backend->MatMulGroup(args).ok());
      for (size_t i = 0; i < grouped.size(); ++i) {
        ASSERT_EQ(grouped[i].y, single[i].y)
            << "product " << i << " of " << rows.size() << ", threads " << threads;
      }
    }
  }
}

TEST(CpuBackendTest, DecodeSizedGroupMatchesOneByOne) {
  ExpectGroupMatchesOneByOne({1, 3, 1, 16, 2}, 200, 96);
}

TEST(CpuBackendTest, ManyPrefillSizedProductsRunWholeAndMatchOneByOne) {
  // Uneven rows, like routed experts in prefill: more products than threads.
  ExpectGroupMatchesOneByOne({48, 33, 70, 41, 90, 36, 52}, 64, 160);
}

TEST(CpuBackendTest, FewLargeProductsMatchOneByOne) {
  ExpectGroupMatchesOneByOne({64, 40}, 64, 160);
}

TEST(CpuBackendTest, GroupWithAnInvalidProductIsInvalidArgument) {
  std::mt19937 rng(3);
  std::vector<Product> products = MakeProducts({40, 40, 40, 40, 40}, 16, 32, rng);
  std::vector<MatMulArgs> args = Args(products, Precision::kF32);
  args[3].y = nullptr;
  std::unique_ptr<Backend> backend = MakeCpuBackend(2);
  EXPECT_EQ(backend->MatMulGroup(args).code(), absl::StatusCode::kInvalidArgument);
}

// Row-wise ops split over threads: every row, with strides, exactly as the
// reference backend computes it.
TEST(CpuBackendTest, RowWiseOpsSplitOverThreadsMatchTheReference) {
  const int64_t rows = 37, dim = 70, xs = 75, ys = 72;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(rows * xs), weight(dim);
  for (float& v : x) v = normal(rng);
  for (float& v : weight) v = normal(rng);
  std::unique_ptr<Backend> reference = MakeReferenceBackend(), cpu = MakeCpuBackend(3);
  auto run = [&](Backend& backend) {
    std::vector<float> normed(rows * ys, -1.0f), rounded(rows * ys, -1.0f);
    EXPECT_TRUE(backend
                    .RmsNorm({.x = x.data(),
                              .x_stride = xs,
                              .weight = weight.data(),
                              .y = normed.data(),
                              .y_stride = ys,
                              .rows = rows,
                              .dim = dim})
                    .ok());
    EXPECT_TRUE(backend
                    .RoundToBf16({.x = x.data(),
                                  .x_stride = xs,
                                  .y = rounded.data(),
                                  .y_stride = ys,
                                  .rows = rows,
                                  .dim = dim})
                    .ok());
    return std::make_pair(normed, rounded);
  };
  const auto want = run(*reference), got = run(*cpu);
  EXPECT_EQ(got.first, want.first);
  EXPECT_EQ(got.second, want.second);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      ASSERT_EQ(got.second[r * ys + i], RoundToBf16(x[r * xs + i])) << r << " " << i;
    }
    ASSERT_EQ(got.second[r * ys + dim], -1.0f) << "stride padding written in row " << r;
  }
}

}  // namespace
}  // namespace xpd::kernels
