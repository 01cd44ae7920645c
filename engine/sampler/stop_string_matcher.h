// Finds the stop strings of a request in its streamed, detokenized text.
//
// Text arrives in pieces (one per step). A piece is emitted at once unless
// its end could be the beginning of a stop string; that tail is held back
// until the next piece shows whether the stop string completes. When one
// does, everything before it is emitted, the stop string and what follows it
// are not, and the matcher is done. At the end of a stream that stopped for
// another reason, Flush() returns the held-back tail.
//
// Invariant: the emitted text never contains a stop string and never ends
// inside one that later completes (so a match is never missed across
// pieces, however the text is split).
//
// Thread-compatible; one per sequence.
#ifndef MEMSHARE_ENGINE_SAMPLER_STOP_STRING_MATCHER_H_
#define MEMSHARE_ENGINE_SAMPLER_STOP_STRING_MATCHER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace memshare::engine {

class StopStringMatcher {
 public:
  // Empty strings in `stop_strings` are ignored.
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string completed; nothing more will be emitted
    int stop_index = -1;   // which entry of stop_strings matched first, when stopped
  };

  // Appends the next piece of text. After a stop, returns empty results.
  Result Append(absl::string_view piece);

  // The held-back text (the stream ended without a stop string).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // Bytes currently held back.
  size_t held_back() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // held back: a suffix that is a proper prefix of some stop string
  bool stopped_ = false;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SAMPLER_STOP_STRING_MATCHER_H_
