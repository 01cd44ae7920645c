#include "engine/sampler/stop_string_matcher.h"

#include <algorithm>
#include <utility>

namespace memshare::engine {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (std::string& s : stop_strings) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

StopStringMatcher::Result StopStringMatcher::Append(absl::string_view piece) {
  Result result;
  if (stopped_) return result;
  pending_.append(piece.data(), piece.size());
  if (stops_.empty()) {
    result.text.swap(pending_);
    return result;
  }

  // Earliest complete match; among matches at the same place, the first stop
  // string listed. Everything before pending_ was emitted and could not hold
  // the start of a match (it would have been held back).
  size_t best_pos = std::string::npos;
  int best_index = -1;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t pos = pending_.find(stops_[i]);
    if (pos < best_pos) {
      best_pos = pos;
      best_index = static_cast<int>(i);
    }
  }
  if (best_index >= 0) {
    result.text = pending_.substr(0, best_pos);
    result.stopped = true;
    result.stop_index = best_index;
    pending_.clear();
    stopped_ = true;
    return result;
  }

  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t max_len = std::min(stop.size() - 1, pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (absl::string_view(pending_).substr(pending_.size() - len) ==
          absl::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  result.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace memshare::engine
