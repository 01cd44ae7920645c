#include "engine/backend_factory.h"

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

TEST(ParseDeviceKindTest, KnownNamesAndErrors) {
  EXPECT_EQ(*ParseDeviceKind("auto"), DeviceKind::kAuto);
  EXPECT_EQ(*ParseDeviceKind("CPU"), DeviceKind::kCpu);
  EXPECT_EQ(*ParseDeviceKind("cuda"), DeviceKind::kCuda);
  EXPECT_EQ(*ParseDeviceKind("gpu"), DeviceKind::kCuda);
  const absl::StatusOr<DeviceKind> bad = ParseDeviceKind("tpu");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--device"), absl::string_view::npos);
}

BackendOptions Golden(DeviceKind d) {
  BackendOptions o;
  o.device = d;
  o.model_dir = "tests/data/golden/llama_gqa";
  o.cpu_kv_cache_bytes = int64_t{1} << 20;
  o.cpu_threads = 1;
  o.max_num_seqs = 4;
  o.max_num_batched_tokens = 64;
  o.max_model_len = 128;
  o.num_blocks = 0;
  return o;
}

TEST(CreateBackendTest, CpuSizesThePoolFromBytes) {
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateBackend(Golden(DeviceKind::kCpu));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(dynamic_cast<cpu::CpuBackend*>(b->get()), nullptr);
  EXPECT_FALSE((*b)->SamplesOnDevice());
  // llama_gqa: 3 layers x 2 x 2 KV heads x 16 slots x 16 dims x 2 bytes.
  EXPECT_EQ((*b)->kv_spec().num_blocks, (1 << 20) / (3 * 2 * 2 * 16 * 16 * 2));
}

TEST(CreateBackendTest, AutoFollowsTheMachine) {
  absl::StatusOr<std::unique_ptr<Backend>> b = CreateBackend(Golden(DeviceKind::kAuto));
  ASSERT_TRUE(b.ok()) << b.status();
  const bool cpu = dynamic_cast<cpu::CpuBackend*>(b->get()) != nullptr;
  EXPECT_EQ(cpu, !CudaDeviceAvailable());
  EXPECT_EQ((*b)->SamplesOnDevice(), CudaDeviceAvailable());
}

TEST(CreateBackendTest, CudaWithoutDeviceFails) {
  if (CudaDeviceAvailable()) GTEST_SKIP() << "this machine has a CUDA device";
  EXPECT_EQ(CreateBackend(Golden(DeviceKind::kCuda)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(CreateBackendTest, BadModelDirNamesIt) {
  BackendOptions o = Golden(DeviceKind::kCpu);
  o.model_dir = "/nonexistent/model";
  const absl::Status s = CreateBackend(o).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/model"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace memshare::engine
