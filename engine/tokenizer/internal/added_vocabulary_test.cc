#include "engine/tokenizer/internal/added_vocabulary.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

// Renders segments as "text" / "#id" for comparison.
std::vector<std::string> Split(const AddedVocabulary& v, const std::string& text,
                               bool normalized = false) {
  std::vector<Segment> segs;
  v.Split(text, normalized, &segs);
  std::vector<std::string> out;
  for (const Segment& s : segs) {
    out.push_back(s.token_id >= 0 ? "#" + std::to_string(s.token_id)
                                  : text.substr(s.begin, s.end - s.begin));
  }
  return out;
}

using V = std::vector<std::string>;

TEST(AddedVocabularyTest, LeftmostLongest) {
  std::vector<AddedToken> tokens(3);
  tokens[0].id = 1, tokens[0].content = "<a>";
  tokens[1].id = 2, tokens[1].content = "<a><b>";
  tokens[2].id = 3, tokens[2].content = "b>";
  auto v = AddedVocabulary::Create(tokens);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Split(**v, "x<a><b>y<a>z"), (V{"x", "#2", "y", "#1", "z"}));
  EXPECT_EQ(Split(**v, "<a><b"), (V{"#1", "<b"}));
  EXPECT_EQ(Split(**v, "<a>b>"), (V{"#1", "#3"}));
  EXPECT_EQ(Split(**v, "plain"), (V{"plain"}));
  EXPECT_EQ(Split(**v, ""), (V{}));
}

TEST(AddedVocabularyTest, StripAndSingleWordFlags) {
  std::vector<AddedToken> tokens(3);
  tokens[0].id = 1, tokens[0].content = "<mask>", tokens[0].lstrip = true;
  tokens[1].id = 2, tokens[1].content = "<r>", tokens[1].rstrip = true;
  tokens[2].id = 3, tokens[2].content = "cat", tokens[2].single_word = true;
  auto v = AddedVocabulary::Create(tokens);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Split(**v, "a  <mask> b"), (V{"a", "#1", " b"}));
  EXPECT_EQ(Split(**v, "a <r>  b"), (V{"a ", "#2", "b"}));
  EXPECT_EQ(Split(**v, "a cat b"), (V{"a ", "#3", " b"}));
  EXPECT_EQ(Split(**v, "concatenate"), (V{"concatenate"}));
}

TEST(AddedVocabularyTest, NormalizedTokensMatchInTheirOwnPass) {
  std::vector<AddedToken> tokens(2);
  tokens[0].id = 1, tokens[0].content = "<raw>";
  tokens[1].id = 2, tokens[1].content = "<norm>", tokens[1].normalized = true;
  auto v = AddedVocabulary::Create(tokens);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Split(**v, "<raw><norm>", false), (V{"#1", "<norm>"}));
  EXPECT_EQ(Split(**v, "<raw><norm>", true), (V{"<raw>", "#2"}));
}

TEST(AddedVocabularyTest, RejectsBadContent) {
  std::vector<AddedToken> tokens(1);
  tokens[0].id = 1;
  EXPECT_FALSE(AddedVocabulary::Create(tokens).ok());
  tokens[0].content = "\xFF";
  EXPECT_FALSE(AddedVocabulary::Create(tokens).ok());
}

}  // namespace
}  // namespace memshare::tokenizer::internal
