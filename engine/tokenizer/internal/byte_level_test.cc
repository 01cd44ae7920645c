#include "engine/tokenizer/internal/byte_level.h"

#include <set>

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

TEST(ByteLevelTest, AlphabetIsABijection) {
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const char32_t c = ByteToChar(static_cast<uint8_t>(b));
    EXPECT_TRUE(seen.insert(c).second);
    EXPECT_EQ(CharToByte(c), b);
  }
  EXPECT_EQ(ByteToChar(' '), 0x120u);   // Ġ
  EXPECT_EQ(ByteToChar('\n'), 0x10Au);  // Ċ
  EXPECT_EQ(ByteToChar('a'), static_cast<char32_t>('a'));
  EXPECT_EQ(CharToByte(0x4F60), -1);
}

TEST(ByteLevelTest, RoundTripsArbitraryBytes) {
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(static_cast<char>(b));
  std::string shown, back;
  AppendByteLevel(bytes, &shown);
  ASSERT_TRUE(DecodeByteLevel(shown, &back));
  EXPECT_EQ(back, bytes);
  std::string out;
  EXPECT_FALSE(DecodeByteLevel("\xE4\xBD\xA0", &out));  // 你 is not in the alphabet
}

}  // namespace
}  // namespace memshare::tokenizer::internal
