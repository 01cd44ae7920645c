// A strict parser of the Prometheus text exposition format (version 0.0.4)
// for tests: every /metrics page of the project must parse with it.
//
// Checks: line syntax (names, labels with escapes, values incl. +Inf/NaN,
// optional timestamp), at most one HELP and one TYPE per family, TYPE before
// the family's samples, every sample belongs to a declared family (histogram
// and summary samples by their _bucket/_sum/_count suffixes), histogram
// buckets carry `le` and end with le="+Inf".
#ifndef MEMSHARE_COMMON_TESTING_PROMETHEUS_TEXT_H_
#define MEMSHARE_COMMON_TESTING_PROMETHEUS_TEXT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace memshare::testing {

struct PromSample {
  std::string name;  // as written, e.g. "x_bucket"
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct PromFamily {
  std::string type;  // "counter", "gauge", "histogram", "summary", "untyped"
  std::string help;
  std::vector<PromSample> samples;
};

struct PromPage {
  std::map<std::string, PromFamily> families;  // by family name

  // The value of the sample `name` whose labels include `labels`; NOT_FOUND
  // if none, or the first one that matches.
  absl::StatusOr<double> Value(const std::string& name,
                               const std::map<std::string, std::string>& labels = {}) const;
};

absl::StatusOr<PromPage> ParsePrometheusText(const std::string& text);

}  // namespace memshare::testing

#endif  // MEMSHARE_COMMON_TESTING_PROMETHEUS_TEXT_H_
