#include "engine/server/flag_spelling.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Normalize(std::vector<const char*> args) {
  return UnderscoreFlagNames(static_cast<int>(args.size()), args.data());
}

TEST(FlagSpellingTest, DashedNamesBecomeUnderscoredValuesStay) {
  EXPECT_THAT(Normalize({"memshare_worker", "--group-leader=host-a:29500", "--world-size", "2",
                         "--rank=1", "-max-num-seqs=4", "--model=/m/qwen-7b"}),
              ElementsAre("memshare_worker", "--group_leader=host-a:29500", "--world_size", "2",
                          "--rank=1", "-max_num_seqs=4", "--model=/m/qwen-7b"));
}

TEST(FlagSpellingTest, LeavesPositionalsNumbersAndEverythingAfterDoubleDash) {
  EXPECT_THAT(Normalize({"w", "-5", "a-b", "--", "--not-a-flag"}),
              ElementsAre("w", "-5", "a-b", "--", "--not-a-flag"));
  EXPECT_THAT(Normalize({"w-bin", "--"}), ElementsAre("w-bin", "--"));
}

}  // namespace
}  // namespace memshare::engine
