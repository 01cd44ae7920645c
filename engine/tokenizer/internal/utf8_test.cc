#include "engine/tokenizer/internal/utf8.h"

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

TEST(Utf8Test, Validation) {
  EXPECT_TRUE(IsValidUtf8("abc \xC3\xA9 \xE4\xBD\xA0 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE4\xBD"));          // truncated
  EXPECT_EQ(FirstInvalidUtf8Offset("ab\xFF"), 2u);
}

TEST(Utf8Test, CompletePrefixHoldsOnlyATruncatedTail) {
  EXPECT_EQ(CompletePrefixLength("ab\xE4\xBD"), 2u);
  EXPECT_EQ(CompletePrefixLength("ab\xE4\xBD\xA0"), 5u);
  EXPECT_EQ(CompletePrefixLength("\xF0\x9F\x98"), 0u);
  // Ill-formed bytes are complete (they will be U+FFFD).
  EXPECT_EQ(CompletePrefixLength("\xE4x"), 2u);
  EXPECT_EQ(CompletePrefixLength("\xA0"), 1u);
}

TEST(Utf8Test, ToValidUtf8ReplacesMaximalSubparts) {
  EXPECT_EQ(ToValidUtf8("a\xE4\xBDz"), "a\xEF\xBF\xBDz");          // one U+FFFD for E4 BD
  EXPECT_EQ(ToValidUtf8("\xA0\xA0"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // one per stray byte
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("ok"), "ok");
}

TEST(Utf8Test, CodepointRoundTrip) {
  for (char32_t cp : {0x41u, 0xE9u, 0x4F60u, 0x1F600u}) {
    std::string s;
    AppendCodepoint(cp, &s);
    size_t pos = 0;
    EXPECT_EQ(NextCodepoint(s, &pos), cp);
    EXPECT_EQ(pos, s.size());
  }
}

}  // namespace
}  // namespace memshare::tokenizer::internal
