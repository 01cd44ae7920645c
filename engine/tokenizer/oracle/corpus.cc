#include "engine/tokenizer/oracle/corpus.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::oracle {
namespace {

using internal::AppendCodepoint;

// std::mt19937_64's sequence is fixed by the standard; the helpers below avoid
// std::uniform_int_distribution, whose output is implementation-defined.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : gen_() % n; }
  int64_t Between(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(Below(hi - lo + 1)); }
  bool Chance(int percent) { return Below(100) < static_cast<uint64_t>(percent); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

 private:
  std::mt19937_64 gen_;
};

struct Block {
  char32_t lo, hi;
};

// Code point ranges assigned long ago (stable across Unicode versions) in
// many scripts and symbol sets.
const std::vector<Block>& Blocks() {
  static const auto* blocks = new std::vector<Block>{
      {0x21, 0x7E},       {0xC0, 0xD6},       {0xD8, 0xF6},       {0xF8, 0xFF},
      {0x100, 0x17E},     {0x391, 0x3A1},     {0x3A3, 0x3C9},     {0x410, 0x44F},
      {0x5D0, 0x5EA},     {0x627, 0x64A},     {0x660, 0x669},     {0x915, 0x939},
      {0x966, 0x96F},     {0xE01, 0xE2E},     {0xE50, 0xE59},     {0x1E00, 0x1EFF},
      {0x2010, 0x2027},   {0x2030, 0x205E},   {0x20A0, 0x20B5},   {0x2190, 0x21FF},
      {0x2200, 0x22FF},   {0x2460, 0x24FF},   {0x2500, 0x257F},   {0x2600, 0x26FF},
      {0x3001, 0x3003},   {0x3041, 0x3096},   {0x30A1, 0x30FA},   {0x4E00, 0x9FA5},
      {0xAC00, 0xD7A3},   {0xFF01, 0xFF5E},   {0x1D400, 0x1D4FF}, {0x1F300, 0x1F5FF},
      {0x1F600, 0x1F64F}, {0x1F680, 0x1F6C5},
  };
  return *blocks;
}

const std::vector<std::string>& SpecialStrings() {
  static const auto* specials = new std::vector<std::string>{
      // Qwen / ChatML
      "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
      "</tool_call>", "<|vision_start|>", "<|fim_prefix|>",
      // Llama 3
      "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
      "<|end_header_id|>", "<|reserved_special_token_7|>", "<|finetune_right_pad_id|>",
      // SentencePiece
      "<s>", "</s>", "<unk>",
      // Near misses that must stay ordinary text
      "<|im_start", "im_end|>", "<think", "< think>", "<|IM_END|>", "<<|im_end|>>", "<|eot_id",
      "<|begin_of_text|", "<s", "</ s>", "<0x41>", "<|reserved_special_token_999|>"};
  return *specials;
}

const std::vector<std::string>& Contractions() {
  static const auto* c =
      new std::vector<std::string>{"'s", "'t",  "'re", "'ve", "'m",  "'ll", "'d", "'S",
                                   "'T", "'RE", "'Ve", "'M",  "'LL", "'D",  "'"};
  return *c;
}

std::string Whitespace(Rng& rng) {
  static const std::vector<std::string> units = {" ",
                                                 " ",
                                                 " ",
                                                 "\t",
                                                 "\n",
                                                 "\n",
                                                 "\r\n",
                                                 "\r",
                                                 "\v",
                                                 "\f",
                                                 "\xC2\xA0" /* NBSP */,
                                                 "\xE3\x80\x80" /* ideographic space */,
                                                 "\xE2\x80\x83" /* em space */,
                                                 "\xE2\x80\xA8" /* line separator */};
  std::string out;
  switch (rng.Below(6)) {
    case 0:  // a long run of one unit
      for (int64_t n = rng.Between(2, 3000), i = 0; i < n; ++i) out += " ";
      break;
    case 1:
      for (int64_t n = rng.Between(2, 40), i = 0; i < n; ++i) out += "\n";
      break;
    case 2:
      for (int64_t n = rng.Between(1, 64), i = 0; i < n; ++i) out += "\t";
      break;
    default:  // a mix
      for (int64_t n = rng.Between(1, 60), i = 0; i < n; ++i) out += rng.Pick(units);
      break;
  }
  return out;
}

std::string Number(Rng& rng) {
  std::string out;
  switch (rng.Below(6)) {
    case 0:
      for (int64_t n = rng.Between(1, 40), i = 0; i < n; ++i) out.push_back('0' + rng.Below(10));
      break;
    case 1:
      out = absl::StrCat(rng.Between(-99999, 99999), ".", rng.Below(1000000));
      break;
    case 2:
      out = absl::StrCat(rng.Below(1000), ",", 100 + rng.Below(900), ",", 100 + rng.Below(900));
      break;
    case 3:
      out = absl::StrCat("0x", absl::Hex(rng.Below(uint64_t{1} << 48)));
      break;
    case 4:
      out = absl::StrCat(rng.Below(10), ".", rng.Below(1000), "e", rng.Chance(50) ? "-" : "+",
                         rng.Below(300));
      break;
    default:
      out = absl::StrCat(rng.Below(24), ":", 10 + rng.Below(50), ":", 10 + rng.Below(50));
      break;
  }
  return out;
}

std::string RandomCodepoints(Rng& rng) {
  std::string out;
  const Block& block = rng.Pick(Blocks());
  const int64_t n = rng.Between(1, 40);
  for (int64_t i = 0; i < n; ++i) {
    // Mostly one block, sometimes a jump to another.
    const Block& b = rng.Chance(85) ? block : rng.Pick(Blocks());
    AppendCodepoint(b.lo + static_cast<char32_t>(rng.Below(b.hi - b.lo + 1)), &out);
    if (rng.Chance(10)) out += " ";
  }
  return out;
}

// Letters followed by combining marks, and conjoining Hangul jamo: NFC
// composes many of these.
std::string Decomposed(Rng& rng) {
  std::string out;
  const int64_t n = rng.Between(1, 12);
  for (int64_t i = 0; i < n; ++i) {
    if (rng.Chance(30)) {
      AppendCodepoint(0x1100 + static_cast<char32_t>(rng.Below(19)), &out);  // leading jamo
      AppendCodepoint(0x1161 + static_cast<char32_t>(rng.Below(21)), &out);  // vowel jamo
      if (rng.Chance(50)) AppendCodepoint(0x11A8 + static_cast<char32_t>(rng.Below(27)), &out);
    } else {
      static const std::string kBases = "aeiouncAEIOUNCsSzZyY";
      out.push_back(kBases[rng.Below(kBases.size())]);
      const int64_t marks = rng.Between(1, 3);
      for (int64_t m = 0; m < marks; ++m) {
        AppendCodepoint(0x300 + static_cast<char32_t>(rng.Below(0x70)), &out);
      }
    }
    if (rng.Chance(30)) out += " ";
  }
  return out;
}

std::string Punctuation(Rng& rng) {
  static const std::vector<std::string> pieces = {"!!!",
                                                  "???",
                                                  "...",
                                                  "----",
                                                  "====",
                                                  "\"",
                                                  "''",
                                                  "``",
                                                  "'",
                                                  "(",
                                                  ")",
                                                  "[]",
                                                  "{}",
                                                  "<>",
                                                  "/*",
                                                  "*/",
                                                  "//",
                                                  "#",
                                                  "@",
                                                  "&&",
                                                  "||",
                                                  "->",
                                                  "=>",
                                                  "::",
                                                  ";",
                                                  ",",
                                                  ".",
                                                  "?!",
                                                  "~~",
                                                  "^",
                                                  "https://example.com/a/b?c=d&e=f#g",
                                                  "user.name+tag@example.org",
                                                  "C:\\Windows\\System32",
                                                  "../../etc/passwd",
                                                  "\xE2\x80\x94",
                                                  "\xE2\x80\xA6",
                                                  "\xC2\xAB\xC2\xBB",
                                                  "\xE3\x80\x82"};
  std::string out;
  const int64_t n = rng.Between(1, 6);
  for (int64_t i = 0; i < n; ++i) {
    out += rng.Pick(pieces);
    if (rng.Chance(40)) out += " ";
  }
  return out;
}

std::string ApplyCase(Rng& rng, std::string word) {
  switch (rng.Below(8)) {
    case 0:
      for (char& c : word) {
        if (c >= 'a' && c <= 'z') c = c - 'a' + 'A';
      }
      break;
    case 1:
      if (!word.empty() && word[0] >= 'a' && word[0] <= 'z') word[0] = word[0] - 'a' + 'A';
      break;
    default:
      break;
  }
  return word;
}

}  // namespace

std::vector<std::string> GenerateCorpus(const std::vector<std::string>& samples, uint64_t seed,
                                        size_t min_bytes) {
  Rng rng(seed);
  std::vector<std::vector<std::string>> sample_lines;
  std::vector<std::string> words;
  for (const std::string& s : samples) {
    sample_lines.push_back(absl::StrSplit(s, '\n'));
    for (absl::string_view w : absl::StrSplit(s, absl::ByAnyChar(" \n\t"), absl::SkipEmpty())) {
      words.emplace_back(w);
    }
  }
  if (words.empty()) words.push_back("word");

  std::vector<std::string> docs;
  // Every sample verbatim first.
  for (const std::string& s : samples) docs.push_back(s);
  // A few extreme documents.
  docs.push_back(std::string(20000, ' '));
  docs.push_back(absl::StrCat("x", std::string(5000, ' '), "y\n\n\n", std::string(3000, '\n')));
  docs.push_back(std::string(6000, 'a'));
  docs.push_back(std::string(4000, '7'));
  {
    std::string emoji;
    for (int i = 0; i < 800; ++i) emoji += "\xF0\x9F\x98\x80";  // U+1F600
    docs.push_back(emoji);
  }
  docs.push_back("<|im_start|><|im_end|><think></think><|begin_of_text|><|eot_id|><s></s>");
  docs.push_back(" leading and trailing spaces ");
  docs.push_back("\n\nleading newlines and trailing tab\t");

  size_t total = 0;
  for (const std::string& d : docs) total += d.size();
  while (total < min_bytes) {
    std::string doc;
    const size_t target = static_cast<size_t>(rng.Between(200, 6000));
    while (doc.size() < target) {
      switch (rng.Below(16)) {
        case 0:
        case 1:
        case 2: {  // a slice of a sample
          if (sample_lines.empty()) break;
          const auto& lines = rng.Pick(sample_lines);
          const size_t first = rng.Below(lines.size());
          const size_t count = 1 + rng.Below(8);
          for (size_t i = first; i < lines.size() && i < first + count; ++i) {
            absl::StrAppend(&doc, lines[i], "\n");
          }
          break;
        }
        case 3:
        case 4:
        case 5: {  // a sentence of sample words
          const int64_t n = rng.Between(3, 30);
          for (int64_t i = 0; i < n; ++i) {
            doc += ApplyCase(rng, rng.Pick(words));
            if (rng.Chance(8)) doc += rng.Pick(Contractions());
            doc += rng.Chance(90) ? " " : "";
          }
          break;
        }
        case 6:
          doc += Whitespace(rng);
          break;
        case 7:
          doc += Number(rng);
          doc += rng.Chance(50) ? " " : "";
          break;
        case 8:
        case 9:
          doc += RandomCodepoints(rng);
          break;
        case 10:
          doc += Decomposed(rng);
          break;
        case 11:
          doc += Punctuation(rng);
          break;
        case 12:
        case 13: {  // a special token (or a near miss) inside text
          if (rng.Chance(50)) doc += " ";
          doc += rng.Pick(SpecialStrings());
          if (rng.Chance(30)) doc += "\n";
          if (rng.Chance(50)) doc += ApplyCase(rng, rng.Pick(words));
          break;
        }
        case 14: {  // ChatML-shaped turn
          absl::StrAppend(&doc, "<|im_start|>", rng.Chance(50) ? "user" : "assistant", "\n",
                          rng.Pick(words), " ", rng.Pick(words), "<|im_end|>\n");
          if (rng.Chance(50)) absl::StrAppend(&doc, "<think>\n", rng.Pick(words), "\n</think>\n\n");
          break;
        }
        default:  // words glued to digits and punctuation
          absl::StrAppend(&doc, rng.Pick(words), Number(rng), rng.Pick(words), "_", rng.Pick(words),
                          "'", rng.Pick(words));
          break;
      }
    }
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace memshare::tokenizer::oracle
