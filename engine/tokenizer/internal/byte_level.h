// The GPT-2 byte-level alphabet: every byte 0..255 is shown as one printable
// code point (printable Latin-1 bytes as themselves, the rest shifted to
// U+0100..U+0143), so that byte-level BPE vocabularies are plain strings.
//
// Thread-safe: the tables are built once and never change.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BYTE_LEVEL_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace memshare::tokenizer::internal {

// The code point that shows byte `b`.
char32_t ByteToChar(uint8_t b);

// The byte shown by code point `c`, or -1 when `c` is not in the alphabet.
int CharToByte(char32_t c);

// Maps every byte of `bytes` to its code point and appends the UTF-8 result.
void AppendByteLevel(absl::string_view bytes, std::string* out);

// Maps a string of alphabet code points back to the bytes they show. Returns
// false (and leaves `out` partially written) when a code point is not in the
// alphabet; `text` must be valid UTF-8.
bool DecodeByteLevel(absl::string_view text, std::string* out);

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
