#include "engine/tokenizer/internal/byte_level.h"

#include <array>

#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

struct Tables {
  std::array<char32_t, 256> byte_to_char;
  // Indexed by code point; the alphabet lies below U+0144.
  std::array<int16_t, 0x144> char_to_byte;
  // UTF-8 of byte_to_char, to append without re-encoding.
  std::array<std::string, 256> byte_to_utf8;
};

const Tables& GetTables() {
  static const Tables* tables = [] {
    auto* t = new Tables();
    t->char_to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c =
          printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      t->byte_to_char[b] = c;
      t->char_to_byte[c] = static_cast<int16_t>(b);
      AppendCodepoint(c, &t->byte_to_utf8[b]);
    }
    return t;
  }();
  return *tables;
}

}  // namespace

char32_t ByteToChar(uint8_t b) { return GetTables().byte_to_char[b]; }

int CharToByte(char32_t c) {
  const Tables& t = GetTables();
  return c < t.char_to_byte.size() ? t.char_to_byte[c] : -1;
}

void AppendByteLevel(absl::string_view bytes, std::string* out) {
  const Tables& t = GetTables();
  for (unsigned char b : bytes) out->append(t.byte_to_utf8[b]);
}

bool DecodeByteLevel(absl::string_view text, std::string* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const int b = CharToByte(NextCodepoint(text, &pos));
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace memshare::tokenizer::internal
