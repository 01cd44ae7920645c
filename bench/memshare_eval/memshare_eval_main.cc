// memshare_eval: the MemShare evaluation of issue 8 on the CPU backend.
//
// Runs held-out problems of the tiny reasoner through an in-process engine
// with MemShare off and under each configuration of --configs, all
// problems of a run batched together; prints a table, writes
// <out>.csv (one row per run), <out>_problems.csv (one row per problem and
// run) and <out>.svg (accuracy against KV blocks saved at peak).
//
// Accuracy sweep (large pool; all problems at once):
//   memshare_eval --problems=600
//       --configs="memshare=off; tau_kv=0.1,0.2,0.3 groups=1,4" --out=bench/results/sweep
// Throughput under memory pressure (small pool, repeated, off and on
// interleaved):
//   memshare_eval --problems=200 --num_blocks=160 --repeats=3
//       --configs="memshare=off; memshare=on" --out=bench/results/pressure
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "bench/memshare_eval/config_spec.h"
#include "bench/memshare_eval/eval_report.h"
#include "bench/memshare_eval/eval_runner.h"
#include "bench/memshare_eval/heldout.h"
#include "common/process_main.h"

ABSL_FLAG(std::string, model, "assets/models/tiny-reasoner", "Hugging Face model directory.");
ABSL_FLAG(std::string, data, "tests/data/tiny_reasoner/heldout.jsonl",
          "Held-out problems: JSON lines with id, problem, answer.");
ABSL_FLAG(int32_t, problems, 100, "Problems to run, from --first (0: all).");
ABSL_FLAG(int32_t, first, 0, "Index (line) of the first problem of --data to run.");
ABSL_FLAG(std::vector<std::string>, ids, {},
          "Only these problem ids (comma-separated; from the first --problems of --data).");
ABSL_FLAG(std::string, configs, "memshare=off; memshare=on",
          "MemShare configurations, ';'-separated key=value lists (comma lists expand to every "
          "combination). Keys: name, memshare (on|off), tau_lex, tau_kv, overlap, candidates, "
          "measure (any|anchored), near_delay, shifted (on|off), numbers (keep|any), min_step, "
          "max_step, delims "
          "('|'-separated, \\n newline, \\s space), groups, share "
          "('+'-separated groups). Unset keys keep the server defaults. The first "
          "memshare=off run is the reference of the accuracy comparison.");
ABSL_FLAG(std::string, device, "cpu", "Backend: cpu, cuda or auto (CUDA when a device is usable).");
ABSL_FLAG(int32_t, threads, 0, "CPU forward threads (0: every core).");
ABSL_FLAG(int32_t, max_num_seqs, 64, "Most sequences in a batch.");
ABSL_FLAG(int32_t, max_batched_tokens, 2048, "Most tokens in one step.");
ABSL_FLAG(bool, async_scheduling, true,
          "Pipelined steps where the backend runs them (the worker's --async_scheduling): the "
          "next decode step submitted while the current one runs; false: one by one.");
ABSL_FLAG(double, admission_reserve, 0.0,
          "Conservative admission under memory pressure, [0, 1] (the worker's "
          "--admission_reserve); 0: admit whenever the prompt fits.");
ABSL_FLAG(int32_t, max_tokens, 1200, "Generation limit per problem (greedy).");
ABSL_FLAG(int32_t, num_blocks, 0,
          "KV blocks per layer group; 0: enough for the whole batch (no memory pressure). A "
          "small pool bounds the batch by memory (the throughput experiment).");
ABSL_FLAG(bool, prefix_cache, true, "Exact prefix caching across requests.");
ABSL_FLAG(int32_t, block_size, 8,
          "KV block size in tokens, as the worker's --block_size (MemShare shares whole blocks; "
          "--num_blocks counts these).");
ABSL_FLAG(int32_t, repeats, 1,
          "Runs of every configuration, interleaved (all configs, then all again), for timing "
          "spread.");
ABSL_FLAG(std::string, out, "",
          "Output path prefix: writes PREFIX.csv, PREFIX_problems.csv and PREFIX.svg. Empty: "
          "only the table on stdout.");
ABSL_FLAG(bool, write_replies, false,
          "Also write PREFIX_replies.jsonl: every reply's text (about 2 kB per problem and run).");
ABSL_FLAG(double, target_saved, 30, "Memory saving target drawn on the plot, percent.");
ABSL_FLAG(std::string, title, "MemShare on the tiny reasoner: accuracy vs KV memory saved",
          "Plot title.");

namespace memshare::bench {
namespace {

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) {
    std::fprintf(stderr, "memshare_eval: cannot write %s\n", path.c_str());
    return false;
  }
  std::fprintf(stderr, "[memshare_eval] wrote %s\n", path.c_str());
  return true;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int Main() {
  absl::StatusOr<std::vector<EvalConfig>> configs = ParseConfigSpecs(absl::GetFlag(FLAGS_configs));
  if (!configs.ok()) {
    std::fprintf(stderr, "memshare_eval: --configs: %s\n",
                 std::string(configs.status().message()).c_str());
    return 2;
  }
  if (configs->empty()) {
    std::fprintf(stderr, "memshare_eval: --configs names no configuration\n");
    return 2;
  }
  const int32_t repeats = absl::GetFlag(FLAGS_repeats);
  if (repeats < 1) {
    std::fprintf(stderr, "memshare_eval: --repeats must be >= 1\n");
    return 2;
  }
  const int32_t first = absl::GetFlag(FLAGS_first);
  const int32_t count = absl::GetFlag(FLAGS_problems);
  if (first < 0 || count < 0) {
    std::fprintf(stderr, "memshare_eval: --first and --problems must be >= 0\n");
    return 2;
  }
  absl::StatusOr<std::vector<HeldoutProblem>> problems =
      LoadHeldout(absl::GetFlag(FLAGS_data), count > 0 ? first + count : 0);
  if (problems.ok()) {
    problems->erase(problems->begin(),
                    problems->begin() + std::min<size_t>(first, problems->size()));
  }
  if (problems.ok() && !absl::GetFlag(FLAGS_ids).empty()) {
    std::vector<HeldoutProblem> picked;
    for (const std::string& text : absl::GetFlag(FLAGS_ids)) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(text, &id)) {
        std::fprintf(stderr, "memshare_eval: --ids: \"%s\" is not an integer\n", text.c_str());
        return 2;
      }
      for (const HeldoutProblem& p : *problems) {
        if (p.id == id) picked.push_back(p);
      }
    }
    *problems = std::move(picked);
  }
  if (!problems.ok() || problems->empty()) {
    std::fprintf(stderr, "memshare_eval: --data: %s\n",
                 problems.ok() ? "no problems" : std::string(problems.status().message()).c_str());
    return 2;
  }
  EngineSetup setup;
  setup.model_dir = absl::GetFlag(FLAGS_model);
  setup.device = absl::GetFlag(FLAGS_device);
  setup.threads = absl::GetFlag(FLAGS_threads);
  setup.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  setup.admission_reserve = absl::GetFlag(FLAGS_admission_reserve);
  setup.async_scheduling = absl::GetFlag(FLAGS_async_scheduling);
  setup.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens);
  setup.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  setup.num_blocks = absl::GetFlag(FLAGS_num_blocks);
  setup.block_size = absl::GetFlag(FLAGS_block_size);
  setup.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);

  std::fprintf(stderr,
               "[memshare_eval] %zu problems, %zu configs x %d repeats, device %s, max_num_seqs "
               "%d, num_blocks %d, admission_reserve %g, async_scheduling %d\n",
               problems->size(), configs->size(), repeats, setup.device.c_str(), setup.max_num_seqs,
               setup.num_blocks, setup.admission_reserve, setup.async_scheduling ? 1 : 0);
  // results[repeat][config]
  std::vector<std::vector<EvalResult>> results(repeats);
  for (int32_t rep = 0; rep < repeats; ++rep) {
    for (const EvalConfig& config : *configs) {
      absl::StatusOr<EvalResult> r = RunEval(setup, config, *problems);
      if (!r.ok()) {
        std::fprintf(stderr, "memshare_eval: %s: %s\n", config.name.c_str(),
                     r.status().ToString().c_str());
        return absl::IsInvalidArgument(r.status()) ? 2 : 1;
      }
      std::fprintf(stderr,
                   "[memshare_eval] rep %d %s: accuracy %.2f%%, saved %.2f%%, remapped %lld, "
                   "%.1f s, %.0f tok/s, %lld preemptions\n",
                   rep, config.name.c_str(), 100 * r->accuracy(), 100 * r->request_saved(),
                   static_cast<long long>(r->dedup_remapped), r->wall_seconds,
                   r->tokens_per_second(), static_cast<long long>(r->preemptions));
      results[rep].push_back(*std::move(r));
    }
  }

  // The reference of each repeat: its first memshare=off run.
  std::vector<ReportRow> rows;
  for (int32_t rep = 0; rep < repeats; ++rep) {
    const EvalResult* reference = nullptr;
    for (const EvalResult& r : results[rep]) {
      if (!r.config.memshare) {
        reference = &r;
        break;
      }
    }
    for (const EvalResult& r : results[rep]) rows.push_back({&r, reference, rep});
  }
  std::printf("%s", FormatTable(rows).c_str());
  std::printf(
      "\nms a step: the forward pass per step of its kind; outside = the engine's own "
      "work between phases\n%s",
      FormatPhaseTable(rows).c_str());

  // Per configuration over the repeats: accuracy and saving (deterministic
  // up to scheduling), throughput spread.
  const EvalResult* reference = rows.front().reference;
  std::vector<PlotPoint> points;
  std::map<int32_t, int> series_of_groups;
  for (const EvalConfig& c : *configs) series_of_groups.emplace(c.layer_groups, 0);
  int next_series = 0;
  std::vector<std::string> series_names;
  for (auto& [groups, series] : series_of_groups) {
    series = next_series++;
    series_names.push_back(absl::StrCat(groups, groups == 1 ? " layer group" : " layer groups"));
  }
  const EvalResult* best = nullptr;
  if (repeats > 1) {
    std::printf("\n%-40s %10s %10s %10s %10s %10s %10s %9s\n", "config (throughput)", "req/s med",
                "min", "max", "tok/s med", "min", "max", "vs off");
  }
  double reference_tok_s = 0;
  for (size_t k = 0; k < configs->size(); ++k) {
    std::vector<double> req_s, tok_s;
    for (int32_t rep = 0; rep < repeats; ++rep) {
      req_s.push_back(results[rep][k].requests_per_second());
      tok_s.push_back(results[rep][k].tokens_per_second());
    }
    const EvalResult& r = results[0][k];
    if (&r == reference) reference_tok_s = Median(tok_s);
    if (repeats > 1) {
      std::printf(
          "%-40s %10.3f %10.3f %10.3f %10.0f %10.0f %10.0f %8s\n", r.config.name.c_str(),
          Median(req_s), *std::min_element(req_s.begin(), req_s.end()),
          *std::max_element(req_s.begin(), req_s.end()), Median(tok_s),
          *std::min_element(tok_s.begin(), tok_s.end()),
          *std::max_element(tok_s.begin(), tok_s.end()),
          reference_tok_s > 0
              ? absl::StrFormat("%+.1f%%", 100 * (Median(tok_s) / reference_tok_s - 1)).c_str()
              : "-");
    }
    points.push_back({100 * r.request_saved(), 100 * r.accuracy(), absl::StrCat(k + 1),
                      r.config.name, series_of_groups[r.config.layer_groups]});
    if (reference != nullptr && r.config.memshare &&
        r.num_correct >= reference->num_correct - 0.01 * reference->num_problems &&
        (best == nullptr || r.request_saved() > best->request_saved())) {
      best = &r;
    }
  }
  if (reference != nullptr) {
    std::printf("\nreference (MemShare off): %.2f%% (%d/%d)\n", 100 * reference->accuracy(),
                reference->num_correct, reference->num_problems);
    if (best != nullptr) {
      std::printf(
          "most memory saved within 1 point of it: %s — %.2f%% saved at peak, accuracy %.2f%%\n",
          best->config.name.c_str(), 100 * best->request_saved(), 100 * best->accuracy());
    } else {
      std::printf("no MemShare configuration stays within 1 point of it\n");
    }
  }

  const std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty()) {
    PlotOptions plot;
    plot.title = absl::StrFormat("%s (%zu problems)", absl::GetFlag(FLAGS_title), problems->size());
    plot.series_names = series_names;
    if (reference != nullptr) {
      plot.reference_y = 100 * reference->accuracy() - 1;
      plot.reference_y_label = "MemShare off - 1 point";
    }
    plot.target_x = absl::GetFlag(FLAGS_target_saved);
    plot.target_x_label = absl::StrFormat("target %g%%", plot.target_x);
    if (!WriteFile(out + ".csv", FormatCsv(rows)) ||
        !WriteFile(out + "_problems.csv", FormatProblemsCsv(rows)) ||
        !WriteFile(out + ".svg", RenderScatterSvg(points, plot))) {
      return 1;
    }
    if (absl::GetFlag(FLAGS_write_replies) &&
        !WriteFile(out + "_replies.jsonl", FormatRepliesJsonl(rows))) {
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace memshare::bench

int main(int argc, char** argv) {
  memshare::ParseFlags(argc, argv,
                       "MemShare evaluation: held-out accuracy vs KV memory saved, and throughput "
                       "under memory pressure, on an in-process engine.");
  return memshare::bench::Main();
}
