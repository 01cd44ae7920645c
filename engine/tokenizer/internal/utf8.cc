#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// Length of the well-formed sequence at text[pos], or, when ill-formed, the
// negated length of its maximal subpart (>= 1 byte). Returns 0 only when the
// bytes at pos are a proper prefix of a well-formed sequence cut off by the end
// of `text`.
int ScanSequence(absl::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const unsigned char b0 = s[pos];
  if (b0 < 0x80) return 1;
  // Bounds of the second byte depend on the lead byte (Unicode Table 3-7).
  unsigned char lo = 0x80, hi = 0xBF;
  int len = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < len; ++i) {
    if (pos + i >= n) return 0;  // truncated, but valid so far
    const unsigned char b = s[pos + i];
    const unsigned char l = i == 1 ? lo : 0x80;
    const unsigned char h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return -i;
  }
  return len;
}

}  // namespace

int SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

size_t FirstInvalidUtf8Offset(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int len = ScanSequence(text, pos);
    if (len <= 0) return pos;
    pos += len;
  }
  return text.size();
}

bool IsValidUtf8(absl::string_view text) { return FirstInvalidUtf8Offset(text) == text.size(); }

char32_t NextCodepoint(absl::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t p = *pos;
  const unsigned char b0 = s[p];
  const int len = SequenceLength(b0);
  if (len == 0 || p + len > text.size()) {
    *pos = p + 1;
    return kReplacement;
  }
  char32_t cp;
  switch (len) {
    case 1:
      cp = b0;
      break;
    case 2:
      cp = ((b0 & 0x1F) << 6) | (s[p + 1] & 0x3F);
      break;
    case 3:
      cp = ((b0 & 0x0F) << 12) | ((s[p + 1] & 0x3F) << 6) | (s[p + 2] & 0x3F);
      break;
    default:
      cp = ((b0 & 0x07) << 18) | ((s[p + 1] & 0x3F) << 12) | ((s[p + 2] & 0x3F) << 6) |
           (s[p + 3] & 0x3F);
      break;
  }
  *pos = p + len;
  return cp;
}

void AppendCodepoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t CompletePrefixLength(absl::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const int len = ScanSequence(bytes, pos);
    if (len == 0) return pos;  // valid but cut off: wait for more bytes
    pos += len > 0 ? len : -len;
  }
  return pos;
}

std::string ToValidUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    int len = ScanSequence(bytes, pos);
    if (len > 0) {
      out.append(bytes.data() + pos, len);
      pos += len;
      continue;
    }
    // Ill-formed, or truncated by the end of the input: one U+FFFD for the
    // maximal subpart.
    if (len == 0) len = -static_cast<int>(bytes.size() - pos);
    AppendCodepoint(kReplacement, &out);
    pos += -len;
  }
  return out;
}

}  // namespace memshare::tokenizer::internal
