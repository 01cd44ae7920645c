// `memshare`: the command line of the MemShare engine.
//
//   memshare generate --model DIR (--prompt TEXT | --prompt-file F | --chat) [flags]
//
// Runs the CPU backend in this process; see `memshare generate --help`.
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/cli/generate_args.h"
#include "engine/cli/generate_command.h"
#include "engine/cpu_engine.h"

namespace memshare::engine::cli {
namespace {

constexpr char kUsage[] =
    "Usage: memshare COMMAND [flags]\n"
    "\n"
    "Commands:\n"
    "  generate   generate text with a local model on the CPU (memshare generate --help)\n";

int Generate(const std::vector<std::string>& argv) {
  absl::StatusOr<GenerateArgs> args = ParseGenerateArgs(argv);
  if (!args.ok()) {
    std::cerr << "memshare generate: " << args.status().message() << "\n";
    return 2;
  }
  if (args->help) {
    std::cout << GenerateUsage();
    return 0;
  }

  CpuEngineOptions options;
  options.model_dir = args->model_dir;
  absl::StatusOr<model::LoadFormat> format = model::ParseLoadFormat(args->load_format);
  if (!format.ok()) {
    std::cerr << "memshare generate: --load-format: " << format.status().message() << "\n";
    return 2;
  }
  options.load_format = *format;
  options.block_size = args->block_size;
  options.num_blocks = args->num_blocks;
  options.kv_cache_bytes = int64_t{args->kv_cache_mib} << 20;
  options.num_layer_groups = args->layer_groups;
  options.num_threads = args->threads;
  absl::StatusOr<DeviceKind> device = ParseDeviceKind(args->device);
  if (!device.ok()) {
    std::cerr << "memshare generate: " << device.status().message() << "\n";
    return 2;
  }
  options.device = *device;
  options.gpu_memory_utilization = args->gpu_memory_utilization;
  options.fuse_norms = args->fuse_norms;
  options.engine.scheduler.pipeline_steps = args->async_scheduling;
  options.max_model_len = args->max_model_len;
  options.engine.scheduler.max_num_seqs = args->max_num_seqs;
  options.engine.scheduler.max_num_batched_tokens = args->max_batched_tokens;
  options.engine.kv.enable_prefix_cache = args->prefix_cache;

  if (!args->quiet) std::cerr << "[memshare] loading " << args->model_dir << " ...\n";
  const absl::Time start = absl::Now();
  absl::StatusOr<CpuEngine> engine = CreateCpuEngine(options);
  if (!engine.ok()) {
    std::cerr << "memshare generate: " << engine.status() << "\n";
    return 1;
  }
  if (!args->quiet) {
    const ModelInfo info = engine->engine->GetModelInfo();
    std::cerr << absl::StrFormat(
        "[memshare] %s (%s, %d layers, vocab %d) loaded in %.2f s; KV pool %d blocks of %d "
        "tokens (%d MiB), max model len %d%s\n",
        info.model_id, info.architecture, info.num_layers, info.vocab_size,
        absl::ToDoubleSeconds(absl::Now() - start), engine->num_blocks, info.block_size,
        static_cast<int>(engine->num_blocks * engine->kv_block_bytes >> 20), info.max_model_len,
        engine->has_tokenizer ? "" : "; no tokenizer: prompts and output are token ids");
  }

  absl::Status status = RunGenerate(*args, *engine->engine, engine->kv_block_bytes,
                                    {&std::cin, &std::cout, &std::cerr});
  if (!status.ok()) {
    std::cerr << "memshare generate: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  const kvmanager::KvStatsSnapshot kv = engine->engine->GetKvStats();
  std::cerr << absl::StrFormat(
      "[memshare] KV totals: prefix cache %d/%d blocks hit; MemShare %d steps, %d candidate steps, "
      "%d candidate "
      "pairs, %d verified, %d rejected, %d blocks remapped; %d preemptions\n",
      kv.prefix_cache_hits, kv.prefix_cache_queries, kv.dedup_steps, kv.dedup_candidate_steps,
      kv.dedup_candidates, kv.dedup_verified, kv.dedup_rejected, kv.dedup_remapped,
      engine->engine->GetSchedulerStats().preemptions);
  return 0;
}

}  // namespace
}  // namespace memshare::engine::cli

int main(int argc, char** argv) {
  using memshare::engine::cli::kUsage;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "generate") return memshare::engine::cli::Generate(args);
  std::cerr << "memshare: unknown command \"" << command << "\"\n" << kUsage;
  return 2;
}
