#include "bench/memshare_eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/memshare_eval/config_spec.h"

namespace memshare::bench {
namespace {

std::string CsvField(absl::string_view s) {
  if (s.find_first_of(",\"\n\r") == absl::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string XmlEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Num(double v) { return absl::StrFormat("%.6g", v); }

const char* FinishName(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kStop:
      return "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kAbort:
      return "abort";
    case engine::FinishReason::kError:
      return "error";
    case engine::FinishReason::kNone:
      break;
  }
  return "none";
}

// "Nice" tick step for a span: 1, 2 or 5 times a power of ten, about
// `target` ticks.
double TickStep(double span, int target) {
  const double raw = span / std::max(1, target);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

}  // namespace

PairedDiff ComparePaired(const EvalResult& reference, const EvalResult& run) {
  absl::flat_hash_map<int32_t, const ProblemOutcome*> by_id;
  for (const ProblemOutcome& p : reference.problems) by_id[p.id] = &p;
  PairedDiff d;
  for (const ProblemOutcome& p : run.problems) {
    const auto it = by_id.find(p.id);
    if (it == by_id.end()) continue;
    ++d.compared;
    d.lost += it->second->correct && !p.correct;
    d.gained += !it->second->correct && p.correct;
    d.same_reply += it->second->text == p.text;
  }
  return d;
}

std::string FormatCsv(absl::Span<const ReportRow> rows) {
  std::string out =
      "name,settings,memshare,tau_lex,tau_kv,overlap,candidates,min_step,max_step,layer_groups,"
      "share_groups,repeat,problems,correct,accuracy,failed,lost_vs_off,gained_vs_off,"
      "same_reply_vs_off,request_peak_physical,request_peak_logical,memory_saved,"
      "mean_request_saved,pool_blocks,pool_peak_physical,pool_peak_logical,"
      "pool_physical_at_peak_logical,pool_saved_at_peak,shared_block_ratio,pool_mean_physical,"
      "pool_mean_logical,pool_mean_saved,dedup_steps,"
      "dedup_candidate_steps,dedup_candidates,dedup_verified,dedup_rejected,dedup_remapped,steps,"
      "dedup_phase_steps,dedup_ms_per_step,dedup_share_of_step_time,schedule_ms_per_step,"
      "prefill_steps,prefill_ms_per_step,decode_steps,decode_ms_per_step,sample_ms_per_step,"
      "outside_phases_ms_per_step,preemptions,"
      "generated_tokens,wall_s,requests_per_s,tokens_per_s\n";
  auto opt = [](const auto& o) { return o.has_value() ? Num(*o) : std::string(); };
  for (const ReportRow& row : rows) {
    const EvalResult& r = *row.result;
    const EvalConfig& c = r.config;
    PairedDiff d;
    if (row.reference != nullptr) d = ComparePaired(*row.reference, r);
    const bool compared = row.reference != nullptr;
    std::vector<std::string> f = {
        CsvField(c.name),
        CsvField(DescribeConfig(c)),
        c.memshare ? "on" : "off",
        opt(c.tau_lex),
        opt(c.tau_kv),
        opt(c.min_block_token_overlap),
        opt(c.max_candidates_per_step),
        opt(c.min_step_tokens),
        opt(c.max_step_tokens),
        Num(c.layer_groups),
        absl::StrJoin(c.share_groups, "+"),
        Num(row.repeat),
        Num(r.num_problems),
        Num(r.num_correct),
        Num(r.accuracy()),
        Num(r.num_failed),
        compared ? Num(d.lost) : "",
        compared ? Num(d.gained) : "",
        compared ? Num(d.same_reply) : "",
        Num(r.request_peak_physical),
        Num(r.request_peak_logical),
        Num(r.request_saved()),
        Num(r.mean_request_saved),
        Num(r.pool_blocks),
        Num(r.pool_peak_physical),
        Num(r.pool_peak_logical),
        Num(r.pool_physical_at_peak_logical),
        Num(r.pool_saved_at_peak()),
        Num(r.shared_block_ratio()),
        Num(r.pool_mean_physical()),
        Num(r.pool_mean_logical()),
        Num(r.pool_mean_saved()),
        Num(r.dedup_steps),
        Num(r.dedup_candidate_steps),
        Num(r.dedup_candidates),
        Num(r.dedup_verified),
        Num(r.dedup_rejected),
        Num(r.dedup_remapped),
        Num(r.steps),
        Num(r.dedup_phase_steps),
        Num(r.dedup_ms_per_step()),
        Num(r.dedup_share()),
        Num(r.schedule_ms_per_step()),
        Num(r.prefill_steps),
        Num(r.prefill_ms_per_step()),
        Num(r.decode_steps),
        Num(r.decode_ms_per_step()),
        Num(r.sample_ms_per_step()),
        Num(r.outside_phases_ms_per_step()),
        Num(r.preemptions),
        Num(r.generated_tokens),
        Num(r.wall_seconds),
        Num(r.requests_per_second()),
        Num(r.tokens_per_second()),
    };
    absl::StrAppend(&out, absl::StrJoin(f, ","), "\n");
  }
  return out;
}

std::string FormatTable(absl::Span<const ReportRow> rows) {
  size_t name_width = 6;
  for (const ReportRow& row : rows)
    name_width = std::max(name_width, row.result->config.name.size());
  std::string out = absl::StrFormat(
      "%-*s %3s %9s %6s %6s %7s %7s %7s %8s %8s %8s %7s %6s %7s %6s %8s %7s\n", name_width,
      "config", "rep", "accuracy", "lost", "gained", "same", "saved", "pool", "poolmean", "shared",
      "remaps", "verif", "preem", "dedupms", "dedup%", "tok/s", "req/s");
  for (const ReportRow& row : rows) {
    const EvalResult& r = *row.result;
    PairedDiff d;
    if (row.reference != nullptr) d = ComparePaired(*row.reference, r);
    absl::StrAppendFormat(
        &out,
        "%-*s %3d %8.2f%% %6s %6s %7s %6.2f%% %6.2f%% %7.2f%% %7.2f%% %8d %8d %7d %6.3f %5.2f%% "
        "%8.0f %7.3f\n",
        name_width, r.config.name, row.repeat, 100 * r.accuracy(),
        row.reference ? absl::StrCat(d.lost) : "-", row.reference ? absl::StrCat(d.gained) : "-",
        row.reference ? absl::StrCat(d.same_reply, "/", d.compared) : "-", 100 * r.request_saved(),
        100 * r.pool_saved_at_peak(), 100 * r.pool_mean_saved(), 100 * r.shared_block_ratio(),
        r.dedup_remapped,
        r.dedup_verified, r.preemptions, r.dedup_ms_per_step(), 100 * r.dedup_share(),
        r.tokens_per_second(), r.requests_per_second());
  }
  return out;
}

std::string FormatPhaseTable(absl::Span<const ReportRow> rows) {
  size_t name_width = 6;
  for (const ReportRow& row : rows)
    name_width = std::max(name_width, row.result->config.name.size());
  std::string out = absl::StrFormat("%-*s %3s %7s %9s %8s %9s %8s %8s %8s %8s %8s\n", name_width,
                                    "config", "rep", "steps", "prefills", "prefill", "decodes",
                                    "decode", "schedule", "sample", "dedup", "outside");
  for (const ReportRow& row : rows) {
    const EvalResult& r = *row.result;
    absl::StrAppendFormat(&out, "%-*s %3d %7d %9d %8.3f %9d %8.3f %8.3f %8.3f %8.3f %8.3f\n",
                          name_width, r.config.name, row.repeat, r.steps, r.prefill_steps,
                          r.prefill_ms_per_step(), r.decode_steps, r.decode_ms_per_step(),
                          r.schedule_ms_per_step(), r.sample_ms_per_step(), r.dedup_ms_per_step(),
                          r.outside_phases_ms_per_step());
  }
  return out;
}

std::string FormatProblemsCsv(absl::Span<const ReportRow> rows) {
  std::string out =
      "name,repeat,id,answer,predicted,correct,finish,prompt_tokens,completion_tokens,"
      "peak_physical_blocks,peak_logical_blocks,error\n";
  for (const ReportRow& row : rows) {
    for (const ProblemOutcome& p : row.result->problems) {
      absl::StrAppend(&out, CsvField(row.result->config.name), ",", row.repeat, ",", p.id, ",",
                      p.answer, ",", p.predicted ? absl::StrCat(*p.predicted) : "", ",",
                      p.correct ? 1 : 0, ",", FinishName(p.finish_reason), ",", p.prompt_tokens,
                      ",", p.completion_tokens, ",", p.peak_physical_blocks, ",",
                      p.peak_logical_blocks, ",", CsvField(p.error), "\n");
    }
  }
  return out;
}

std::string FormatRepliesJsonl(absl::Span<const ReportRow> rows) {
  std::string out;
  for (const ReportRow& row : rows) {
    for (const ProblemOutcome& p : row.result->problems) {
      nlohmann::json j;
      j["name"] = row.result->config.name;
      j["repeat"] = row.repeat;
      j["id"] = p.id;
      j["answer"] = p.answer;
      j["predicted"] = p.predicted ? nlohmann::json(*p.predicted) : nlohmann::json(nullptr);
      j["correct"] = p.correct;
      j["text"] = p.text;
      absl::StrAppend(&out, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "\n");
    }
  }
  return out;
}

std::string RenderScatterSvg(absl::Span<const PlotPoint> points, const PlotOptions& o) {
  static constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                            "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  int described = 0;
  for (const PlotPoint& p : points) described += !p.description.empty();
  const double key_line = 14;
  const double width = 900, plot_height = 600;
  const double height = plot_height + (described > 0 ? 10 + key_line * described : 0);
  const double left = 80, right = 220, top = 50, bottom = 70;
  const double pw = width - left - right, ph = plot_height - top - bottom;

  double x_max = 10, y_min = 100, y_max = 0;
  for (const PlotPoint& p : points) {
    x_max = std::max(x_max, p.x);
    y_min = std::min(y_min, p.y);
    y_max = std::max(y_max, p.y);
  }
  if (!std::isnan(o.target_x)) x_max = std::max(x_max, o.target_x);
  if (!std::isnan(o.reference_y)) {
    y_min = std::min(y_min, o.reference_y);
    y_max = std::max(y_max, o.reference_y);
  }
  if (points.empty()) y_min = 0, y_max = 100;
  const double x_step = TickStep(x_max, 8);
  x_max = std::ceil(x_max * 1.05 / x_step) * x_step;
  double y_lo = y_min - std::max(1.0, 0.1 * (y_max - y_min));
  double y_hi = std::min(100.0, y_max + std::max(0.5, 0.05 * (y_max - y_min)));
  if (y_hi <= y_lo) y_hi = y_lo + 1;
  const double y_step = TickStep(y_hi - y_lo, 8);
  y_lo = std::floor(y_lo / y_step) * y_step;
  y_hi = std::ceil(y_hi / y_step) * y_step;
  auto sx = [&](double x) { return left + pw * x / x_max; };
  auto sy = [&](double y) { return top + ph * (1 - (y - y_lo) / (y_hi - y_lo)); };

  std::string s = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      width, height, width, height);
  absl::StrAppendFormat(
      &s, "<text x=\"%g\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">%s</text>\n",
      left + pw / 2, XmlEscape(o.title));
  // Grid and ticks.
  for (double x = 0; x <= x_max + 1e-9; x += x_step) {
    absl::StrAppendFormat(
        &s,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
        sx(x), top, sx(x), top + ph, sx(x), top + ph + 18, x);
  }
  for (double y = y_lo; y <= y_hi + 1e-9; y += y_step) {
    absl::StrAppendFormat(
        &s,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
        left, sy(y), left + pw, sy(y), left - 8, sy(y) + 4, y);
  }
  absl::StrAppendFormat(&s,
                        "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
                        "stroke=\"black\"/>\n",
                        left, top, pw, ph);
  absl::StrAppendFormat(&s, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n",
                        left + pw / 2, plot_height - 25, XmlEscape(o.x_label));
  absl::StrAppendFormat(&s,
                        "<text x=\"20\" y=\"%g\" text-anchor=\"middle\" "
                        "transform=\"rotate(-90 20 %g)\">%s</text>\n",
                        top + ph / 2, top + ph / 2, XmlEscape(o.y_label));
  // Guides.
  if (!std::isnan(o.reference_y) && o.reference_y >= y_lo && o.reference_y <= y_hi) {
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" "
                          "stroke-dasharray=\"6 4\"/>\n<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\" "
                          "text-anchor=\"end\">%s</text>\n",
                          left, sy(o.reference_y), left + pw, sy(o.reference_y), left + pw - 4,
                          sy(o.reference_y) - 4, XmlEscape(o.reference_y_label));
  }
  if (!std::isnan(o.target_x)) {
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" "
                          "stroke-dasharray=\"6 4\"/>\n<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">"
                          "%s</text>\n",
                          sx(o.target_x), top, sx(o.target_x), top + ph, sx(o.target_x) + 4,
                          top + 14, XmlEscape(o.target_x_label));
  }
  // Frontier: sorted by saving, the points more accurate than every point
  // that saves more.
  std::vector<const PlotPoint*> sorted;
  for (const PlotPoint& p : points) sorted.push_back(&p);
  std::sort(sorted.begin(), sorted.end(), [](const PlotPoint* a, const PlotPoint* b) {
    return a->x != b->x ? a->x > b->x : a->y > b->y;
  });
  std::vector<const PlotPoint*> frontier;
  double best_y = -1;
  for (const PlotPoint* p : sorted) {
    if (p->y > best_y) {
      frontier.push_back(p);
      best_y = p->y;
    }
  }
  if (frontier.size() >= 2) {
    std::string path;
    for (auto it = frontier.rbegin(); it != frontier.rend(); ++it) {
      absl::StrAppendFormat(&path, "%s%.1f,%.1f", path.empty() ? "" : " ", sx((*it)->x),
                            sy((*it)->y));
    }
    absl::StrAppendFormat(&s,
                          "<polyline points=\"%s\" fill=\"none\" stroke=\"#444\" "
                          "stroke-width=\"1.5\"/>\n",
                          path);
  }
  // Points and labels.
  int max_series = 0;
  for (const PlotPoint& p : points) {
    max_series = std::max(max_series, p.series);
    const char* color = kColors[((p.series % 8) + 8) % 8];
    absl::StrAppendFormat(&s,
                          "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"><title>%s: "
                          "%.2f%% saved, %.2f%% accurate</title></circle>\n",
                          sx(p.x), sy(p.y), color, XmlEscape(p.label), p.x, p.y);
    absl::StrAppendFormat(&s,
                          "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">%s</text>\n",
                          sx(p.x) + 6, sy(p.y) - 6, color, XmlEscape(p.label));
  }
  // Legend.
  double ly = top + 10;
  for (int k = 0; k <= max_series && !points.empty(); ++k) {
    const std::string name = k < static_cast<int>(o.series_names.size())
                                 ? o.series_names[k]
                                 : absl::StrCat("series ", k);
    absl::StrAppendFormat(&s,
                          "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>\n"
                          "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                          left + pw + 20, ly, kColors[k % 8], left + pw + 30, ly + 4,
                          XmlEscape(name));
    ly += 20;
  }
  if (frontier.size() >= 2) {
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" "
                          "stroke-width=\"1.5\"/>\n<text x=\"%.1f\" y=\"%.1f\">frontier</text>\n",
                          left + pw + 12, ly, left + pw + 28, ly, left + pw + 30, ly + 4);
  }
  // Key.
  double ky = plot_height + 10;
  for (const PlotPoint& p : points) {
    if (p.description.empty()) continue;
    absl::StrAppendFormat(&s,
                          "<text x=\"20\" y=\"%.1f\" font-size=\"11\"><tspan fill=\"%s\" "
                          "font-weight=\"bold\">%s</tspan>: %s</text>\n",
                          ky, kColors[((p.series % 8) + 8) % 8], XmlEscape(p.label),
                          XmlEscape(p.description));
    ky += key_line;
  }
  s += "</svg>\n";
  return s;
}

}  // namespace memshare::bench
