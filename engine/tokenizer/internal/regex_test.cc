#include "engine/tokenizer/internal/regex.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

std::vector<std::string> Matches(const Regex& re, const std::string& text) {
  std::vector<std::pair<size_t, size_t>> m;
  EXPECT_TRUE(re.FindAll(text, &m).ok());
  std::vector<std::string> out;
  for (auto [b, e] : m) out.push_back(text.substr(b, e - b));
  return out;
}

TEST(RegexTest, QwenPatternAsWritten) {
  auto re = Regex::Create(
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_EQ(Matches(**re, "Hello  world's 42!\n\n"),
            (std::vector<std::string>{"Hello", " ", " world", "'s", " ", "4", "2", "!\n\n"}));
  // Unicode letters (UCP): CJK and accented words stay whole.
  EXPECT_EQ(Matches(**re, "caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD"),
            (std::vector<std::string>{"caf\xC3\xA9", " \xE4\xBD\xA0\xE5\xA5\xBD"}));
  // (?i:...) is case-insensitive.
  EXPECT_EQ(Matches(**re, "IT'LL"), (std::vector<std::string>{"IT", "'LL"}));
}

TEST(RegexTest, LongWhitespaceRunDoesNotFail) {
  auto re = Regex::Create(R"(\s+(?!\S)|\s+)");
  ASSERT_TRUE(re.ok());
  const std::string text = std::string(200000, ' ') + "x";
  std::vector<std::pair<size_t, size_t>> m;
  ASSERT_TRUE((*re)->FindAll(text, &m).ok());
  // The lookahead leaves the last space to the second alternative.
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].second, 199999u);
  EXPECT_EQ(m[1].second, 200000u);
}

TEST(RegexTest, LiteralAndErrors) {
  auto lit = Regex::CreateLiteral("a.b\\E(");
  ASSERT_TRUE(lit.ok()) << lit.status();
  EXPECT_EQ(Matches(**lit, "xa.b\\E(y axb"), (std::vector<std::string>{"a.b\\E("}));
  auto bad = Regex::Create("(?<");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Regex::Create("\xFF").ok());
}

TEST(RegexTest, EmptyMatchesAreSkipped) {
  auto re = Regex::Create("x*");
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re, "axxb\xE4\xBD\xA0x"), (std::vector<std::string>{"xx", "x"}));
}

}  // namespace
}  // namespace memshare::tokenizer::internal
