// memshare_worker's flags are Abseil flags, spelled with underscores
// (--group_leader); the dashed spelling of the same names (--group-leader,
// --world-size) is accepted too, rewritten before parsing.
#ifndef MEMSHARE_ENGINE_SERVER_FLAG_SPELLING_H_
#define MEMSHARE_ENGINE_SERVER_FLAG_SPELLING_H_

#include <string>
#include <vector>

namespace memshare::engine {

// argv with '-' inside each flag's name (before any '=') turned into '_'.
// Values, positional arguments and everything after a lone "--" are kept as
// they are.
std::vector<std::string> UnderscoreFlagNames(int argc, const char* const* argv);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_FLAG_SPELLING_H_
