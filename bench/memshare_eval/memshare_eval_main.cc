// memshare_eval: quick driver (to be completed).
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "bench/memshare_eval/eval_runner.h"

ABSL_FLAG(int32_t, problems, 16, "Held-out problems.");
ABSL_FLAG(int32_t, max_num_seqs, 64, "");
ABSL_FLAG(bool, memshare, false, "");
ABSL_FLAG(double, tau_kv, -1, "");
ABSL_FLAG(double, tau_lex, -1, "");
ABSL_FLAG(double, overlap, -1, "");
ABSL_FLAG(int32_t, threads, 0, "");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace memshare::bench;
  auto problems =
      LoadHeldout("tests/data/tiny_reasoner/heldout.jsonl", absl::GetFlag(FLAGS_problems));
  if (!problems.ok()) return 1;
  EngineSetup setup;
  setup.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  setup.threads = absl::GetFlag(FLAGS_threads);
  EvalConfig c;
  c.memshare = absl::GetFlag(FLAGS_memshare);
  if (absl::GetFlag(FLAGS_tau_kv) >= 0) c.tau_kv = absl::GetFlag(FLAGS_tau_kv);
  if (absl::GetFlag(FLAGS_tau_lex) >= 0) c.tau_lex = absl::GetFlag(FLAGS_tau_lex);
  if (absl::GetFlag(FLAGS_overlap) >= 0) c.min_block_token_overlap = absl::GetFlag(FLAGS_overlap);
  auto r = RunEval(setup, c, *problems);
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "acc %d/%d saved %.4f pool %.4f remapped %ld cand %ld verified %ld rejected %ld steps %ld "
      "dedup %.3f ms/step wall %.1f s tok/s %.0f\n",
      r->num_correct, r->num_problems, r->request_saved(), r->pool_saved_at_peak(),
      r->dedup_remapped, r->dedup_candidates, r->dedup_verified, r->dedup_rejected, r->steps,
      r->dedup_ms_per_step(), r->wall_seconds, r->tokens_per_second());
  return 0;
}
