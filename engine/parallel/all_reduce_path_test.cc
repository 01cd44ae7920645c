#include "engine/parallel/all_reduce_path.h"

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

TEST(AllReducePathTest, ParsesModes) {
  AllReduceMode m = AllReduceMode::kNccl;
  EXPECT_TRUE(ParseAllReduceMode("", AllReduceMode::kFused, &m));
  EXPECT_EQ(m, AllReduceMode::kFused);
  EXPECT_TRUE(ParseAllReduceMode("NCCL", AllReduceMode::kFused, &m));
  EXPECT_EQ(m, AllReduceMode::kNccl);
  EXPECT_TRUE(ParseAllReduceMode("oneshot", AllReduceMode::kFused, &m));
  EXPECT_EQ(m, AllReduceMode::kOneShot);
  EXPECT_TRUE(ParseAllReduceMode("fused", AllReduceMode::kNccl, &m));
  EXPECT_EQ(m, AllReduceMode::kFused);
  m = AllReduceMode::kOneShot;
  EXPECT_FALSE(ParseAllReduceMode("ring", AllReduceMode::kFused, &m));
  EXPECT_EQ(m, AllReduceMode::kOneShot);  // untouched
  for (AllReduceMode mode :
       {AllReduceMode::kNccl, AllReduceMode::kOneShot, AllReduceMode::kFused}) {
    AllReduceMode back = AllReduceMode::kNccl;
    EXPECT_TRUE(ParseAllReduceMode(AllReduceModeName(mode), AllReduceMode::kNccl, &back));
    EXPECT_EQ(back, mode);
  }
}

TEST(AllReducePathTest, OneShotOnlyWhenReadyAllowedAndTheMessageFits) {
  const uintptr_t aligned = 0x10000;
  const int64_t decode = 64 * 3584;  // a decode step's activations at batch 64
  EXPECT_TRUE(UseOneShotAllReduce(true, AllReduceMode::kFused, decode, aligned));
  EXPECT_TRUE(UseOneShotAllReduce(true, AllReduceMode::kOneShot, decode, aligned));
  EXPECT_FALSE(UseOneShotAllReduce(false, AllReduceMode::kFused, decode, aligned));
  EXPECT_FALSE(UseOneShotAllReduce(true, AllReduceMode::kNccl, decode, aligned));
  // Size limits: 2 MiB of bf16, a multiple of 8 elements, something to sum.
  EXPECT_TRUE(UseOneShotAllReduce(true, AllReduceMode::kFused, one_shot::kMaxBytes / 2, aligned));
  EXPECT_FALSE(
      UseOneShotAllReduce(true, AllReduceMode::kFused, one_shot::kMaxBytes / 2 + 8, aligned));
  EXPECT_FALSE(UseOneShotAllReduce(true, AllReduceMode::kFused, 8192 * 3584, aligned));  // prefill
  EXPECT_FALSE(UseOneShotAllReduce(true, AllReduceMode::kFused, 12, aligned));
  EXPECT_FALSE(UseOneShotAllReduce(true, AllReduceMode::kFused, 0, aligned));
  EXPECT_FALSE(UseOneShotAllReduce(true, AllReduceMode::kFused, decode, aligned + 8));
  // Every block's chunk fits a slot, and there is a slot per block.
  static_assert(one_shot::kChunkBytes <= one_shot::kSlotBytes);
  static_assert(one_shot::kMaxBytes / one_shot::kChunkBytes <= one_shot::kSlots);
  static_assert(one_shot::kSlots * 4 * one_shot::kMaxRanks <= one_shot::kSignalBytes);
}

TEST(AllReducePathTest, BuffersHoldEveryRanksPieceOfEverySlotTwice) {
  EXPECT_FALSE(one_shot::WorldSupported(1));
  EXPECT_TRUE(one_shot::WorldSupported(2));
  EXPECT_TRUE(one_shot::WorldSupported(4));
  EXPECT_TRUE(one_shot::WorldSupported(8));
  EXPECT_FALSE(one_shot::WorldSupported(16));
  EXPECT_EQ(one_shot::StagingBytes(2), size_t{2} * 2 * 256 * 16384);
  // Flags, the flag protocol's staging, the Lamport staging.
  EXPECT_EQ(one_shot::BufferBytes(2), one_shot::kSignalBytes + 2 * one_shot::StagingBytes(2));
  EXPECT_EQ(one_shot::BufferBytes(4) - one_shot::BufferBytes(2),
            size_t{2} * 2 * 2 * one_shot::kSlots * one_shot::kSlotBytes);
  // The uint64 maximum: kChunkBytes per block too, a slot per block.
  static_assert(one_shot::kMaxU64Count * 8 / one_shot::kChunkBytes <= one_shot::kSlots);
}

TEST(AllReducePathTest, MaximaOneShotUnlessNcclOrTooMany) {
  const uintptr_t a = 0x30000;
  EXPECT_TRUE(UseOneShotMaxU64(true, AllReduceMode::kFused, 64, a));
  EXPECT_TRUE(UseOneShotMaxU64(true, AllReduceMode::kOneShot, 1, a + 8));  // any count, 8-aligned
  EXPECT_TRUE(UseOneShotMaxU64(true, AllReduceMode::kFused, one_shot::kMaxU64Count, a));
  EXPECT_FALSE(UseOneShotMaxU64(true, AllReduceMode::kFused, one_shot::kMaxU64Count + 1, a));
  EXPECT_FALSE(UseOneShotMaxU64(true, AllReduceMode::kNccl, 64, a));
  EXPECT_FALSE(UseOneShotMaxU64(false, AllReduceMode::kFused, 64, a));
  EXPECT_FALSE(UseOneShotMaxU64(true, AllReduceMode::kFused, 0, a));
  EXPECT_FALSE(UseOneShotMaxU64(true, AllReduceMode::kFused, 64, a + 4));
}

TEST(AllReducePathTest, FusedNormOnlyInFusedModeForRowsAndWidthsThatFit) {
  const uintptr_t a = 0x20000;
  EXPECT_TRUE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 3584, a, a, a, a));
  EXPECT_TRUE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 256, 8192, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kOneShot, 64, 3584, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kNccl, 64, 3584, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(false, AllReduceMode::kFused, 64, 3584, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 257, 3584, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 0, 3584, a, a, a, a));
  EXPECT_FALSE(
      UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 8200, a, a, a, a));  // QwQ: 5120 fits
  EXPECT_TRUE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 5120, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 3580, a, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 3584, a + 4, a, a, a));
  EXPECT_FALSE(UseFusedAddRmsNorm(true, AllReduceMode::kFused, 64, 3584, a, a, a, a + 2));
}

}  // namespace
}  // namespace memshare::engine
