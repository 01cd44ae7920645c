#include "engine/server/engine_factory.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu_engine.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.json) to serve.");
ABSL_FLAG(std::string, load_format, "auto",
          "auto: the checkpoint's safetensors; dummy: random weights of its shapes.");
ABSL_FLAG(int32_t, block_size, 16, "Tokens per KV block.");
ABSL_FLAG(int32_t, num_blocks, 0, "KV blocks per layer group; 0: as many as --kv_cache_mib holds.");
ABSL_FLAG(int32_t, kv_cache_mib, 1024, "Memory of the KV pool when --num_blocks is 0.");
ABSL_FLAG(int32_t, layer_groups, 1, "KV layer groups (MemShare decides per group).");
ABSL_FLAG(int32_t, threads, 0, "Threads of the CPU forward pass; 0: every core.");
ABSL_FLAG(std::string, device, "auto",
          "Backend: cuda (the GPU), cpu, or auto = cuda when a CUDA device is usable, else cpu.");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "CUDA: share of the GPU's memory in use once the KV pool is allocated (the pool takes "
          "what the weights and buffers leave; --num_blocks overrides).");
ABSL_FLAG(int32_t, max_model_len, 0,
          "Longest prompt + generation; 0: the model's max_position_embeddings.");
ABSL_FLAG(int32_t, max_prompt_len, 0, "Longest prompt accepted; 0: max_model_len - 1.");
ABSL_FLAG(int32_t, max_num_seqs, 64, "Most sequences in a batch.");
ABSL_FLAG(int32_t, max_batched_tokens, 2048, "Token budget of one step (chunked prefill).");
ABSL_FLAG(int32_t, max_live_requests, 1024,
          "Requests queued or running beyond which new ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(bool, prefix_cache, true, "Reuse the KV of prompt prefixes across requests.");
ABSL_FLAG(std::string, memshare, "on",
          "MemShare for requests that leave it to the server: on or off.");
ABSL_FLAG(double, tau_lex, 0.5, "Default MemShare lexical (MinHash Jaccard) threshold, [0, 1].");
ABSL_FLAG(double, tau_kv, 0.2, "Default MemShare K/V relative L2 distance threshold, >= 0.");

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags() {
  CpuEngineOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model: is required");
  absl::StatusOr<model::LoadFormat> format =
      model::ParseLoadFormat(absl::GetFlag(FLAGS_load_format));
  if (!format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--load_format: ", format.status().message()));
  }
  o.load_format = *format;
  o.block_size = absl::GetFlag(FLAGS_block_size);
  o.num_blocks = absl::GetFlag(FLAGS_num_blocks);
  o.kv_cache_bytes = int64_t{absl::GetFlag(FLAGS_kv_cache_mib)} << 20;
  o.num_layer_groups = absl::GetFlag(FLAGS_layer_groups);
  o.num_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<DeviceKind> device = ParseDeviceKind(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return device.status();
  o.device = *device;
  o.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(o.gpu_memory_utilization > 0 && o.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu_memory_utilization: must be in (0, 1], got ", o.gpu_memory_utilization));
  }
  o.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  o.engine.scheduler.max_prompt_len = absl::GetFlag(FLAGS_max_prompt_len);
  o.engine.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  o.engine.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens);
  o.engine.max_live_requests = absl::GetFlag(FLAGS_max_live_requests);
  o.engine.kv.enable_prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  const std::string memshare = absl::GetFlag(FLAGS_memshare);
  if (memshare != "on" && memshare != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--memshare: must be on or off, got \"", memshare, "\""));
  }
  o.engine.kv.dedup.mode =
      memshare == "on" ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
  o.engine.kv.dedup.tau_lex = static_cast<float>(absl::GetFlag(FLAGS_tau_lex));
  o.engine.kv.dedup.tau_kv = static_cast<float>(absl::GetFlag(FLAGS_tau_kv));
  absl::StatusOr<CpuEngine> engine = CreateCpuEngine(o);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<InferenceEngine>(std::move(engine->engine));
}

}  // namespace memshare::engine
