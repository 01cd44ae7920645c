#include "bench/memshare_eval/heldout.h"

#include <cstdio>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::bench {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

TEST(ParseFinalAnswerTest, TakesTheLastMatchLikeDatagen) {
  EXPECT_THAT(ParseFinalAnswer("So the answer is 87.\n</think>\n\nFinal answer: 87"), Optional(87));
  EXPECT_THAT(ParseFinalAnswer("Final answer: 3\nFinal answer:\n  -12 cups"), Optional(-12));
  // A failed match does not hide an earlier good one.
  EXPECT_THAT(ParseFinalAnswer("Final answer: 5. Final answer: none"), Optional(5));
  EXPECT_EQ(ParseFinalAnswer("Final answer is 5"), std::nullopt);
  EXPECT_EQ(ParseFinalAnswer("final answer: 5"), std::nullopt);  // case-sensitive
  EXPECT_EQ(ParseFinalAnswer("Final answer: -"), std::nullopt);
  EXPECT_EQ(ParseFinalAnswer(""), std::nullopt);
  EXPECT_THAT(ParseFinalAnswer("Final answer:007"), Optional(7));
  EXPECT_EQ(ParseFinalAnswer("Final answer: 99999999999999999999"), std::nullopt);
  EXPECT_THAT(ParseFinalAnswer("Final answer: -9223372036854775808"),
              Optional(std::numeric_limits<int64_t>::min()));
}

TEST(LoadHeldoutTest, ReadsTheBundledSet) {
  auto all = LoadHeldout("tests/data/tiny_reasoner/heldout.jsonl", 0);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 600u);
  EXPECT_EQ((*all)[0].id, 0);
  EXPECT_EQ((*all)[0].answer, 87);
  EXPECT_THAT((*all)[0].problem, HasSubstr("Emma starts with 21 cups."));
  auto some = LoadHeldout("tests/data/tiny_reasoner/heldout.jsonl", 5);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->size(), 5u);
  EXPECT_EQ((*some)[4].id, 4);
}

TEST(LoadHeldoutTest, ErrorsNameTheFileAndLine) {
  EXPECT_EQ(LoadHeldout("no/such/file.jsonl", 0).status().code(), absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/bad.jsonl";
  {
    std::ofstream out(path);
    out << R"({"id": 1, "problem": "p", "answer": 3})"
        << "\n"
        << R"({"id": 2, "problem": "p"})"
        << "\n";
  }
  auto r = LoadHeldout(path, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("bad.jsonl:2"));
  EXPECT_TRUE(LoadHeldout(path, 1).ok());  // the bad line is past the limit
}

}  // namespace
}  // namespace memshare::bench
