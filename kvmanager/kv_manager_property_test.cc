// Property test: thousands of random operation sequences over KvManager
// (admit, append, forward + commit, fork, free, dedup with whole-block
// remaps and shifted views, prefix-cache reset, pool flood, refused calls;
// see testing/kv_op_harness.h), with every
// invariant checked after every operation, in every configuration the
// fuzzer can pick (1-3 layer groups, block size 2/4/8, prefix cache on/off,
// 24-104 blocks).
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kvmanager/testing/kv_op_harness.h"

namespace memshare::kvmanager::testing {
namespace {

constexpr int kSequences = 3000;
constexpr int kBytesPerSequence = 600;

TEST(KvManagerPropertyTest, InvariantsHoldAfterEveryOperation) {
  std::mt19937_64 rng(20261127);
  KvOpHarness::Coverage total;
  for (int i = 0; i < kSequences; ++i) {
    const auto config = KvOpHarness::ConfigFromByte(static_cast<uint8_t>(rng()));
    absl::StatusOr<std::unique_ptr<KvOpHarness>> harness = KvOpHarness::Create(config);
    ASSERT_TRUE(harness.ok()) << harness.status();
    std::vector<uint8_t> bytes(kBytesPerSequence);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    const absl::Status status = (*harness)->Run(bytes);
    ASSERT_TRUE(status.ok()) << "sequence " << i << " (groups " << config.num_layer_groups
                             << ", block size " << config.block_size << ", blocks "
                             << config.num_blocks << ", prefix cache " << config.prefix_cache
                             << "): " << status;
    total += (*harness)->coverage();
  }
  std::printf(
      "%lld operations in %d sequences: %lld refused for exhaustion, %lld forks, %lld frees "
      "(%lld of sequences sharing blocks with themselves), %lld copy-on-write copies, %lld "
      "prefix-cache hits, %lld evictions, %lld steps deduplicated, %lld block pairs verified, "
      "%lld remaps (%lld shifted views; %lld frees of sequences holding views)\n",
      static_cast<long long>(total.ops), kSequences, static_cast<long long>(total.exhausted),
      static_cast<long long>(total.forks), static_cast<long long>(total.frees),
      static_cast<long long>(total.frees_with_self_shared),
      static_cast<long long>(total.cow_copies), static_cast<long long>(total.prefix_hits),
      static_cast<long long>(total.evictions), static_cast<long long>(total.dedup_steps),
      static_cast<long long>(total.dedup_candidates), static_cast<long long>(total.remaps),
      static_cast<long long>(total.shifted_remaps), static_cast<long long>(total.frees_with_views));
  // The alphabet must reach every awkward case, or the test proves little.
  EXPECT_GT(total.exhausted, 0);
  EXPECT_GT(total.forks, 0);
  EXPECT_GT(total.cow_copies, 0);
  EXPECT_GT(total.prefix_hits, 0);
  EXPECT_GT(total.evictions, 0);
  EXPECT_GT(total.remaps, 0);
  EXPECT_GT(total.frees_with_self_shared, 0);
  EXPECT_GT(total.shifted_remaps, 0);
  EXPECT_GT(total.remaps, total.shifted_remaps);  // whole-block remaps too
  EXPECT_GT(total.frees_with_views, 0);
}

}  // namespace
}  // namespace memshare::kvmanager::testing
