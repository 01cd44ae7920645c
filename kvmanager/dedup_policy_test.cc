#include "kvmanager/dedup_policy.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

TEST(DedupPolicyTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateDedupPolicy({}, 1).ok());
  const ResolvedDedup r = *ResolveDedup({}, {});
  EXPECT_TRUE(r.enabled);
  EXPECT_FLOAT_EQ(r.tau_lex, 0.0f);
  EXPECT_FLOAT_EQ(r.tau_kv, 1.0f);
}

TEST(DedupPolicyTest, InvalidPoliciesNameTheirField) {
  auto message = [](DedupPolicy p, int groups = 2) {
    return std::string(ValidateDedupPolicy(p, groups).message());
  };
  DedupPolicy p;
  p.tau_lex = 1.5f;
  EXPECT_NE(message(p).find("dedup.tau_lex"), std::string::npos);
  p = {};
  p.min_tau_lex = 0.9f;  // looser bound above the default
  EXPECT_NE(message(p).find("dedup.min_tau_lex"), std::string::npos);
  p = {};
  p.tau_kv = -1;
  EXPECT_NE(message(p).find("dedup.tau_kv"), std::string::npos);
  p = {};
  p.max_tau_kv = 0.1f;
  EXPECT_NE(message(p).find("dedup.max_tau_kv"), std::string::npos);
  p = {};
  p.tau_kv = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(message(p).find("dedup.tau_kv"), std::string::npos);
  p = {};
  p.max_candidates_per_step = 0;
  EXPECT_NE(message(p).find("max_candidates_per_step"), std::string::npos);
  p = {};
  p.min_block_token_overlap = 0;
  EXPECT_NE(message(p).find("min_block_token_overlap"), std::string::npos);
  p = {};
  p.near_match_delay_tokens = -1;
  EXPECT_NE(message(p).find("dedup.near_match_delay_tokens"), std::string::npos);
  p = {};
  p.overlap_measure = static_cast<OverlapMeasure>(7);
  EXPECT_NE(message(p).find("dedup.overlap_measure"), std::string::npos);
  p = {};
  p.layer_groups = {0, 2};
  EXPECT_NE(message(p).find("dedup.layer_groups"), std::string::npos);
  p.layer_groups = {0, 1};
  EXPECT_TRUE(ValidateDedupPolicy(p, 2).ok());
}

TEST(DedupPolicyTest, RequestsOverrideWithinBounds) {
  DedupPolicy p;
  p.tau_lex = 0.5f;
  p.min_tau_lex = 0.2f;
  p.tau_kv = 0.2f;
  p.max_tau_kv = 0.5f;
  DedupParams r;
  r.mode = DedupMode::kOff;
  EXPECT_FALSE(ResolveDedup(p, r)->enabled);
  p.mode = DedupMode::kOff;
  r.mode = DedupMode::kMemShare;
  EXPECT_TRUE(ResolveDedup(p, r)->enabled);
  r = {};
  EXPECT_FALSE(ResolveDedup(p, r)->enabled);

  r.tau_lex = 0.9f;  // stricter: fine
  r.tau_kv = 0.05f;
  ResolvedDedup got = *ResolveDedup(p, r);
  EXPECT_FLOAT_EQ(got.tau_lex, 0.9f);
  EXPECT_FLOAT_EQ(got.tau_kv, 0.05f);
  r.tau_lex = 0.2f;  // loosest allowed
  r.tau_kv = 0.5f;
  EXPECT_TRUE(ResolveDedup(p, r).ok());

  r.tau_lex = 0.1f;
  absl::Status s = ResolveDedup(p, r).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("memshare.tau_lex"), std::string::npos);
  r.tau_lex.reset();
  r.tau_kv = 0.6f;
  s = ResolveDedup(p, r).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("memshare.tau_kv"), std::string::npos);
  r.tau_kv = -0.1f;
  EXPECT_TRUE(absl::IsInvalidArgument(ResolveDedup(p, r).status()));
}

TEST(DedupPolicyTest, AcceptsOnlyWhenBothKAndVPass) {
  // relative = sqrt(diff / norm)
  EXPECT_TRUE(AcceptPair({0.04, 1, 0.01, 1}, 0.2f));    // 0.2, 0.1
  EXPECT_FALSE(AcceptPair({0.0441, 1, 0.0, 1}, 0.2f));  // K 0.21
  EXPECT_FALSE(AcceptPair({0.0, 1, 0.09, 1}, 0.2f));    // V 0.3
  EXPECT_TRUE(AcceptPair({0, 0, 0, 0}, 0.0f));          // two zero blocks
  EXPECT_FALSE(AcceptPair({1, 0, 0, 1}, 0.5f));         // zero reference: inf
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(AcceptPair({nan, 1, 0, 1}, 0.5f));
}

}  // namespace
}  // namespace memshare::kvmanager
