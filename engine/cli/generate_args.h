// Command line of `memshare generate`: what each flag means, its default,
// and the parser. Every error names the flag it is about.
#ifndef MEMSHARE_ENGINE_CLI_GENERATE_ARGS_H_
#define MEMSHARE_ENGINE_CLI_GENERATE_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/request.h"

namespace memshare::engine::cli {

struct GenerateArgs {
  // Model.
  std::string model_dir;
  std::string load_format = "auto";  // "auto" (safetensors) or "dummy" (random weights)
  // Prompt: exactly one source.
  std::string prompt;
  std::string prompt_file;
  bool chat = false;
  std::string system_prompt;  // --chat only
  // Generation.
  SamplingParams sampling;
  MemShareParams::Mode memshare = MemShareParams::Mode::kOff;
  std::optional<float> tau_lex;
  std::optional<float> tau_kv;
  // Engine.
  int32_t max_model_len = 0;  // 0: the model's
  int32_t block_size = 8;     // the worker's default (its --block_size)
  int32_t num_blocks = 0;  // 0: from kv_cache_mib
  int32_t kv_cache_mib = 1024;
  int32_t layer_groups = 1;
  int32_t max_num_seqs = 16;
  int32_t max_batched_tokens = 2048;
  int32_t threads = 0;                  // 0: all cores
  std::string device = "auto";          // auto (CUDA when a GPU is usable), cpu or cuda
  float gpu_memory_utilization = 0.9f;  // CUDA: share of the card in use with the KV pool
  bool prefix_cache = true;
  bool fuse_norms = true;  // CUDA, one GPU: the norms in the GEMM epilogues
  bool async_scheduling = true;  // pipelined steps where the backend runs them
  // Output.
  bool quiet = false;  // no progress lines on stderr
  bool help = false;
};

// Parses the arguments after "generate". --help sets `help` and skips the
// other checks. INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<GenerateArgs> ParseGenerateArgs(absl::Span<const std::string> args);

// The --help text: every flag, its value and default.
std::string GenerateUsage();

}  // namespace memshare::engine::cli

#endif  // MEMSHARE_ENGINE_CLI_GENERATE_ARGS_H_
