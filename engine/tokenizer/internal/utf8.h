// UTF-8 helpers shared by the tokenizer: validation, code point iteration and
// the "complete prefix" test that streaming detokenization relies on.
//
// All functions are pure and thread-safe.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_UTF8_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace memshare::tokenizer::internal {

// Returns true iff `text` is well-formed UTF-8 (no overlongs, no surrogates,
// nothing above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// Returns the byte offset of the first ill-formed sequence, or text.size().
size_t FirstInvalidUtf8Offset(absl::string_view text);

// Decodes the code point starting at text[pos] of a *valid* UTF-8 string and
// advances pos past it. Behaviour on invalid input is unspecified (no crash:
// it consumes one byte and returns U+FFFD).
char32_t NextCodepoint(absl::string_view text, size_t* pos);

// Appends the UTF-8 encoding of `cp` (must be a scalar value) to `out`.
void AppendCodepoint(char32_t cp, std::string* out);

// Length in bytes of the UTF-8 sequence that starts with `lead`, or 0 when
// `lead` cannot start one.
int SequenceLength(unsigned char lead);

// Splits `bytes` (arbitrary bytes) into text that can be emitted now and a
// tail that must wait for more bytes:
//   - returns the number of bytes at the front that form complete text, where
//     ill-formed sequences count as complete (they become U+FFFD);
//   - the remaining bytes (at most 3) are a proper prefix of a well-formed
//     sequence and might still be completed by later bytes.
size_t CompletePrefixLength(absl::string_view bytes);

// Converts arbitrary bytes to well-formed UTF-8, replacing each maximal
// ill-formed subsequence with U+FFFD (the W3C/Unicode "maximal subpart"
// practice, as Rust's String::from_utf8_lossy and the WHATWG decoder do).
std::string ToValidUtf8(absl::string_view bytes);

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_UTF8_H_
