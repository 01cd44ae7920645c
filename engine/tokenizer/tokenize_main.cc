// Command-line tokenizer, for debugging and quick measurements:
//
//   tokenize DIR [--decode] [--no-special] < input
//
// Reads stdin. Without --decode, prints the token ids of the input (one line,
// space-separated) and, on stderr, the count and the encode time. With
// --decode, reads space-separated ids and prints their text.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [--decode] [--no-special] < input\n", argv[0]);
    return 2;
  }
  bool decode = false, add_special = true;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--decode") == 0) decode = true;
    if (std::strcmp(argv[i], "--no-special") == 0) add_special = false;
  }
  auto tokenizer = memshare::tokenizer::Tokenizer::FromDirectory(argv[1]);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (decode) {
    std::istringstream in(input);
    std::vector<int32_t> ids;
    for (int64_t id; in >> id;) ids.push_back(static_cast<int32_t>(id));
    std::cout << (*tokenizer)->Decode(ids, !add_special);
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  auto ids = (*tokenizer)->Encode(input, add_special);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!ids.ok()) {
    std::fprintf(stderr, "%s\n", ids.status().ToString().c_str());
    return 1;
  }
  for (size_t i = 0; i < ids->size(); ++i) std::cout << (i ? " " : "") << (*ids)[i];
  std::cout << "\n";
  std::fprintf(stderr, "%zu bytes -> %zu tokens in %.1f ms\n", input.size(), ids->size(), ms);
  return 0;
}
