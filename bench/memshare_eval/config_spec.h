// The sweep of memshare_eval as text: configurations separated by ';',
// each a space-separated list of key=value settings; a value may be a
// comma-separated list, and a configuration with lists stands for every
// combination (the cartesian product, in the order the keys are written,
// last key fastest).
//
//   "memshare=off; tau_kv=0.1,0.2,0.3 groups=1,4"   -> 1 + 6 configurations
//
// Keys (unset: the KvManager default):
//   name        row name (default: built from the other keys, "off" when off)
//   memshare    on | off (default on)
//   tau_lex     lexical threshold, [0, 1]
//   tau_kv      relative K/V distance threshold, >= 0
//   overlap     min_block_token_overlap, (0, 1]
//   candidates  max_candidates_per_step, >= 1
//   measure     overlap_measure: any (every agreeing slot) | anchored (a run
//               at one end of the block)
//   near_delay  near_match_delay_tokens, >= 0
//   shifted     shifted_sharing: on | off
//   numbers     keep_numbers: keep (refuse near matches that differ in a
//               digit) | any
//   min_step    segmenter min_step_tokens, >= 1
//   max_step    segmenter max_step_tokens, >= 0 (0: unlimited)
//   delims      segmenter delimiters separated by '|', "\n" for a newline
//   groups      KV layer groups, >= 1
//   share       layer groups that may share, '+'-separated ("0+1"); default all
//
// Pure functions; thread-safe.
#ifndef MEMSHARE_BENCH_MEMSHARE_EVAL_CONFIG_SPEC_H_
#define MEMSHARE_BENCH_MEMSHARE_EVAL_CONFIG_SPEC_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bench/memshare_eval/eval_runner.h"

namespace memshare::bench {

// INVALID_ARGUMENT naming the configuration and key at fault. An empty
// spec gives no configuration.
absl::StatusOr<std::vector<EvalConfig>> ParseConfigSpecs(absl::string_view spec);

// The settings of `config` that differ from the defaults, in the spec's
// syntax ("memshare=off" for a config without MemShare): what a row is
// named by default, and what the CSV records.
std::string DescribeConfig(const EvalConfig& config);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_MEMSHARE_EVAL_CONFIG_SPEC_H_
