#include "engine/sampler/sampling_params.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

SamplingLimits Limits() {
  SamplingLimits limits;
  limits.vocab_size = 100;
  return limits;
}

absl::Status Check(const std::function<void(SamplingParams&)>& edit) {
  SamplingParams p;
  edit(p);
  return ValidateSamplingParams(p, Limits());
}

void ExpectRejected(const std::function<void(SamplingParams&)>& edit, const std::string& text) {
  const absl::Status s = Check(edit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(text));
}

TEST(ValidateSamplingParamsTest, DefaultsAndBoundariesPass) {
  EXPECT_TRUE(Check([](SamplingParams&) {}).ok());
  EXPECT_TRUE(Check([](SamplingParams& p) {
                p.temperature = 0;
                p.top_k = 1000000;
                p.top_p = 1;
                p.min_p = 1;
                p.repetition_penalty = 0.01f;
                p.presence_penalty = -2;
                p.frequency_penalty = 2;
                p.max_tokens = 1;
                p.stop = {"a", "\n\n"};
                p.stop_token_ids = {0, 99};
                p.logprobs = 20;
                p.seed = 0;
              }).ok());
}

TEST(ValidateSamplingParamsTest, NamesFieldAndValue) {
  const absl::Status s = Check([](SamplingParams& p) { p.temperature = -1; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "temperature: must be >= 0 and finite, got -1");
}

TEST(ValidateSamplingParamsTest, RejectsEachBadField) {
  const float nan = std::nanf("");
  const float inf = std::numeric_limits<float>::infinity();
  ExpectRejected([&](SamplingParams& p) { p.temperature = nan; }, "temperature: must be");
  ExpectRejected([&](SamplingParams& p) { p.temperature = inf; }, "temperature:");
  ExpectRejected([](SamplingParams& p) { p.top_k = -1; }, "top_k: must be >= 0");
  ExpectRejected([](SamplingParams& p) { p.top_p = 0; }, "top_p: must be in (0, 1], got 0");
  ExpectRejected([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p:");
  ExpectRejected([&](SamplingParams& p) { p.top_p = nan; }, "top_p: must be in (0, 1], got nan");
  ExpectRejected([](SamplingParams& p) { p.min_p = -0.1f; }, "min_p:");
  ExpectRejected([](SamplingParams& p) { p.min_p = 1.1f; }, "min_p:");
  ExpectRejected([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty:");
  ExpectRejected([&](SamplingParams& p) { p.repetition_penalty = inf; }, "repetition_penalty:");
  ExpectRejected([](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty:");
  ExpectRejected([](SamplingParams& p) { p.frequency_penalty = -3; }, "frequency_penalty:");
  ExpectRejected([&](SamplingParams& p) { p.frequency_penalty = nan; }, "frequency_penalty:");
  ExpectRejected([](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens: must be in [1, ");
  ExpectRejected([](SamplingParams& p) { p.stop = {"ok", ""}; }, "stop[1]: must be non-empty");
  ExpectRejected([](SamplingParams& p) { p.stop.assign(17, "x"); }, "stop: must be at most 16");
  ExpectRejected([](SamplingParams& p) { p.stop = {std::string(300, 'x')}; },
                 "stop[0]: must be at most 256 bytes");
  ExpectRejected(
      [](SamplingParams& p) {
        p.stop_token_ids = {5, 100};
      },
      "stop_token_ids[1]: must be in [0, 100), got 100");
  ExpectRejected([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "stop_token_ids[0]:");
  ExpectRejected([](SamplingParams& p) { p.stop_token_ids.assign(65, 1); }, "stop_token_ids:");
  ExpectRejected([](SamplingParams& p) { p.logprobs = 21; }, "logprobs: must be in [0, 20]");
  ExpectRejected([](SamplingParams& p) { p.logprobs = -1; }, "logprobs:");
}

TEST(ValidateSamplingParamsTest, LimitsComeFromTheServer) {
  SamplingLimits limits = Limits();
  limits.max_tokens_limit = 10;
  limits.max_logprobs = 5;
  SamplingParams p;
  p.max_tokens = 11;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, limits).message()),
              HasSubstr("max_tokens: must be in [1, 10], got 11"));
  p.max_tokens = 10;
  p.logprobs = 6;
  EXPECT_THAT(std::string(ValidateSamplingParams(p, limits).message()), HasSubstr("logprobs:"));
  p.logprobs = 5;
  EXPECT_TRUE(ValidateSamplingParams(p, limits).ok());
}

TEST(ValidateSamplingParamsTest, IsGreedy) {
  SamplingParams p;
  EXPECT_FALSE(IsGreedy(p));
  p.temperature = 0;
  EXPECT_TRUE(IsGreedy(p));
}

}  // namespace
}  // namespace memshare::engine
