#include "bench/memshare_eval/eval_report.h"

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::bench {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

ProblemOutcome Outcome(int32_t id, bool correct, const std::string& text) {
  ProblemOutcome p;
  p.id = id;
  p.answer = 10;
  p.correct = correct;
  if (correct) p.predicted = 10;
  p.text = text;
  p.finish_reason = engine::FinishReason::kStop;
  p.peak_physical_blocks = 30;
  p.peak_logical_blocks = 40;
  return p;
}

TEST(ComparePairedTest, CountsFlipsAndSameRepliesById) {
  EvalResult off, on;
  off.problems = {Outcome(1, true, "a"), Outcome(2, true, "b"), Outcome(3, false, "c"),
                  Outcome(4, true, "d")};
  // Other order, one problem missing, one extra.
  on.problems = {Outcome(3, true, "c2"), Outcome(2, false, "b2"), Outcome(1, true, "a"),
                 Outcome(9, true, "z")};
  const PairedDiff d = ComparePaired(off, on);
  EXPECT_EQ(d.compared, 3);
  EXPECT_EQ(d.lost, 1);
  EXPECT_EQ(d.gained, 1);
  EXPECT_EQ(d.same_reply, 1);
}

TEST(FormatCsvTest, OneRowPerRunWithTheHeadersColumns) {
  EvalResult off;
  off.config.name = "memshare=off";
  off.num_problems = 2;
  off.num_correct = 2;
  off.problems = {Outcome(1, true, "a"), Outcome(2, true, "b")};
  off.request_peak_physical = 80;
  off.request_peak_logical = 80;
  EvalResult on = off;
  on.config.name = "tau_kv=0.3, \"quoted\"";
  on.config.memshare = true;
  on.config.tau_kv = 0.3f;
  on.config.layer_groups = 4;
  on.config.share_groups = {0, 1};
  on.num_correct = 1;
  on.problems[1].correct = false;
  on.problems[1].text = "b2";
  on.problems[1].predicted.reset();
  on.request_peak_physical = 60;
  on.dedup_remapped = 20;
  on.wall_seconds = 2;
  on.generated_tokens = 1000;
  on.steps = 100;
  on.step_seconds = 1.5;
  on.decode_steps = 80;
  on.decode_seconds = 0.8;
  on.pool_physical_step_sum = 4100;  // over 100 steps: 41 physical, 50 logical blocks a step
  on.pool_logical_step_sum = 5000;
  const std::vector<ReportRow> rows = {{&off, &off, 0}, {&on, &off, 1}};
  const std::string csv = FormatCsv(rows);
  const std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  const size_t columns = std::count(lines[0].begin(), lines[0].end(), ',') + 1;
  EXPECT_EQ(std::count(lines[1].begin(), lines[1].end(), ',') + 1, columns);
  // The quoted name holds one comma of its own.
  EXPECT_EQ(std::count(lines[2].begin(), lines[2].end(), ',') + 1, columns + 1);
  EXPECT_THAT(lines[2], HasSubstr("\"tau_kv=0.3, \"\"quoted\"\"\""));
  EXPECT_THAT(lines[2], HasSubstr(",0.25,"));  // memory saved 1 - 60/80
  EXPECT_THAT(lines[2], HasSubstr(",41,50,0.18,"));  // the pool's mean physical, logical, saved
  EXPECT_THAT(lines[2], HasSubstr(",0+1,"));
  EXPECT_TRUE(absl::EndsWith(lines[2], ",1,500"));  // req/s, tok/s
  // decode ms a step (0.8 s over 80 steps), then sample and outside (0.5 s over 100 steps)
  EXPECT_THAT(lines[2], HasSubstr(",80,10,0,5,"));

  const std::string phases = FormatPhaseTable(rows);
  EXPECT_EQ(std::count(phases.begin(), phases.end(), '\n'), 3);
  EXPECT_THAT(phases, HasSubstr("outside"));

  const std::string table = FormatTable(rows);
  EXPECT_THAT(table, HasSubstr("memshare=off"));
  EXPECT_THAT(table, HasSubstr("25.00%"));
  EXPECT_THAT(table, HasSubstr("18.00%"));
  EXPECT_THAT(table, HasSubstr("1/2"));  // same reply as off in one problem of two

  const std::string replies = FormatRepliesJsonl(rows);
  EXPECT_EQ(std::count(replies.begin(), replies.end(), '\n'), 4);
  EXPECT_THAT(
      replies,
      HasSubstr(
          R"({"answer":10,"correct":false,"id":2,"name":"tau_kv=0.3, \"quoted\"","predicted":null,"repeat":1,"text":"b2"})"));

  const std::string problems = FormatProblemsCsv(rows);
  EXPECT_EQ(std::count(problems.begin(), problems.end(), '\n'), 5);
  EXPECT_THAT(problems, HasSubstr("memshare=off,0,1,10,10,1,stop,0,0,30,40,\n"));
}

TEST(RenderScatterSvgTest, PointsLabelsFrontierAndGuides) {
  const std::vector<PlotPoint> points = {{0, 99, "off", "", 0},
                                         {10, 99.5, "a<b", "", 0},
                                         {20, 98, "c", "tau_kv=1 & more", 1},
                                         {30, 97, "d", "", 1}};
  PlotOptions o;
  o.title = "accuracy & memory";
  o.series_names = {"1 group", "4 groups"};
  o.reference_y = 98;
  o.reference_y_label = "off - 1 point";
  o.target_x = 30;
  o.target_x_label = "target";
  const std::string svg = RenderScatterSvg(points, o);
  EXPECT_TRUE(absl::StartsWith(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_TRUE(absl::EndsWith(svg, "</svg>\n"));
  // Four points and two legend markers.
  size_t circles = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) {
    ++circles;
  }
  EXPECT_EQ(circles, 6u);
  EXPECT_THAT(svg, HasSubstr("a&lt;b"));
  EXPECT_THAT(svg, HasSubstr("accuracy &amp; memory"));
  EXPECT_THAT(svg, Not(HasSubstr("a<b")));
  EXPECT_THAT(svg, HasSubstr("off - 1 point"));
  EXPECT_THAT(svg, HasSubstr("4 groups"));
  EXPECT_THAT(svg, HasSubstr(">c</tspan>: tau_kv=1 &amp; more</text>"));  // the key
  EXPECT_THAT(svg, HasSubstr("height=\"624\""));                          // 600 + 10 + 14
  // The frontier joins (10, 99.5), (20, 98), (30, 97): three vertices.
  const size_t poly = svg.find("<polyline points=\"");
  ASSERT_NE(poly, std::string::npos);
  const size_t end = svg.find('"', poly + 18);
  const std::string vertices = svg.substr(poly + 18, end - poly - 18);
  EXPECT_EQ(std::count(vertices.begin(), vertices.end(), ','), 3);
}

TEST(RenderScatterSvgTest, EmptyPlotIsStillADocument) {
  const std::string svg = RenderScatterSvg({}, PlotOptions{});
  EXPECT_TRUE(absl::StartsWith(svg, "<svg"));
  EXPECT_THAT(svg, Not(HasSubstr("<circle")));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
}

}  // namespace
}  // namespace memshare::bench
