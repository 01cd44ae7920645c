// An LlmEngine on the CPU backend for a Hugging Face model directory: the
// engine of `memshare generate` and of the laptop demo. The tokenizer is
// the directory's tokenizer.json; a checkpoint without one (the golden test
// models) gets IdTextCodec (prompts and output as token ids).
#ifndef MEMSHARE_ENGINE_CPU_ENGINE_H_
#define MEMSHARE_ENGINE_CPU_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend_factory.h"
#include "engine/llm_engine.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace memshare::engine {

struct CpuEngineOptions {
  // Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
  std::string model_dir;
  // kDummy: random weights of the config's shapes.
  model::LoadFormat load_format = model::LoadFormat::kSafetensors;
  // Tokens per KV block (the worker's default; see its --block_size).
  int32_t block_size = 8;
  // KV blocks per layer group; 0: as many as kv_cache_bytes holds.
  int32_t num_blocks = 0;
  // Memory of the KV pool (every layer group) when num_blocks is 0.
  int64_t kv_cache_bytes = int64_t{1} << 30;
  // KV layer groups (MemShare decides per group).
  int32_t num_layer_groups = 1;
  // Threads of the forward pass; 0: every core.
  int32_t num_threads = 0;
  // Which backend computes (engine/backend_factory.h): the CPU backend, the
  // CUDA backend, or auto (CUDA when a device is usable). The CLI and the
  // worker default to auto; this struct to the CPU, as before.
  DeviceKind device = DeviceKind::kCpu;
  // CUDA: share of the card's memory in use once the KV pool is allocated;
  // the pool takes what the weights and buffers leave (num_blocks = 0).
  double gpu_memory_utilization = 0.9;
  // CUDA, one GPU: the decode steps' RMSNorms in the GEMM epilogues
  // (BackendOptions::fuse_norms).
  bool fuse_norms = true;
  // Longest prompt + generation; 0 (or more than the model allows): the
  // model's max_position_embeddings (and Mistral's sliding window).
  int32_t max_model_len = 0;
  // Scheduler limits, queue bound, prefix cache and MemShare policy.
  // scheduler.max_model_len, the KV geometry and model_info are filled in.
  LlmEngine::Options engine;
  // Tensor parallelism (CUDA): this process's rank of a group of `size`,
  // the group's device collectives (not owned) and this rank's CUDA device.
  // The backend is then this rank's shard.
  struct TensorParallel {
    int32_t rank = 0;
    int32_t size = 1;
    cuda::DeviceCollectives* collectives = nullptr;
    int32_t cuda_device = 0;
  };
  TensorParallel tensor_parallel;
  // Applied to the backend before the engine takes it (rank 0 of a group:
  // the GroupLeaderBackend in front of its shard); unset: none.
  std::function<absl::StatusOr<std::unique_ptr<Backend>>(std::unique_ptr<Backend>)> wrap_backend;
};

struct CpuEngine {
  std::unique_ptr<LlmEngine> engine;
  model::ModelConfig config;
  // Bytes of one KV block over every layer (all groups): what one shared
  // block saves.
  int64_t kv_block_bytes = 0;
  int32_t num_blocks = 0;
  bool has_tokenizer = false;
};

// Errors name the file or the option at fault.
absl::StatusOr<CpuEngine> CreateCpuEngine(const CpuEngineOptions& options);

// The backend CreateCpuEngine builds for `options` (before wrap_backend),
// alone: what a follower rank of a tensor-parallel group runs, built from
// the same options as rank 0's.
absl::StatusOr<std::unique_ptr<Backend>> CreateEngineBackend(const CpuEngineOptions& options);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_CPU_ENGINE_H_
