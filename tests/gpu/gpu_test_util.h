// Helpers of the GPU tests: device buffers, poisoning, random bf16 data and
// the relative-error measure METHOD.md asks for.
#ifndef MEMSHARE_TESTS_GPU_GPU_TEST_UTIL_H_
#define MEMSHARE_TESTS_GPU_GPU_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"

namespace memshare::testing {

#define ASSERT_CUDA(expr)                                                          \
  do {                                                                             \
    const cudaError_t err__ = (expr);                                              \
    ASSERT_EQ(err__, cudaSuccess) << #expr << ": " << cudaGetErrorString(err__); \
  } while (0)

// Owns one cudaMalloc allocation of `count` T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { Resize(count); }
  explicit DeviceBuffer(const std::vector<T>& host) {
    Resize(host.size());
    Upload(host);
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void Resize(size_t count) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = count;
    if (count > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, count * sizeof(T)), cudaSuccess);
    }
  }
  void Upload(const std::vector<T>& host) {
    ASSERT_LE(host.size(), count_);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }
  // Fills every byte with `byte`: 0xff makes every bf16 and fp32 a NaN.
  void Poison(int byte = 0xff) { EXPECT_EQ(cudaMemset(ptr_, byte, count_ * sizeof(T)), cudaSuccess); }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

inline std::vector<Bf16> RandomBf16(size_t n, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<Bf16> v(n);
  for (auto& x : v) x = FloatToBf16(normal(rng));
  return v;
}

inline std::vector<double> ToDouble(const std::vector<Bf16>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = Bf16ToFloat(v[i]);
  return d;
}

// ||got - ref|| / ||ref|| over the selected elements; +inf if any is NaN.
struct ErrorStats {
  double rel_l2 = 0;
  int64_t nan_count = 0;
  int64_t count = 0;
};

inline ErrorStats Compare(const std::vector<double>& got, const std::vector<double>& ref) {
  ErrorStats s;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (std::isnan(got[i]) || std::isinf(got[i])) {
      ++s.nan_count;
      continue;
    }
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
    ++s.count;
  }
  s.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (s.nan_count > 0) s.rel_l2 = INFINITY;
  return s;
}

}  // namespace memshare::testing

#endif  // MEMSHARE_TESTS_GPU_GPU_TEST_UTIL_H_
