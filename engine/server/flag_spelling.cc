#include "engine/server/flag_spelling.h"

#include <cctype>

namespace memshare::engine {

std::vector<std::string> UnderscoreFlagNames(int argc, const char* const* argv) {
  std::vector<std::string> out;
  bool flags_done = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i == 0 || flags_done || a.size() < 2 || a[0] != '-') {
      out.push_back(std::move(a));
      continue;
    }
    if (a == "--") {
      flags_done = true;
      out.push_back(std::move(a));
      continue;
    }
    const size_t begin = a[1] == '-' ? 2 : 1;
    if (begin >= a.size() || !std::isalpha(static_cast<unsigned char>(a[begin]))) {
      out.push_back(std::move(a));  // "-5", "---x": not a flag name
      continue;
    }
    const size_t end = a.find('=');
    for (size_t k = begin; k < a.size() && k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace memshare::engine
