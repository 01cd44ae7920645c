#include "bench/memshare_eval/config_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

TEST(ConfigSpecTest, ExpandsListsIntoTheCartesianProduct) {
  auto configs = ParseConfigSpecs("memshare=off; tau_kv=0.1,0.2,0.3 groups=1,4 ;");
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 7u);
  EXPECT_FALSE((*configs)[0].memshare);
  EXPECT_EQ((*configs)[0].name, "memshare=off");
  EXPECT_EQ((*configs)[0].tau_kv, std::nullopt);
  // Last key fastest.
  EXPECT_TRUE((*configs)[1].memshare);
  EXPECT_THAT((*configs)[1].tau_kv, Optional(0.1f));
  EXPECT_EQ((*configs)[1].layer_groups, 1);
  EXPECT_EQ((*configs)[2].layer_groups, 4);
  EXPECT_THAT((*configs)[6].tau_kv, Optional(0.3f));
  EXPECT_EQ((*configs)[6].layer_groups, 4);
  EXPECT_EQ((*configs)[6].name, "tau_kv=0.3 groups=4");
}

TEST(ConfigSpecTest, EveryKey) {
  auto configs = ParseConfigSpecs(
      "name=mine tau_lex=0.25 tau_kv=0.4 overlap=0.75 candidates=8 measure=any near_delay=24 "
      "shifted=off min_step=16 max_step=0 "
      "delims=\\n\\n|Let\\sme\\scheck groups=4 share=0+1");
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 1u);
  const EvalConfig& c = (*configs)[0];
  EXPECT_EQ(c.name, "mine");
  EXPECT_TRUE(c.memshare);
  EXPECT_THAT(c.tau_lex, Optional(0.25f));
  EXPECT_THAT(c.tau_kv, Optional(0.4f));
  EXPECT_THAT(c.min_block_token_overlap, Optional(0.75f));
  EXPECT_THAT(c.max_candidates_per_step, Optional(8));
  EXPECT_THAT(c.overlap_measure, Optional(kvmanager::OverlapMeasure::kAnySlots));
  EXPECT_THAT(c.near_match_delay_tokens, Optional(24));
  EXPECT_THAT(c.shifted_sharing, Optional(false));
  EXPECT_THAT(c.min_step_tokens, Optional(16));
  EXPECT_THAT(c.max_step_tokens, Optional(0));
  ASSERT_TRUE(c.delimiters.has_value());
  EXPECT_THAT(*c.delimiters, ElementsAre("\n\n", "Let me check"));
  EXPECT_EQ(c.layer_groups, 4);
  EXPECT_THAT(c.share_groups, ElementsAre(0, 1));
  // The description parses back to the same settings.
  auto again = ParseConfigSpecs(DescribeConfig(c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(DescribeConfig((*again)[0]), DescribeConfig(c));
  EXPECT_EQ((*again)[0].delimiters, c.delimiters);
}

TEST(ConfigSpecTest, DefaultsAreNamedMemshareOn) {
  auto configs = ParseConfigSpecs("memshare=on");
  ASSERT_TRUE(configs.ok());
  EXPECT_EQ((*configs)[0].name, "memshare=on");
  EXPECT_TRUE(ParseConfigSpecs("  ").value().empty());
}

TEST(ConfigSpecTest, ErrorsNameTheConfigAndKey) {
  auto expect_error = [](const std::string& spec, const std::string& text) {
    auto r = ParseConfigSpecs(spec);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(text)) << spec;
  };
  expect_error("memshare=off; tau_kv=x", "config 1: tau_kv");
  expect_error("tau_lex=1.5", "tau_lex");
  expect_error("overlap=0", "overlap");
  expect_error("candidates=0", "candidates");
  expect_error("bogus=1", "unknown key");
  expect_error("tau_kv", "expected key=value");
  expect_error("tau_kv=0.1 tau_kv=0.2", "set twice");
  expect_error("name=a,b", "cannot be a list");
  expect_error("groups=2 share=2", "group 2 of 2");
  expect_error("memshare=maybe", "on or off");
  expect_error("delims=a||b", "empty delimiter");
  expect_error("measure=some", "any or anchored");
  expect_error("near_delay=-1", "near_delay");
  expect_error("shifted=yes", "on or off");
}

}  // namespace
}  // namespace memshare::bench
