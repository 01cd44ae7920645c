// Builds the compute backend of one rank from the `--device` choice
// (DESIGN.md §5): the CPU backend (reference, runs anywhere) or the CUDA
// backend; "auto" takes CUDA when a CUDA device is usable and the CPU
// otherwise. The worker and the CLI call this; their flags map onto
// BackendOptions one to one.
#ifndef MEMSHARE_ENGINE_BACKEND_FACTORY_H_
#define MEMSHARE_ENGINE_BACKEND_FACTORY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend.h"
#include "engine/cuda/device_collectives.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace memshare::engine {

enum class DeviceKind { kAuto, kCpu, kCuda };

// "auto", "cpu", "cuda" (also "gpu"); INVALID_ARGUMENT naming the flag
// otherwise.
absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view s);

// Whether a CUDA device can be used by this process (a driver and at least
// one device). Never fails: false when the CUDA runtime reports an error.
bool CudaDeviceAvailable();

struct BackendOptions {
  // --device: which backend.
  DeviceKind device = DeviceKind::kAuto;
  // Hugging Face model directory; with load_format kDummy it gives the
  // config unless `config` is set.
  std::string model_dir;
  model::LoadFormat load_format = model::LoadFormat::kSafetensors;
  std::optional<model::ModelConfig> config;
  model::ModelWeights::DummyOptions dummy;
  // Tokens per KV block.
  int32_t block_size = 16;
  // KV layer groups (MemShare decides per group).
  int32_t num_layer_groups = 1;
  // KV blocks per layer group; 0: CPU, as many as cpu_kv_cache_bytes holds;
  // CUDA, sized from gpu_memory_utilization.
  int32_t num_blocks = 0;
  // CPU: memory of the KV pools (every group) when num_blocks is 0.
  int64_t cpu_kv_cache_bytes = int64_t{1} << 30;
  // CPU: threads of the forward pass; 0: every core.
  int32_t cpu_threads = 0;
  // CUDA: --gpu-memory-utilization (share of the card's memory in use once
  // the KV pools are allocated).
  double gpu_memory_utilization = 0.9;
  // CUDA: device ordinal.
  int32_t cuda_device = 0;
  // CUDA: most sequences and tokens in one step (the scheduler's limits;
  // they size the activation buffers and the decode graph buckets).
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 8192;
  // CUDA: longest sequence; 0: the model's (capped at 32768).
  int32_t max_model_len = 0;
  // CUDA: replay decode steps from CUDA graphs.
  bool enable_cuda_graphs = true;
  // CUDA, one GPU: the RMSNorms of steps of up to 64 tokens in the GEMMs'
  // epilogues, the norm weights folded into the next products' weights
  // (cuda::CudaBackend::Options::fuse_norms: ~1 % faster decode steps, one
  // more bf16 rounding of those weights).
  bool fuse_norms = true;
  // Tensor parallelism (CUDA only): this rank's shard of a group of
  // tp_size ranks, over the group's collectives (not owned).
  int32_t tp_rank = 0;
  int32_t tp_size = 1;
  cuda::DeviceCollectives* collectives = nullptr;
};

// The backend `options.device` names (auto: CUDA when CudaDeviceAvailable()).
// FAILED_PRECONDITION for cuda without a usable device; UNIMPLEMENTED for
// tp_size > 1 on the CPU; the backend's own errors otherwise.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_BACKEND_FACTORY_H_
