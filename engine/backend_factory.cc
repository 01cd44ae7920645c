#include "engine/backend_factory.h"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"

namespace memshare::engine {

absl::StatusOr<DeviceKind> ParseDeviceKind(absl::string_view s) {
  const std::string d = absl::AsciiStrToLower(s);
  if (d == "auto") return DeviceKind::kAuto;
  if (d == "cpu") return DeviceKind::kCpu;
  if (d == "cuda" || d == "gpu") return DeviceKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("--device \"", s, "\": expected auto, cpu or cuda"));
}

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // leave no error behind for the next CUDA call
    return false;
  }
  return count > 0;
}

namespace {

absl::StatusOr<std::unique_ptr<Backend>> CreateCpu(const BackendOptions& o) {
  if (o.tp_size > 1) {
    return absl::UnimplementedError(
        "tensor parallelism runs on the CUDA backend only (--device cuda)");
  }
  cpu::CpuBackend::Options c;
  c.model_dir = o.model_dir;
  c.load_format = o.load_format;
  c.config = o.config;
  c.dummy = o.dummy;
  c.block_size = o.block_size;
  c.num_layer_groups = o.num_layer_groups;
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  c.num_threads = o.cpu_threads > 0 ? o.cpu_threads : static_cast<int32_t>(std::max(1L, cores));
  c.num_blocks = o.num_blocks;
  if (c.num_blocks == 0) {
    model::ModelConfig config;
    if (o.config.has_value() && o.load_format == model::LoadFormat::kDummy) {
      config = *o.config;
    } else {
      absl::StatusOr<model::ModelConfig> read = model::ModelConfig::FromModelDir(o.model_dir);
      if (!read.ok()) return read.status();
      config = *read;
    }
    // Bytes of one block id across every layer group: all layers' K and V.
    const int64_t per_block =
        config.num_layers * 2 * config.num_kv_heads * o.block_size * config.head_dim * 2;
    const int64_t blocks = per_block > 0 ? o.cpu_kv_cache_bytes / per_block : 0;
    if (blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv cache of ", o.cpu_kv_cache_bytes, " bytes holds no block of ", per_block, " bytes"));
    }
    c.num_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, 1 << 30));
  }
  absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> b = cpu::CpuBackend::Create(c);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(*std::move(b));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCuda(const BackendOptions& o) {
  cuda::CudaBackend::Options c;
  c.model_dir = o.model_dir;
  c.load_format = o.load_format;
  c.config = o.config;
  c.dummy = o.dummy;
  c.device = o.cuda_device;
  c.block_size = o.block_size;
  c.num_layer_groups = o.num_layer_groups;
  c.num_blocks = o.num_blocks;
  c.gpu_memory_utilization = o.gpu_memory_utilization;
  c.max_num_seqs = o.max_num_seqs;
  c.max_num_batched_tokens = o.max_num_batched_tokens;
  c.max_model_len = o.max_model_len;
  c.enable_cuda_graphs = o.enable_cuda_graphs;
  c.fuse_norms = o.fuse_norms;
  c.tp_rank = o.tp_rank;
  c.tp_size = o.tp_size;
  c.collectives = o.collectives;
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> b = cuda::CudaBackend::Create(c);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(*std::move(b));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& o) {
  switch (o.device) {
    case DeviceKind::kCpu:
      return CreateCpu(o);
    case DeviceKind::kCuda:
      if (!CudaDeviceAvailable()) {
        return absl::FailedPreconditionError("--device cuda: no usable CUDA device");
      }
      return CreateCuda(o);
    case DeviceKind::kAuto:
      break;
  }
  return CudaDeviceAvailable() ? CreateCuda(o) : CreateCpu(o);
}

}  // namespace memshare::engine
