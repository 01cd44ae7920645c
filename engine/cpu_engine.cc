#include "engine/cpu_engine.h"

#include <algorithm>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/id_text_codec.h"
#include "engine/tokenizer_codec.h"

namespace memshare::engine {

namespace {

// What CreateCpuEngine and CreateEngineBackend derive from the options.
struct Plan {
  model::ModelConfig config;
  int64_t kv_block_bytes = 0;
  int32_t num_blocks = 0;
  int32_t max_model_len = 0;
  bool cuda = false;
  BackendOptions backend;
};

absl::StatusOr<Plan> PlanEngine(const CpuEngineOptions& options) {
  if (options.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size: must be >= 1, got ", options.block_size));
  }
  if (options.num_layer_groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layer_groups: must be >= 1, got ", options.num_layer_groups));
  }
  if (options.num_blocks < 0 || options.kv_cache_bytes < 0 || options.num_threads < 0 ||
      options.max_model_len < 0) {
    return absl::InvalidArgumentError(
        "num_blocks, kv_cache_bytes, num_threads, max_model_len: must be >= 0");
  }
  absl::StatusOr<model::ModelConfig> config = model::ModelConfig::FromModelDir(options.model_dir);
  if (!config.ok()) return config.status();

  Plan out;
  out.config = *config;
  // K and V, bf16, of one block over every layer.
  out.kv_block_bytes =
      config->num_layers * 2 * config->num_kv_heads * options.block_size * config->head_dim * 2;
  const bool cuda = options.tensor_parallel.size > 1 || options.device == DeviceKind::kCuda ||
                    (options.device == DeviceKind::kAuto && CudaDeviceAvailable());
  out.cuda = cuda;
  int64_t blocks = options.num_blocks;
  if (blocks == 0 && !cuda) {
    blocks = options.kv_cache_bytes / std::max<int64_t>(out.kv_block_bytes, 1);
  }
  if (blocks < 2 && !(cuda && blocks == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache_bytes: ", options.kv_cache_bytes, " bytes hold ", blocks,
                     " blocks of ", out.kv_block_bytes, " bytes; at least 2 are needed"));
  }
  out.num_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, int64_t{1} << 30));

  // The model's own limit on positions.
  int64_t model_len = config->max_position_embeddings;
  if (config->sliding_window > 0) model_len = std::min(model_len, config->sliding_window);
  // The CUDA backend sizes its block tables by the model length: without an
  // explicit one, 32768 (the backend's default cap).
  if (cuda && options.max_model_len == 0) model_len = std::min<int64_t>(model_len, 32768);
  const int32_t max_model_len = static_cast<int32_t>(
      options.max_model_len > 0 ? std::min<int64_t>(options.max_model_len, model_len) : model_len);

  BackendOptions backend_options;
  backend_options.device = cuda ? DeviceKind::kCuda : DeviceKind::kCpu;
  backend_options.model_dir = options.model_dir;
  backend_options.load_format = options.load_format;
  // CPU: the blocks kv_cache_bytes holds; CUDA: as asked, else from memory.
  backend_options.num_blocks = cuda ? options.num_blocks : out.num_blocks;
  backend_options.block_size = options.block_size;
  backend_options.num_layer_groups = options.num_layer_groups;
  backend_options.cpu_threads =
      options.num_threads > 0
          ? options.num_threads
          : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  backend_options.gpu_memory_utilization = options.gpu_memory_utilization;
  backend_options.fuse_norms = options.fuse_norms;
  backend_options.max_num_seqs = options.engine.scheduler.max_num_seqs;
  backend_options.max_num_batched_tokens = options.engine.scheduler.max_num_batched_tokens;
  backend_options.max_model_len = max_model_len;
  backend_options.tp_rank = options.tensor_parallel.rank;
  backend_options.tp_size = options.tensor_parallel.size;
  backend_options.collectives = options.tensor_parallel.collectives;
  if (options.tensor_parallel.size > 1) {
    backend_options.cuda_device = options.tensor_parallel.cuda_device;
  }
  out.max_model_len = max_model_len;
  out.backend = backend_options;
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateEngineBackend(const CpuEngineOptions& options) {
  absl::StatusOr<Plan> plan = PlanEngine(options);
  if (!plan.ok()) return plan.status();
  return CreateBackend(plan->backend);
}

absl::StatusOr<CpuEngine> CreateCpuEngine(const CpuEngineOptions& options) {
  absl::StatusOr<Plan> plan = PlanEngine(options);
  if (!plan.ok()) return plan.status();
  const model::ModelConfig* config = &plan->config;
  const bool cuda = plan->cuda;
  const int32_t max_model_len = plan->max_model_len;
  CpuEngine out;
  out.config = plan->config;
  out.kv_block_bytes = plan->kv_block_bytes;
  out.num_blocks = plan->num_blocks;
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(plan->backend);
  if (!backend.ok()) return backend.status();
  out.num_blocks = (*backend)->kv_spec().num_blocks;
  if (options.wrap_backend) {
    backend = options.wrap_backend(*std::move(backend));
    if (!backend.ok()) return backend.status();
  }

  LlmEngine::Parts parts;
  const bool has_tokenizer =
      std::filesystem::exists(std::filesystem::path(options.model_dir) / "tokenizer.json");
  if (has_tokenizer) {
    absl::StatusOr<std::unique_ptr<TokenizerCodec>> codec =
        TokenizerCodec::Create({options.model_dir});
    if (!codec.ok()) return codec.status();
    parts.codec = std::move(*codec);
  } else {
    std::vector<int32_t> eos;
    for (int32_t id : ModelEosTokenIds(options.model_dir)) {
      if (id >= 0 && id < config->vocab_size) eos.push_back(id);
    }
    parts.codec =
        std::make_unique<IdTextCodec>(static_cast<int32_t>(config->vocab_size), std::move(eos));
  }
  out.has_tokenizer = has_tokenizer;
  parts.backend = std::move(*backend);

  LlmEngine::Options engine_options = options.engine;
  engine_options.scheduler.max_model_len = max_model_len;
  ModelInfo& info = engine_options.model_info;
  info.model_id = std::filesystem::path(options.model_dir).lexically_normal().filename().string();
  if (info.model_id.empty()) {
    info.model_id = std::filesystem::path(options.model_dir).parent_path().filename().string();
  }
  info.architecture = config->architecture_name;
  info.num_layers = static_cast<int32_t>(config->num_layers);
  info.device = cuda ? "cuda" : "cpu";
  info.tensor_parallel_size = options.tensor_parallel.size;
  // What one shared block saves: every rank's share of it.
  info.kv_block_bytes = out.kv_block_bytes;
  absl::StatusOr<std::unique_ptr<LlmEngine>> engine =
      LlmEngine::Create(engine_options, std::move(parts));
  if (!engine.ok()) return engine.status();
  out.engine = std::move(*engine);
  return out;
}

}  // namespace memshare::engine
