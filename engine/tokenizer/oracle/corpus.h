// Deterministic text corpus for the tokenizer oracle test: committed samples
// (prose, code, math, CJK and other scripts, emoji) cut and recombined with
// generated text (numbers, long whitespace runs, random code points from many
// scripts, decomposed characters that NFC recomposes, special tokens and near
// misses written inside text).
//
// A few code points are left out on purpose because the regex engines
// disagree on them: U+FEFF is \s for JavaScript only (not for PCRE2 nor for
// HF tokenizers' Oniguruma; it changes the ids); U+0085 is \s for PCRE2 and
// Oniguruma but not JavaScript; U+180E is \s (\h) for PCRE2 only; U+017F
// and U+212A case-fold to s/k under (?i) in PCRE2 and Oniguruma but not in
// the JavaScript rewrite of that group.
#ifndef MEMSHARE_ENGINE_TOKENIZER_ORACLE_CORPUS_H_
#define MEMSHARE_ENGINE_TOKENIZER_ORACLE_CORPUS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace memshare::tokenizer::oracle {

// Returns documents totalling at least `min_bytes` bytes of valid UTF-8. The
// same (samples, seed, min_bytes) always gives the same documents.
std::vector<std::string> GenerateCorpus(const std::vector<std::string>& samples, uint64_t seed,
                                        size_t min_bytes);

}  // namespace memshare::tokenizer::oracle

#endif  // MEMSHARE_ENGINE_TOKENIZER_ORACLE_CORPUS_H_
