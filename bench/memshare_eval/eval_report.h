// What memshare_eval writes: a CSV row per run, a text table, and an SVG
// scatter plot of accuracy against memory saved (one point per MemShare
// setting, the MemShare-off run as the reference), with the runs compared
// problem by problem against the MemShare-off run of the same engine.
//
// Pure functions; thread-safe.
#ifndef MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_REPORT_H_
#define MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_REPORT_H_

#include <limits>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "bench/memshare_eval/eval_runner.h"

namespace memshare::bench {

// A run against a reference run over the same problems (in the same
// order): problems right in one and wrong in the other, and replies that
// are the same text.
struct PairedDiff {
  int32_t compared = 0;    // problems both runs answered (by id)
  int32_t lost = 0;        // right in the reference, wrong here
  int32_t gained = 0;      // wrong in the reference, right here
  int32_t same_reply = 0;  // identical reply text
};
PairedDiff ComparePaired(const EvalResult& reference, const EvalResult& run);

struct ReportRow {
  const EvalResult* result = nullptr;
  // The MemShare-off run it is compared with (may be itself or null).
  const EvalResult* reference = nullptr;
  int32_t repeat = 0;
};

// Header line and one line per row, comma-separated, '\n'-terminated.
// Text fields are quoted when they hold a comma, quote or newline.
std::string FormatCsv(absl::Span<const ReportRow> rows);

// A fixed-width table of the main columns, for the terminal.
std::string FormatTable(absl::Span<const ReportRow> rows);

// Where the engine's steps go, ms a step (the forward pass per step of its
// kind), for the terminal.
std::string FormatPhaseTable(absl::Span<const ReportRow> rows);

// Per-problem lines: config, id, answer, predicted, correct, tokens,
// peaks; for checking single answers.
std::string FormatProblemsCsv(absl::Span<const ReportRow> rows);

// One JSON object per problem and run: name, repeat, id, answer,
// predicted (null if none), correct, reply text. For reading the replies a
// setting changed.
std::string FormatRepliesJsonl(absl::Span<const ReportRow> rows);

struct PlotPoint {
  double x = 0;       // memory saved, percent
  double y = 0;       // accuracy, percent
  std::string label;        // written next to the point (keep it short)
  std::string description;  // listed under the plot as "label: description"; empty: not listed
  int series = 0;           // colour (e.g. layer groups)
};

struct PlotOptions {
  std::string title;
  std::string x_label = "KV blocks saved at peak (%)";
  std::string y_label = "held-out accuracy (%)";
  // Legend text per series number (missing: "series N").
  std::vector<std::string> series_names;
  // Dashed guide lines; NaN: none.
  double reference_y =
      std::numeric_limits<double>::quiet_NaN();  // e.g. MemShare-off accuracy - 1 point
  std::string reference_y_label;
  double target_x = std::numeric_limits<double>::quiet_NaN();  // e.g. 30% saved
  std::string target_x_label;
};

// A standalone SVG document (no scripts, no external references): axes
// with ticks, the points, their labels, the upper-left frontier (points no
// other point beats in both saving and accuracy) as a line, the guides, a
// legend of the series and, under the plot, the key of point descriptions.
std::string RenderScatterSvg(absl::Span<const PlotPoint> points, const PlotOptions& options);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_REPORT_H_
