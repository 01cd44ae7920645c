#include "engine/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "engine/cuda/shard_candidates.h"
#include "engine/cuda/shard_sampling.h"
#include "engine/model/safetensors_reader.h"
#include "engine/model/weight_spec.h"
#include "engine/plan_validation.h"
#include "kernels/attention.h"
#include "kernels/attention_generic.h"
#include "kernels/block_copy.h"
#include "kernels/block_distance.h"
#include "kernels/dummy_weights.h"
#include "kernels/embedding.h"
#include "kernels/greedy_candidate.h"
#include "kernels/logprob.h"
#include "kernels/norm.h"
#include "kernels/qkv.h"
#include "kernels/sampling.h"

namespace memshare::engine::cuda {
namespace {

using kernels::GreedyCandidateToken;

using model::WeightRole;
using model::WeightSpec;

// Memory kept free beyond (1 - gpu_memory_utilization) of the card when the
// pools are sized: CUDA graphs, cuBLASLt's internal allocations, growth of
// the block-pair buffers.
constexpr int64_t kReserveBytes = int64_t{256} << 20;
constexpr size_t kArenaAlign = 256;

absl::Status Cuda(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

#define RETURN_IF_ERROR(expr)             \
  do {                                    \
    const absl::Status status__ = (expr); \
    if (!status__.ok()) return status__;  \
  } while (0)

size_t AlignUp(size_t x, size_t a) { return (x + a - 1) / a * a; }

// The block-pair buffers (pinned and device) of `cap` pairs: CopyBlocks'
// (src, dst) pairs, or ComputeDistanceSums' kvmanager::BlockPair array
// (int32 [cap][4]) followed, 16-byte aligned, by its results.
static_assert(sizeof(kvmanager::BlockPair) == 16 && alignof(kvmanager::BlockPair) == 4,
              "BlockPair is uploaded as int32 [n][4]");
static_assert(offsetof(kvmanager::BlockPair, candidate) == 0 &&
                  offsetof(kvmanager::BlockPair, reference) == 4 &&
                  offsetof(kvmanager::BlockPair, reference_next) == 8 &&
                  offsetof(kvmanager::BlockPair, shift) == 12,
              "BlockPair's fields in the order of kernels/block_distance.h");
size_t PairResultsOffset(size_t cap) { return AlignUp(cap * sizeof(kvmanager::BlockPair), 16); }
size_t PairBufferBytes(size_t cap) {
  return PairResultsOffset(cap) + cap * sizeof(kernels::BlockPairSums);
}

// The dummy-weight stream of a tensor: these two must stay equal to
// engine/model/model_weights.cc (checked by //tests/gpu:cuda_backend_test).
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(absl::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

bool IsNorm(WeightRole r) {
  return r == WeightRole::kFinalNorm || r == WeightRole::kInputNorm ||
         r == WeightRole::kPostAttentionNorm || r == WeightRole::kQNorm || r == WeightRole::kKNorm;
}

void* Bf16At(const void* base, int64_t elements) {
  return const_cast<uint16_t*>(static_cast<const uint16_t*>(base)) + elements;
}

absl::StatusOr<model::ModelConfig> ConfigOf(const CudaBackend::Options& o) {
  if (o.load_format == model::LoadFormat::kDummy && o.config.has_value()) return *o.config;
  if (o.model_dir.empty()) {
    return absl::InvalidArgumentError(o.load_format == model::LoadFormat::kDummy
                                          ? "dummy weights need a config or a model_dir"
                                          : "model_dir is empty");
  }
  return model::ModelConfig::FromModelDir(o.model_dir);
}

std::vector<int32_t> DefaultBuckets(int32_t max_seqs) {
  std::vector<int32_t> b;
  for (int32_t s : {1, 2, 4, 8}) {
    if (s < max_seqs) b.push_back(s);
  }
  for (int32_t s = 16; s < max_seqs; s += (s < 128 ? 16 : 32)) b.push_back(s);
  b.push_back(max_seqs);
  return b;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const Options& o) {
  absl::StatusOr<model::ModelConfig> config = ConfigOf(o);
  if (!config.ok()) return config.status();
  RETURN_IF_ERROR(config->Validate());
  const model::ModelConfig& c = *config;
  if (o.block_size < 1 || o.block_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size = ", o.block_size, ": must be 1 .. 4096"));
  }
  if (o.num_layer_groups < 1 || o.num_layer_groups > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("num_layer_groups = ", o.num_layer_groups,
                                                   ": must be 1 .. num_layers (", c.num_layers,
                                                   ")"));
  }
  if (o.num_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_blocks = ", o.num_blocks, ": must be >= 0"));
  }
  if (!(o.gpu_memory_utilization > 0.0 && o.gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_utilization = ", o.gpu_memory_utilization, ": must be in (0, 1]"));
  }
  if (o.max_num_batched_tokens < 1 || o.max_num_batched_tokens > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_num_batched_tokens = ", o.max_num_batched_tokens, ": must be 1 .. 1048576"));
  }
  if (o.max_num_seqs < 1 || o.max_num_seqs > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_seqs = ", o.max_num_seqs, ": must be 1 .. 4096"));
  }
  if (o.max_model_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_model_len = ", o.max_model_len, ": must be >= 0"));
  }
  if (o.tp_size < 1 || o.tp_size > 64 || o.tp_rank < 0 || o.tp_rank >= o.tp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallel rank ", o.tp_rank, " of ", o.tp_size));
  }
  if (o.tp_size > 1 && (o.collectives == nullptr || o.collectives->world_size() != o.tp_size ||
                        o.collectives->rank() != o.tp_rank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tp_size ", o.tp_size, " needs the group's collectives, of this rank and size"));
  }
  if (absl::StatusOr<std::vector<WeightSpec>> split = model::ListWeights(c, {o.tp_rank, o.tp_size});
      !split.ok()) {
    return split.status();
  }
  int32_t prev = 0;
  for (int32_t b : o.cuda_graph_batch_sizes) {
    if (b <= prev || b > o.max_num_seqs) {
      return absl::InvalidArgumentError(
          absl::StrCat("cuda_graph_batch_sizes must ascend within 1 .. max_num_seqs (",
                       o.max_num_seqs, "); got ", b, " after ", prev));
    }
    prev = b;
  }
  if (c.hidden_size % 8 != 0 || c.hidden_size > 16384 || c.head_dim % 8 != 0 || c.head_dim > 256 ||
      c.intermediate_size % (8 * o.tp_size) != 0 || c.num_heads % c.num_kv_heads != 0) {
    return absl::UnimplementedError(
        absl::StrCat("the CUDA backend needs hidden_size (", c.hidden_size,
                     ") a multiple of 8 up to 16384, head_dim (", c.head_dim,
                     ") a multiple of 8 up to 256, intermediate_size (", c.intermediate_size,
                     ") a multiple of 8 per rank (", o.tp_size, ") and whole query groups"));
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("no CUDA device is usable");
  }
  if (o.device < 0 || o.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("device = ", o.device, ": this machine has ", count, " CUDA devices"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend(o, *std::move(config)));
  RETURN_IF_ERROR(b->Init());
  return b;
}

CudaBackend::CudaBackend(const Options& options, model::ModelConfig config)
    : options_(options), config_(std::move(config)) {}

CudaBackend::~CudaBackend() {
  cudaSetDevice(options_.device);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (Bucket& b : bucket_state_) {
    if (b.graph != nullptr) cudaGraphExecDestroy(b.graph);
    if (b.views_graph != nullptr) cudaGraphExecDestroy(b.views_graph);
    if (b.gather_graph != nullptr) cudaGraphExecDestroy(b.gather_graph);
  }
  gemm_.reset();
  for (void* p : pools_) cudaFree(p);
  if (aux_stream_ != nullptr) cudaStreamSynchronize(aux_stream_);
  for (void* p : {weight_arena_, act_arena_, meta_dev_, penalty_dev_, pairs_.dev, aux_pairs_.dev,
                  distance_workspace_, static_cast<void*>(inv_freq_)}) {
    if (p != nullptr) cudaFree(p);
  }
  for (void* p : {meta_host_, penalty_host_, out_host_, pairs_.host, aux_pairs_.host}) {
    if (p != nullptr) cudaFreeHost(p);
  }
  for (cudaEvent_t e :
       {pairs_.copied, aux_pairs_.copied, copies_done_, inputs_uploaded_, out_slots_[0].begin,
        out_slots_[0].end, out_slots_[1].begin, out_slots_[1].end}) {
    if (e != nullptr) cudaEventDestroy(e);
  }
  if (aux_stream_ != nullptr) cudaStreamDestroy(aux_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaBackend::Init() {
  const model::ModelConfig& c = config_;
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  cudaDeviceProp props;
  RETURN_IF_ERROR(Cuda(cudaGetDeviceProperties(&props, options_.device), "device properties"));
  num_sms_ = props.multiProcessorCount;
  RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream"));
  RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&aux_stream_, cudaStreamNonBlocking), "stream"));
  for (cudaEvent_t* e : {&pairs_.copied, &aux_pairs_.copied, &copies_done_}) {
    RETURN_IF_ERROR(Cuda(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "event"));
  }
  RETURN_IF_ERROR(
      Cuda(cudaEventCreateWithFlags(&inputs_uploaded_, cudaEventDisableTiming), "event"));
  for (OutSlot& o : out_slots_) {
    RETURN_IF_ERROR(Cuda(cudaEventCreate(&o.begin), "event"));
    RETURN_IF_ERROR(Cuda(cudaEventCreate(&o.end), "event"));
  }
  CublasLtGemm::Options gemm_options;
  gemm_options.skinny = options_.skinny_gemm;
  gemm_options.skinny_preference = options_.skinny_gemm_preference;
  gemm_options.wide = options_.skinny_wide;
  absl::StatusOr<std::unique_ptr<CublasLtGemm>> gemm = CublasLtGemm::Create(gemm_options);
  if (!gemm.ok()) return gemm.status();
  gemm_ = *std::move(gemm);

  spec_.num_layer_groups = options_.num_layer_groups;
  spec_.group_layer_begin =
      SplitLayers(static_cast<int32_t>(c.num_layers), options_.num_layer_groups);
  spec_.block_size = options_.block_size;
  const model::TensorParallel tp{options_.tp_rank, options_.tp_size};
  spec_.kv_heads_local = static_cast<int32_t>(model::LocalKvHeads(c, tp).count);
  spec_.head_dim = static_cast<int32_t>(c.head_dim);
  heads_local_ = static_cast<int32_t>(c.num_heads / options_.tp_size);
  q_local_ = int64_t{heads_local_} * c.head_dim;
  kv_local_dim_ = int64_t{spec_.kv_heads_local} * c.head_dim;
  inter_local_ = c.intermediate_size / options_.tp_size;
  const model::VocabRange vocab = model::LocalVocab(c, tp);
  vocab_begin_ = vocab.begin;
  vocab_rows_ = vocab.end - vocab.begin;
  vocab_chunk_ = vocab.chunk;
  for (int g = 0; g < spec_.num_layer_groups; ++g) {
    for (int32_t l = spec_.group_layer_begin[g]; l < spec_.group_layer_begin[g + 1]; ++l) {
      group_of_layer_.push_back(g);
    }
  }
  const int64_t model_len = std::min<int64_t>(c.max_position_embeddings, 32768);
  max_model_len_ =
      static_cast<int32_t>(options_.max_model_len > 0 ? std::min<int64_t>(options_.max_model_len,
                                                                          c.max_position_embeddings)
                                                      : model_len);
  max_blocks_per_seq_ = (max_model_len_ + options_.block_size - 1) / options_.block_size;
  buckets_ = options_.cuda_graph_batch_sizes.empty() ? DefaultBuckets(options_.max_num_seqs)
                                                     : options_.cuda_graph_batch_sizes;
  max_seqs_ = options_.max_num_seqs;
  max_tokens_ = std::max(options_.max_num_batched_tokens, buckets_.back());
  kernels::KvBlockShape shape{spec_.LayersInGroup(0), spec_.kv_heads_local, spec_.block_size,
                              spec_.head_dim};
  fast_attention_ = kernels::FastAttentionSupports(shape, heads_local_);
  fold_norms_ =
      options_.fuse_norms && options_.tp_size == 1 && options_.skinny_gemm != SkinnyGemmMode::kOff;
  fold_final_norm_ = fold_norms_ && !c.tie_word_embeddings;

  RETURN_IF_ERROR(AllocateWeights());
  RETURN_IF_ERROR(LoadWeights());
  RETURN_IF_ERROR(AllocateBuffers());
  RETURN_IF_ERROR(AllocatePools());
  return PrepareBuckets();
}

absl::Status CudaBackend::AllocateWeights() {
  const model::ModelConfig& c = config_;
  absl::StatusOr<std::vector<WeightSpec>> specs =
      model::ListWeights(c, {options_.tp_rank, options_.tp_size});
  if (!specs.ok()) return specs.status();
  const int64_t h = c.hidden_size;
  const int64_t q = q_local_;
  const int64_t kv = kv_local_dim_;
  const int64_t qkv_rows = q + 2 * kv;
  const int64_t inter = inter_local_;
  const int64_t V = vocab_rows_;

  // Offsets (bytes) of the fused tensors in the arena.
  size_t size = 0;
  auto take = [&size](int64_t elements) {
    const size_t at = size;
    size = AlignUp(size + static_cast<size_t>(elements) * 2, kArenaAlign);
    return at;
  };
  struct LayerOffsets {
    size_t input_norm, qkv, qkv_bias, q_norm, k_norm, o_proj, post_norm, gate_up, down;
  };
  const size_t embedding = take(V * h);
  const size_t lm_head = c.tie_word_embeddings ? embedding : take(V * h);
  const size_t final_norm = take(h);
  std::vector<LayerOffsets> lo(c.num_layers);
  for (LayerOffsets& L : lo) {
    L.input_norm = take(h);
    L.qkv = take(qkv_rows * h);
    L.qkv_bias = c.qkv_bias ? take(qkv_rows) : 0;
    L.q_norm = c.qk_norm ? take(c.head_dim) : 0;
    L.k_norm = c.qk_norm ? take(c.head_dim) : 0;
    L.o_proj = take(h * q);
    L.post_norm = take(h);
    L.gate_up = take(2 * inter * h);
    L.down = take(h * inter);
  }
  weight_bytes_ = static_cast<int64_t>(size);
  RETURN_IF_ERROR(
      Cuda(cudaMalloc(&weight_arena_, size), absl::StrCat("weights (", size >> 20, " MiB)")));
  char* base = static_cast<char*>(weight_arena_);
  embedding_ = base + embedding;
  lm_head_ = base + lm_head;
  final_norm_ = base + final_norm;
  layers_.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerOffsets& L = lo[l];
    LayerWeights& w = layers_[l];
    w.input_norm = base + L.input_norm;
    w.qkv = base + L.qkv;
    w.qkv_bias = c.qkv_bias ? base + L.qkv_bias : nullptr;
    w.q_norm = c.qk_norm ? base + L.q_norm : nullptr;
    w.k_norm = c.qk_norm ? base + L.k_norm : nullptr;
    w.o_proj = base + L.o_proj;
    w.post_norm = base + L.post_norm;
    w.gate_up = base + L.gate_up;
    w.down = base + L.down;
  }
  // Where each checkpoint tensor goes.
  for (const WeightSpec& s : *specs) {
    const size_t bytes = static_cast<size_t>(s.LocalElements()) * 2;
    const LayerOffsets* L = s.layer >= 0 ? &lo[s.layer] : nullptr;
    size_t at = 0;
    switch (s.role) {
      case WeightRole::kEmbedding:
        at = embedding;
        break;
      case WeightRole::kFinalNorm:
        at = final_norm;
        break;
      case WeightRole::kLmHead:
        at = lm_head;
        break;
      case WeightRole::kInputNorm:
        at = L->input_norm;
        break;
      case WeightRole::kQProj:
        at = L->qkv;
        break;
      case WeightRole::kKProj:
        at = L->qkv + q * h * 2;
        break;
      case WeightRole::kVProj:
        at = L->qkv + (q + kv) * h * 2;
        break;
      case WeightRole::kQBias:
        at = L->qkv_bias;
        break;
      case WeightRole::kKBias:
        at = L->qkv_bias + q * 2;
        break;
      case WeightRole::kVBias:
        at = L->qkv_bias + (q + kv) * 2;
        break;
      case WeightRole::kQNorm:
        at = L->q_norm;
        break;
      case WeightRole::kKNorm:
        at = L->k_norm;
        break;
      case WeightRole::kOProj:
        at = L->o_proj;
        break;
      case WeightRole::kPostAttentionNorm:
        at = L->post_norm;
        break;
      case WeightRole::kGateProj:
        at = L->gate_up;
        break;
      case WeightRole::kUpProj:
        at = L->gate_up + inter * h * 2;
        break;
      case WeightRole::kDownProj:
        at = L->down;
        break;
    }
    weight_slots_.emplace_back(base + at, bytes);
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::LoadWeights() {
  absl::StatusOr<std::vector<WeightSpec>> specs =
      model::ListWeights(config_, {options_.tp_rank, options_.tp_size});
  if (!specs.ok()) return specs.status();
  std::vector<Bf16> host;
  if (options_.load_format == model::LoadFormat::kDummy) {
    const model::ModelWeights::DummyOptions& d = options_.dummy;
    if (!(d.std >= 0) || !std::isfinite(d.std)) {
      return absl::InvalidArgumentError(absl::StrCat("dummy weight std ", d.std));
    }
    for (size_t i = 0; i < specs->size(); ++i) {
      const WeightSpec& s = (*specs)[i];
      const int64_t n = s.LocalElements();
      void* dst = const_cast<void*>(weight_slots_[i].first);
      if (IsNorm(s.role)) {
        host.assign(n, FloatToBf16(1.0f));
        RETURN_IF_ERROR(Cuda(cudaMemcpy(dst, host.data(), n * 2, cudaMemcpyHostToDevice),
                             "upload norm weights"));
        continue;
      }
      const uint64_t key = SplitMix64(d.seed ^ HashName(s.name));
      // Element j of this rank's slice is element full(j) of the whole
      // tensor (kernels/dummy_weights.h): the same values as one rank.
      int64_t base = 0, width = n, full_row = 0;
      if (s.split_dim == 0) {
        int64_t row = 1;
        for (size_t k = 1; k < s.shape.size(); ++k) row *= s.shape[k];
        base = s.begin * row;
      } else if (s.split_dim == 1) {
        base = s.begin;
        width = s.end - s.begin;
        full_row = s.shape[1];
      }
      RETURN_IF_ERROR(
          kernels::LaunchDummyNormalBf16(key, d.std, n, base, width, full_row, dst, stream_));
    }
  } else {
    absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> reader =
        model::SafetensorsReader::OpenDir(options_.model_dir);
    if (!reader.ok()) return reader.status();
    for (size_t i = 0; i < specs->size(); ++i) {
      const WeightSpec& s = (*specs)[i];
      absl::StatusOr<model::TensorView> t = (*reader)->Find(s.name);
      if (!t.ok()) return t.status();
      if (!std::equal(t->shape.begin(), t->shape.end(), s.shape.begin(), s.shape.end())) {
        return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", s.name,
                                                       "' does not have the shape config.json "
                                                       "implies"));
      }
      const int64_t n = s.LocalElements();
      host.resize(n);
      if (s.split_dim == 1) {  // a column range of every row
        const int64_t width = s.end - s.begin;
        for (int64_t i = 0; i < s.shape[0]; ++i) {
          RETURN_IF_ERROR(
              model::CopyToBf16(*t, i * s.shape[1] + s.begin, width, host.data() + i * width));
        }
      } else {  // whole, or a range of rows
        int64_t row = 1;
        for (size_t k = 1; k < s.shape.size(); ++k) row *= s.shape[k];
        const int64_t first = s.split_dim == 0 ? s.begin * row : 0;
        RETURN_IF_ERROR(model::CopyToBf16(*t, first, n, host.data()));
      }
      RETURN_IF_ERROR(Cuda(cudaMemcpy(const_cast<void*>(weight_slots_[i].first), host.data(), n * 2,
                                      cudaMemcpyHostToDevice),
                           "upload weights"));
    }
  }
  if (fold_norms_) {  // Options::fuse_norms
    const int H = static_cast<int>(config_.hidden_size);
    for (const LayerWeights& w : layers_) {
      RETURN_IF_ERROR(kernels::LaunchFoldNormWeight(
          const_cast<void*>(w.qkv), q_local_ + 2 * kv_local_dim_, H, H, w.input_norm, stream_));
      RETURN_IF_ERROR(kernels::LaunchFoldNormWeight(const_cast<void*>(w.gate_up), 2 * inter_local_,
                                                    H, H, w.post_norm, stream_));
    }
    if (fold_final_norm_) {
      RETURN_IF_ERROR(kernels::LaunchFoldNormWeight(const_cast<void*>(lm_head_), vocab_rows_, H, H,
                                                    final_norm_, stream_));
    }
  }
  const std::vector<float> inv_freq = config_.RopeInvFreq();
  RETURN_IF_ERROR(Cuda(cudaMalloc(&inv_freq_, inv_freq.size() * sizeof(float)), "inv_freq"));
  RETURN_IF_ERROR(Cuda(cudaMemcpy(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float),
                                  cudaMemcpyHostToDevice),
                       "upload inv_freq"));
  return Sync("load weights");
}

CudaBackend::MetaLayout CudaBackend::Layout(int tokens, int seqs, int stride, bool views) const {
  MetaLayout m;
  m.tokens = tokens;
  m.seqs = seqs;
  m.stride = stride;
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t here = at;
    at = AlignUp(at + bytes, 16);
    return here;
  };
  const size_t G = spec_.num_layer_groups;
  m.token_ids = take(size_t(tokens) * 4);
  m.slots = take(G * tokens * 4);
  m.context_lens = take(size_t(seqs) * 4);
  m.cu_q_lens = take(size_t(seqs + 1) * 4);
  m.logit_rows = take(size_t(seqs) * 4);
  m.sampling = take(size_t(seqs) * sizeof(kernels::SamplingRow));
  m.penalty_offsets = take(size_t(seqs + 1) * 4);
  m.store_logits = take(4);
  m.out_offset = take(4);
  m.block_tables = take(size_t(seqs) * G * stride * 4);
  m.views = views;
  if (views) {
    m.block_tables_hi = take(size_t(seqs) * G * stride * 4);
    m.block_shifts = take(size_t(seqs) * G * stride * 4);
  }
  m.bytes = at;
  return m;
}

absl::Status CudaBackend::AllocateBuffers() {
  const model::ModelConfig& c = config_;
  const size_t T = max_tokens_;
  const size_t S = max_seqs_;
  const size_t h = c.hidden_size;
  const size_t q = q_local_;
  const size_t qkv_cols = q + 2 * kv_local_dim_;
  const size_t inter = inter_local_;
  const size_t V = c.vocab_size;
  const size_t tp = options_.tp_size;

  // Attention workspace: the largest split any decode launch can get.
  if (fast_attention_) {
    for (int32_t s = 1; s <= max_seqs_; ++s) {
      const kernels::DecodeSplit split =
          kernels::ChooseDecodeSplit(s, spec_.kv_heads_local, max_model_len_, num_sms_);
      attn_workspace_bytes_ =
          std::max(attn_workspace_bytes_,
                   kernels::DecodeAttentionWorkspaceBytes(s, heads_local_, spec_.head_dim, split));
    }
  }
  size_t size = 0;
  auto take = [&size](size_t bytes) {
    const size_t at = size;
    size = AlignUp(size + bytes, kArenaAlign);
    return at;
  };
  const size_t residual = take(T * h * 2);
  const size_t hidden = take(T * h * 2);
  const size_t qkv = take(T * qkv_cols * 2);
  const size_t attn = take(T * q * 2);
  const size_t tmp = take(T * h * 2);
  const size_t gate_up = take(T * 2 * inter * 2);
  const size_t act = take(T * inter * 2);
  const size_t selected = take(S * h * 2);
  const size_t logits = take(S * V * 4);
  const size_t raw_logits = take(S * V * 4);
  const size_t logits_local = tp > 1 ? take(S * vocab_chunk_ * 4) : 0;
  const size_t logits_gathered = tp > 1 ? take(tp * S * vocab_chunk_ * 4) : 0;
  const size_t lse = take(S * 4);
  const size_t sampled = take(S * 4);
  const size_t candidates = take(S * 8);
  const size_t logprobs = take(S * 4);
  const size_t workspace = take(attn_workspace_bytes_);
  const size_t sumsq = take(size_t(kernels::SkinnyGemmTiles(static_cast<int>(h))) *
                            kernels::kSkinnyGemmMaxM * 4);
  const size_t greedy_candidates = take(size_t(kernels::SkinnyGemmTiles(static_cast<int>(V))) *
                                        kernels::kSkinnyGemmMaxM * 8);
  RETURN_IF_ERROR(Cuda(cudaMalloc(&act_arena_, size),
                       absl::StrCat("activation buffers (", size >> 20, " MiB)")));
  char* base = static_cast<char*>(act_arena_);
  residual_ = base + residual;
  hidden_ = base + hidden;
  qkv_ = base + qkv;
  attn_ = base + attn;
  tmp_ = base + tmp;
  gate_up_ = base + gate_up;
  act_ = base + act;
  selected_ = base + selected;
  logits_ = reinterpret_cast<float*>(base + logits);
  raw_logits_ = reinterpret_cast<float*>(base + raw_logits);
  if (tp > 1) {
    logits_local_ = reinterpret_cast<float*>(base + logits_local);
    logits_gathered_ = reinterpret_cast<float*>(base + logits_gathered);
  }
  lse_ = reinterpret_cast<float*>(base + lse);
  sampled_ = reinterpret_cast<int32_t*>(base + sampled);
  candidates_ = reinterpret_cast<uint64_t*>(base + candidates);
  logprobs_ = reinterpret_cast<float*>(base + logprobs);
  attn_workspace_ = attn_workspace_bytes_ > 0 ? base + workspace : nullptr;
  sumsq_ = reinterpret_cast<float*>(base + sumsq);
  greedy_candidates_ = reinterpret_cast<uint64_t*>(base + greedy_candidates);

  meta_bytes_ = Layout(max_tokens_, max_seqs_, max_blocks_per_seq_, /*views=*/true).bytes;
  RETURN_IF_ERROR(Cuda(cudaMallocHost(&meta_host_, meta_bytes_), "pinned step metadata"));
  RETURN_IF_ERROR(Cuda(cudaMalloc(&meta_dev_, meta_bytes_), "step metadata"));
  // Both OutSlots' greedy candidates, tokens (one array, which a decode
  // graph's greedy reduction indexes by the step's out_offset), logprobs;
  // then the logits rows.
  out_host_bytes_ = 2 * S * 16 + S * V * 4;
  RETURN_IF_ERROR(Cuda(cudaMallocHost(&out_host_, out_host_bytes_), "pinned step results"));
  char* out = static_cast<char*>(out_host_);
  host_tokens_ = reinterpret_cast<int32_t*>(out + 2 * S * 8);
  for (int k = 0; k < 2; ++k) {
    out_slots_[k].candidates = reinterpret_cast<uint64_t*>(out) + k * S;
    out_slots_[k].tokens = host_tokens_ + k * S;
    out_slots_[k].logprobs = reinterpret_cast<float*>(out + 2 * S * 12) + k * S;
  }
  host_logits_ = reinterpret_cast<float*>(out + 2 * S * 16);
  return absl::OkStatus();
}

absl::Status CudaBackend::AllocatePools() {
  int64_t per_block = 0;  // bytes of one block id across every group
  for (int g = 0; g < spec_.num_layer_groups; ++g) per_block += spec_.BlockBytes(g);
  int64_t blocks = options_.num_blocks;
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(Cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  if (blocks == 0) {
    const double keep = (1.0 - options_.gpu_memory_utilization) * static_cast<double>(total_bytes);
    const double avail = static_cast<double>(free_bytes) - keep - kReserveBytes;
    blocks = avail > 0 ? static_cast<int64_t>(avail / static_cast<double>(per_block)) : 0;
    // Block ids mean the same on every rank: every pool gets the smallest
    // count any rank can hold.
    if (options_.collectives != nullptr) {
      RETURN_IF_ERROR(options_.collectives->AllReduceMin(&blocks));
    }
    if (blocks < 1) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "no room for KV blocks: ", free_bytes >> 20, " MiB free of ", total_bytes >> 20,
          " MiB after weights (", weight_bytes_ >> 20, " MiB) and buffers; ",
          "gpu_memory_utilization ", options_.gpu_memory_utilization, " keeps ",
          static_cast<int64_t>(keep) >> 20, " MiB free; one block needs ", per_block, " bytes"));
    }
  }
  // Slots are int32 block * block_size + offset.
  blocks = std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max() / spec_.block_size - 1);
  if (static_cast<double>(blocks) * per_block > static_cast<double>(free_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("num_blocks = ", blocks, " needs ",
                                                     (blocks * per_block) >> 20, " MiB; ",
                                                     free_bytes >> 20, " MiB are free"));
  }
  spec_.num_blocks = static_cast<int32_t>(blocks);
  for (int g = 0; g < spec_.num_layer_groups; ++g) {
    const size_t bytes = static_cast<size_t>(spec_.BlockBytes(g)) * blocks;
    void* p = nullptr;
    RETURN_IF_ERROR(Cuda(cudaMalloc(&p, bytes),
                         absl::StrCat("KV pool of group ", g, " (", bytes >> 20, " MiB)")));
    pools_.push_back(p);
    RETURN_IF_ERROR(Cuda(cudaMemsetAsync(p, 0, bytes, stream_), "zero KV pool"));
    kv_pool_bytes_ += static_cast<int64_t>(bytes);
  }
  return Sync("zero KV pools");
}

void CudaBackend::FillPadding(const MetaLayout& L) {
  int32_t* tokens = MetaHost<int32_t>(L.token_ids);
  int32_t* slots = MetaHost<int32_t>(L.slots);
  int32_t* ctx = MetaHost<int32_t>(L.context_lens);
  int32_t* cu = MetaHost<int32_t>(L.cu_q_lens);
  int32_t* rows = MetaHost<int32_t>(L.logit_rows);
  int32_t* pen = MetaHost<int32_t>(L.penalty_offsets);
  kernels::SamplingRow* sampling = MetaHost<kernels::SamplingRow>(L.sampling);
  for (int t = 0; t < L.tokens; ++t) tokens[t] = -1;
  for (int i = 0; i < spec_.num_layer_groups * L.tokens; ++i) slots[i] = -1;
  *MetaHost<int32_t>(L.store_logits) = 1;
  *MetaHost<int32_t>(L.out_offset) = 0;
  for (int s = 0; s <= L.seqs; ++s) {
    cu[s] = std::min(s, L.tokens);
    pen[s] = 0;
    if (s == L.seqs) break;
    ctx[s] = 0;
    rows[s] = 0;
    sampling[s] = kernels::SamplingRow{};
    sampling[s].temperature = 0.f;
  }
}

GemmArgs CudaBackend::GateUpArgs(int tokens, const void* gate_up_weight) const {
  const int H = static_cast<int>(config_.hidden_size);
  const int inter = static_cast<int>(inter_local_);
  return Args(tokens, 2 * inter, H, hidden_, gate_up_weight, gate_up_, nullptr, false);
}

absl::Status CudaBackend::GateUpSilu(const GemmArgs& a) {
  return gemm_->MatmulSiluMul(a, act_, stream_);
}

GemmArgs CudaBackend::WithResidual(GemmArgs a) const {
  if (!fold_norms_) return a;
  GemmArgs r = a;
  r.y = residual_;
  r.residual = residual_;
  r.sumsq_out = sumsq_;
  return gemm_->RunsSkinny(r) ? r : a;
}

GemmArgs CudaBackend::WithRmsScale(GemmArgs a, const void* act) const {
  GemmArgs r = a;
  r.x = residual_;
  r.sumsq_in = sumsq_;
  r.sumsq_parts = kernels::SkinnyGemmTiles(a.k);
  r.rms_eps = static_cast<float>(config_.rms_norm_eps);
  const bool runs = act != nullptr ? gemm_->FusesSiluMul(r, act) : gemm_->RunsSkinny(r);
  return runs ? r : a;
}

GemmArgs CudaBackend::Args(int m, int n, int k, const void* x, const void* w, void* y,
                           const void* bias, bool fp32_out) {
  GemmArgs a;
  a.m = m;
  a.n = n;
  a.k = k;
  a.x = x;
  a.ldx = k;
  a.w = w;
  a.ldw = k;
  a.y = y;
  a.ldy = n;
  a.out = fp32_out ? GemmOut::kFp32 : GemmOut::kBf16;
  a.bias = bias;
  return a;
}

absl::Status CudaBackend::Gemm(int m, int n, int k, const void* x, const void* w, void* y,
                               const void* bias, bool fp32_out) {
  return gemm_->Matmul(Args(m, n, k, x, w, y, bias, fp32_out), stream_);
}

absl::Status CudaBackend::Sync(absl::string_view what) {
  if (options_.collectives != nullptr) return options_.collectives->Synchronize(stream_, what);
  return Cuda(cudaStreamSynchronize(stream_), what);
}

absl::Status CudaBackend::UploadMetadata(const MetaLayout& L, int32_t used_blocks) {
  // A decode bucket's block tables have max_model_len's stride (its graph
  // reads them so), which at a server's default (the model's context, e.g.
  // 32,768 tokens: 2,048 entries a row) makes 512 KB of tables for 64
  // sequences whatever the contexts (0.010-0.015 ms of a b64 step's GPU time
  // on an H100 against max_model_len 1,025; bench/NOTES-cuda-backend.md,
  // session 8, call 9). Where a step reads at most half of each row and
  // that saves at least 48 KB, the tables go up as one 2-D copy each of the
  // rows' used prefixes (the rest of a row is never read), after everything
  // before them.
  constexpr size_t kMinSavedBytes = 48 << 10;
  const size_t row = size_t(L.stride) * 4;
  const size_t used = size_t(std::clamp<int32_t>(used_blocks, 1, L.stride)) * 4;
  const size_t rows = size_t(L.seqs) * spec_.num_layer_groups;
  const size_t tables[3] = {L.block_tables, L.block_tables_hi, L.block_shifts};
  const int num_tables = L.views ? 3 : 1;  // the view tables only with views
  if (2 * used > row || num_tables * rows * (row - used) < kMinSavedBytes) {
    if (options_.upload_by_kernel) {
      return kernels::LaunchCopy16(meta_host_, meta_dev_, L.bytes, stream_);
    }
    return Cuda(cudaMemcpyAsync(meta_dev_, meta_host_, L.bytes, cudaMemcpyHostToDevice, stream_),
                "upload step metadata");
  }
  RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(meta_dev_, meta_host_, L.block_tables, cudaMemcpyHostToDevice, stream_),
           "upload step metadata"));
  for (int i = 0; i < num_tables; ++i) {
    const size_t at = tables[i];
    RETURN_IF_ERROR(Cuda(cudaMemcpy2DAsync(static_cast<char*>(meta_dev_) + at, row,
                                           static_cast<const char*>(meta_host_) + at, row, used,
                                           rows, cudaMemcpyHostToDevice, stream_),
                         "upload the block tables' used entries"));
  }
  ++compact_table_uploads_;
  return absl::OkStatus();
}

absl::Status CudaBackend::AllReduce(void* data, int64_t count) {
  if (options_.tp_size == 1) return absl::OkStatus();
  return options_.collectives->AllReduceSumBf16(data, count, stream_);
}

absl::Status CudaBackend::AllReduceAddRmsNorm(void* x, const void* weight, int rows, int hidden,
                                              float eps) {
  if (options_.tp_size > 1) {
    DeviceCollectives& c = *options_.collectives;
    if (c.FusesAllReduceAddRmsNorm(x, residual_, weight, hidden_, rows, hidden)) {
      return c.AllReduceAddRmsNormBf16(x, residual_, weight, hidden_, rows, hidden, eps, stream_);
    }
    RETURN_IF_ERROR(c.AllReduceSumBf16(x, int64_t{rows} * hidden, stream_));
  }
  return kernels::LaunchAddRmsNorm(x, residual_, weight, hidden_, rows, hidden, eps, stream_);
}

absl::Status CudaBackend::RunModel(const StepArgs& step) {
  const model::ModelConfig& c = config_;
  const MetaLayout& L = step.layout;
  const int T = step.num_tokens;
  const int S = step.num_seqs;
  const int H = static_cast<int>(c.hidden_size);
  const int q = static_cast<int>(q_local_);
  const int kv = static_cast<int>(kv_local_dim_);
  const int qkv_cols = q + 2 * kv;
  const int inter = static_cast<int>(inter_local_);
  const int V = static_cast<int>(c.vocab_size);
  const int heads = heads_local_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int G = spec_.num_layer_groups;
  const int32_t* slots = MetaDev<int32_t>(L.slots);
  const int32_t* tables = MetaDev<int32_t>(L.block_tables);
  const int32_t* tables_hi = step.views ? MetaDev<int32_t>(L.block_tables_hi) : nullptr;
  const int32_t* shifts = step.views ? MetaDev<int32_t>(L.block_shifts) : nullptr;
  const int32_t* ctx = MetaDev<int32_t>(L.context_lens);
  const int32_t* cu = MetaDev<int32_t>(L.cu_q_lens);

  kernels::DecodeSplit split;
  if (fast_attention_ && step.decode) {
    if (step.bucket_index >= 0) {
      const Bucket& b = bucket_state_[step.bucket_index];
      split = {b.num_splits, b.blocks_per_split};
    } else {
      split = kernels::ChooseDecodeSplit(S, spec_.kv_heads_local, step.max_context, num_sms_);
    }
  }

  // Decode steps write each layer's new K and V from the decode attention
  // kernel (PagedAttentionArgs::new_slots): one kernel less per layer, and
  // the attention streams the older blocks while the QKV projection ends.
  // Nothing else in a step writes the pools, which that needs.
  const bool fuse_kv_write = fast_attention_ && step.decode && q % 8 == 0 && kv % 8 == 0;
  // With fold_norms_ the embedding's rows come with their sums of squares
  // (the first layer's norm, in the QKV product).
  float* embed_sumsq = fold_norms_ && T <= kernels::kSkinnyGemmMaxM ? sumsq_ : nullptr;
  RETURN_IF_ERROR(kernels::LaunchEmbeddingGather(embedding_, vocab_begin_, vocab_rows_, H,
                                                 MetaDev<int32_t>(L.token_ids), T, residual_,
                                                 stream_, embed_sumsq, sampled_));
  RETURN_IF_ERROR(AllReduce(residual_, int64_t{T} * H));
  // After the embedding with its sums of squares or a residual-mode product
  // (fold_norms_) the residual stream is up to date in residual_ and its
  // sums of squares are in sumsq_; else the sublayer's output waits in tmp_
  // for the add (summed over the ranks).
  bool in_residual = embed_sumsq != nullptr;
  // The norm before product `a` of hidden_ (its weight folded into a's W
  // or not): nothing where `a` takes the scale mode (returned so), else the
  // norm kernel.
  auto normed = [&](const GemmArgs& a, const void* weight, bool folded, const void* act,
                    bool first) -> absl::StatusOr<GemmArgs> {
    const void* gamma = NormWeight(weight, folded);
    if (!in_residual) {  // the embedding alone, or the sublayer's output in tmp_
      RETURN_IF_ERROR(first ? kernels::LaunchRmsNorm(residual_, gamma, hidden_, T, H, eps, stream_)
                            : AllReduceAddRmsNorm(tmp_, gamma, T, H, eps));
      return a;
    }
    const GemmArgs scaled = folded ? WithRmsScale(a, act) : a;
    if (scaled.sumsq_in == nullptr) {
      RETURN_IF_ERROR(kernels::LaunchRmsNorm(residual_, gamma, hidden_, T, H, eps, stream_));
    }
    return scaled;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    absl::StatusOr<GemmArgs> qkv_args =
        normed(Args(T, qkv_cols, H, hidden_, w.qkv, qkv_, w.qkv_bias, false), w.input_norm,
               fold_norms_, nullptr, l == 0);
    if (!qkv_args.ok()) return qkv_args.status();
    qkv_args->early_dependents = (options_.early_dependents & 1) != 0;
    RETURN_IF_ERROR(gemm_->Matmul(*qkv_args, stream_));
    if (w.q_norm != nullptr) {
      RETURN_IF_ERROR(kernels::LaunchQkvBiasNorm(qkv_, qkv_cols, T, heads, spec_.kv_heads_local,
                                                 spec_.head_dim, nullptr, w.q_norm, w.k_norm, eps,
                                                 stream_));
    }
    const int g = group_of_layer_[l];
    const int li = static_cast<int>(l - spec_.group_layer_begin[g]);
    const kernels::KvBlockShape shape{spec_.LayersInGroup(g), spec_.kv_heads_local,
                                      spec_.block_size, spec_.head_dim};
    if (!fuse_kv_write) {
      RETURN_IF_ERROR(kernels::LaunchWriteKvCache(Bf16At(qkv_, q), Bf16At(qkv_, q + kv), qkv_cols,
                                                  T, slots + int64_t{g} * L.tokens, pools_[g],
                                                  shape, li, stream_));
    }
    kernels::PagedAttentionArgs a;
    a.q = qkv_;
    a.q_row_stride = qkv_cols;
    a.num_q_heads = heads;
    a.kv_pool = pools_[g];
    a.shape = shape;
    a.layer = li;
    a.block_tables = tables + int64_t{g} * L.stride;
    a.block_table_stride = G * L.stride;
    if (step.views) {  // else both stay null: the kernels' view-free code
      a.block_tables_hi = tables_hi + int64_t{g} * L.stride;
      a.block_shifts = shifts + int64_t{g} * L.stride;
    }
    a.context_lens = ctx;
    if (fuse_kv_write) {
      a.new_slots = slots + int64_t{g} * L.tokens;
      a.new_k = Bf16At(qkv_, q);
      a.new_v = Bf16At(qkv_, q + kv);
    }
    a.rope_inv_freq = inv_freq_;
    a.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    a.out = attn_;
    if (!fast_attention_) {
      RETURN_IF_ERROR(kernels::LaunchPagedAttentionGeneric(a, S, cu, step.max_q_len, stream_));
    } else if (step.decode) {
      RETURN_IF_ERROR(kernels::LaunchPagedDecodeAttention(a, S, split, attn_workspace_, stream_));
    } else {
      RETURN_IF_ERROR(kernels::LaunchPagedPrefillAttention(a, S, cu, step.max_q_len, stream_));
    }
    GemmArgs o = WithResidual(Args(T, H, q, attn_, w.o_proj, tmp_, nullptr, false));
    o.early_dependents = (options_.early_dependents & 2) != 0;
    RETURN_IF_ERROR(gemm_->Matmul(o, stream_));
    in_residual = o.residual != nullptr;
    absl::StatusOr<GemmArgs> gate_up =
        normed(GateUpArgs(T, w.gate_up), w.post_norm, fold_norms_, act_, false);
    if (!gate_up.ok()) return gate_up.status();
    gate_up->early_dependents = (options_.early_dependents & 4) != 0;
    RETURN_IF_ERROR(GateUpSilu(*gate_up));
    GemmArgs down = WithResidual(Args(T, H, inter, act_, w.down, tmp_, nullptr, false));
    down.early_dependents = (options_.early_dependents & 8) != 0;
    RETURN_IF_ERROR(gemm_->Matmul(down, stream_));
    in_residual = down.residual != nullptr;
    // Else its all-reduce is the next norm's (AllReduceAddRmsNorm).
  }
  // The final norm: in the LM head's epilogue where it takes the scale mode
  // (every row's logits, one GPU).
  GemmArgs lm = Args(step.logit_rows, V, H, hidden_, lm_head_, logits_, nullptr, true);
  if (step.logit_rows > 0 && !step.gather && options_.tp_size == 1) {
    absl::StatusOr<GemmArgs> scaled = normed(lm, final_norm_, fold_final_norm_, nullptr, false);
    if (!scaled.ok()) return scaled.status();
    lm = *scaled;
  } else if (in_residual) {
    RETURN_IF_ERROR(kernels::LaunchRmsNorm(residual_, NormWeight(final_norm_, fold_final_norm_),
                                           hidden_, T, H, eps, stream_));
  } else {
    RETURN_IF_ERROR(
        AllReduceAddRmsNorm(tmp_, NormWeight(final_norm_, fold_final_norm_), T, H, eps));
  }
  lm_head_candidates_ = false;
  if (step.logit_rows == 0) return absl::OkStatus();
  if (step.bucket_index >= 0 && options_.tp_size == 1 && options_.greedy_candidates) {
    // Decode buckets: the greedy candidates too, and logits_ only where the
    // step's flag asks for them (Bucket::greedy_candidates).
    GemmArgs g = lm;
    g.argmax_out = greedy_candidates_;
    g.store_y = MetaDev<int32_t>(L.store_logits);
    if (gemm_->RunsSkinny(g)) {
      lm = g;
      lm_head_candidates_ = true;
    }
  }
  lm.early_dependents = (options_.early_dependents & 16) != 0;
  if (lm_head_candidates_) {
    // The tokens of the greedy rows, into sampled_ and the step's pinned
    // slot (Submit's sampling, if any, overwrites them after).
    RETURN_IF_ERROR(gemm_->Matmul(lm, stream_));
    return kernels::LaunchGreedyFromCandidates(greedy_candidates_, kernels::SkinnyGemmTiles(V),
                                               step.logit_rows, host_tokens_, stream_, sampled_,
                                               MetaDev<int32_t>(L.out_offset));
  }
  if (lm.sumsq_in != nullptr) return gemm_->Matmul(lm, stream_);
  const void* x = hidden_;
  if (step.gather) {
    RETURN_IF_ERROR(kernels::LaunchEmbeddingGather(hidden_, 0, T, H, MetaDev<int32_t>(L.logit_rows),
                                                   step.logit_rows, selected_, stream_));
    x = selected_;
  }
  if (options_.tp_size == 1)
    return Gemm(step.logit_rows, V, H, x, lm_head_, logits_, nullptr, true);
  // This rank's columns (GatherLogits puts every rank's in place).
  return Gemm(step.logit_rows, static_cast<int>(vocab_rows_), H, x, lm_head_, logits_local_,
              nullptr, true);
}

absl::Status CudaBackend::GatherLogits(int rows) {
  const model::ModelConfig& c = config_;
  const int V = static_cast<int>(c.vocab_size);
  const int64_t per_rank = int64_t{rows} * vocab_chunk_;
  RETURN_IF_ERROR(
      options_.collectives->AllGatherFp32(logits_local_, logits_gathered_, per_rank, stream_));
  for (int r = 0; r < options_.tp_size; ++r) {
    const model::VocabRange v = model::LocalVocab(c, {r, options_.tp_size});
    const size_t width = static_cast<size_t>(v.end - v.begin) * 4;
    if (width == 0) continue;
    RETURN_IF_ERROR(
        Cuda(cudaMemcpy2DAsync(logits_ + v.begin, size_t(V) * 4, logits_gathered_ + r * per_rank,
                               width, width, rows, cudaMemcpyDeviceToDevice, stream_),
             "place logits columns"));
  }
  return absl::OkStatus();
}

std::vector<CudaBackend::ModelGemm> CudaBackend::ModelGemms(int32_t tokens) const {
  const model::ModelConfig& c = config_;
  const int H = static_cast<int>(c.hidden_size);
  const int q = static_cast<int>(q_local_);
  const int qkv_cols = q + 2 * static_cast<int>(kv_local_dim_);
  const int inter = static_cast<int>(inter_local_);
  const int V = static_cast<int>(vocab_rows_);
  float* lm_out = options_.tp_size > 1 ? logits_local_ : logits_;
  const LayerWeights& w = layers_[0];
  struct Shape {
    const char* name;
    int m, n, k;
    const void* x;
    const void* w;
    void* y;
    const void* bias;
    bool fp32;
    const void* LayerWeights::*per_layer;  // null: one matrix (the LM head)
  };
  const Shape shapes[] = {
      {"qkv", tokens, qkv_cols, H, hidden_, w.qkv, qkv_, w.qkv_bias, false, &LayerWeights::qkv},
      {"o", tokens, H, q, attn_, w.o_proj, tmp_, nullptr, false, &LayerWeights::o_proj},
      {"gate_up", tokens, 2 * inter, H, hidden_, w.gate_up, gate_up_, nullptr, false,
       &LayerWeights::gate_up},
      {"down", tokens, H, inter, act_, w.down, tmp_, nullptr, false, &LayerWeights::down},
      {"lm_head", std::min(tokens, max_seqs_), V, H, hidden_, lm_head_, lm_out, nullptr, true,
       nullptr},
  };
  std::vector<ModelGemm> gemms;
  for (const Shape& s : shapes) {
    ModelGemm g;
    g.name = s.name;
    g.per_layer = s.per_layer;
    GemmArgs& a = g.args;
    a.m = s.m;
    a.n = s.n;
    a.k = s.k;
    a.x = s.x;
    a.ldx = s.k;
    a.w = s.w;
    a.ldw = s.k;
    a.y = s.y;
    a.ldy = s.n;
    a.out = s.fp32 ? GemmOut::kFp32 : GemmOut::kBf16;
    a.bias = s.bias;
    gemms.push_back(g);
  }
  return gemms;
}

// What a norm kernel costs inside a decode step of R1-Distill-Qwen-7B on an
// H100 (bench/NOTES-cuda-backend.md, session 6, call 4: 55 norms, 0.137 ms).
constexpr double kNormKernelInStepMs = 0.0025;

absl::Status CudaBackend::TuneForTokens(int32_t tokens) {
  if (tokens < 1 || tokens > max_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("tune for ", tokens, " tokens: must be 1 .. ", max_tokens_));
  }
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  for (const ModelGemm& g : ModelGemms(tokens)) {
    // Decode shapes are timed over successive layers' weights (ten runs, ten
    // layers): as in a forward pass they come from DRAM, not from L2 (one
    // layer's QKV and O fit in it). Prefill shapes are bound by the tensor
    // cores.
    std::vector<const void*> rotate;
    if (g.per_layer != nullptr && g.args.m <= 256) {
      for (const LayerWeights& lw : layers_) rotate.push_back(lw.*(g.per_layer));
    }
    // With fold_norms_ every one of these products, on the skinny kernel,
    // takes half of a norm kernel into its epilogue (RunModel): credited.
    const bool norm_fused = fold_norms_ && g.args.m <= kernels::kSkinnyGemmMaxM &&
                            (g.per_layer != nullptr || fold_final_norm_);
    RETURN_IF_ERROR(
        gemm_->Tune(g.args, stream_, 10, rotate, norm_fused ? kNormKernelInStepMs / 2 : 0.0));
  }
  return absl::OkStatus();
}

std::string CudaBackend::GemmChoices(int32_t tokens) const {
  std::string out;
  for (const ModelGemm& g : ModelGemms(std::clamp(tokens, 1, max_tokens_))) {
    const std::string choice = gemm_->Choice(g.args);
    const bool gate_up = g.per_layer == &LayerWeights::gate_up;
    const bool swiglu = gate_up && gemm_->FusesSiluMul(g.args, act_);
    // The norm epilogues a decode step of this many tokens uses (RunModel).
    const char* norm = "";
    if (g.per_layer == &LayerWeights::o_proj || g.per_layer == &LayerWeights::down) {
      if (WithResidual(g.args).residual != nullptr) norm = " +residual";
    } else if (fold_norms_ && (g.per_layer != nullptr || fold_final_norm_) &&
               WithRmsScale(g.args, gate_up ? act_ : nullptr).sumsq_in != nullptr) {
      norm = " +rms";
    }
    absl::StrAppend(&out, out.empty() ? "" : ", ", g.name, " ", choice.empty() ? "untuned" : choice,
                    swiglu ? " +silu" : "", norm);
  }
  return out;
}

absl::Status CudaBackend::PrepareBuckets() {
  for (int32_t size : buckets_) {
    Bucket b;
    b.size = size;
    if (fast_attention_) {
      const kernels::DecodeSplit split =
          kernels::ChooseDecodeSplit(size, spec_.kv_heads_local, max_model_len_, num_sms_);
      b.num_splits = split.num_splits;
      b.blocks_per_split = split.blocks_per_split;
    }
    bucket_state_.push_back(b);
  }
  if (options_.tune_gemms) {
    for (int32_t m : buckets_) RETURN_IF_ERROR(TuneForTokens(m));
  }
  for (int32_t m : options_.tune_prefill_tokens) RETURN_IF_ERROR(TuneForTokens(m));
  // One eager run per bucket and view variant (padding only) creates every
  // GEMM plan and raises the attention kernels' shared-memory limits before
  // capture. Each bucket gets a graph for steps without shifted views and
  // one for steps with them (the pointers of the view tables are part of
  // the graph; both layouts put every other field at the same offsets).
  for (size_t i = 0; i < buckets_.size(); ++i) {
    for (const bool views : {false, true}) {
      const int32_t size = buckets_[i];
      StepArgs step;
      step.layout = Layout(size, size, max_blocks_per_seq_, views);
      step.num_tokens = size;
      step.num_seqs = size;
      step.max_q_len = 1;
      step.max_context = max_model_len_;
      step.decode = true;
      step.logit_rows = size;
      step.gather = false;
      step.bucket_index = static_cast<int>(i);
      step.views = views;
      FillPadding(step.layout);
      RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(meta_dev_, meta_host_, step.layout.bytes,
                                           cudaMemcpyHostToDevice, stream_),
                           "upload step metadata"));
      RETURN_IF_ERROR(RunModel(step));
      bucket_state_[i].greedy_candidates = lm_head_candidates_;
      if (options_.tp_size > 1) RETURN_IF_ERROR(GatherLogits(size));
      RETURN_IF_ERROR(Sync("warm-up decode step"));
      if (!options_.enable_cuda_graphs) continue;
      RETURN_IF_ERROR(Cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                           "begin graph capture"));
      const absl::Status run = RunModel(step);
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
      if (!run.ok() || end != cudaSuccess) {
        if (graph != nullptr) cudaGraphDestroy(graph);
        cudaGetLastError();
        return run.ok() ? Cuda(end, "end graph capture") : run;
      }
      cudaGraphExec_t& exec = views ? bucket_state_[i].views_graph : bucket_state_[i].graph;
      const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      RETURN_IF_ERROR(Cuda(inst, absl::StrCat("instantiate the graph of bucket ", size,
                                              views ? " (shifted views)" : "")));
      if (options_.tp_size == 1 || views) continue;
      // The logits all-gather of the bucket, for steps that need whole rows.
      RETURN_IF_ERROR(Cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                           "begin graph capture"));
      const absl::Status gather = GatherLogits(size);
      cudaGraph_t gather_graph = nullptr;
      const cudaError_t gather_end = cudaStreamEndCapture(stream_, &gather_graph);
      if (!gather.ok() || gather_end != cudaSuccess) {
        if (gather_graph != nullptr) cudaGraphDestroy(gather_graph);
        cudaGetLastError();
        return gather.ok() ? Cuda(gather_end, "end graph capture") : gather;
      }
      const cudaError_t gather_inst =
          cudaGraphInstantiate(&bucket_state_[i].gather_graph, gather_graph, 0);
      cudaGraphDestroy(gather_graph);
      RETURN_IF_ERROR(Cuda(gather_inst,
                           absl::StrCat("instantiate the logits all-gather of bucket ", size)));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Validate(const StepPlan& plan) const {
  const model::ModelConfig& c = config_;
  if (static_cast<int64_t>(plan.sequences.size()) > max_seqs_) {
    return absl::InvalidArgumentError(
        absl::StrCat(plan.sequences.size(), " sequences exceed max_num_seqs (", max_seqs_, ")"));
  }
  if (plan.NumTokens() > max_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat(
        plan.NumTokens(), " tokens exceed max_num_batched_tokens (", max_tokens_, ")"));
  }
  PlanLimits limits;
  limits.vocab_size = c.vocab_size;
  limits.max_positions = max_model_len_;
  limits.max_positions_name = "max_model_len";
  limits.sliding_window = c.sliding_window;
  limits.backend_name = "the CUDA backend";
  limits.feedable_rows = &feedable_;
  RETURN_IF_ERROR(ValidatePlan(plan, spec_, limits));
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const SequenceChunk& s = plan.sequences[i];
    if (s.sampling.has_value()) {
      const DeviceSampling& d = *s.sampling;
      const auto finite = [](float x) { return std::isfinite(x); };
      if (!finite(d.temperature) || !(d.top_p > 0.f) || !finite(d.top_p) || !(d.min_p >= 0.f) ||
          !(d.min_p <= 1.f) || !(d.repetition_penalty > 0.f) || !finite(d.repetition_penalty) ||
          !finite(d.presence_penalty) || !finite(d.frequency_penalty) || !(d.uniform >= 0.f) ||
          !(d.uniform < 1.f)) {
        return absl::InvalidArgumentError(absl::StrCat(
            PlanSequenceName(i, s), ": sampling values out of range (temperature ", d.temperature,
            ", top_p ", d.top_p, ", min_p ", d.min_p, ", repetition_penalty ", d.repetition_penalty,
            ", uniform ", d.uniform, ")"));
      }
      if (d.penalty_token_ids.size() != d.penalty_counts.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(PlanSequenceName(i, s), ": ", d.penalty_token_ids.size(),
                         " penalty tokens but ", d.penalty_counts.size(), " counts"));
      }
      for (size_t k = 0; k < d.penalty_token_ids.size(); ++k) {
        if (d.penalty_token_ids[k] < 0 || d.penalty_token_ids[k] >= c.vocab_size ||
            d.penalty_counts[k] < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              PlanSequenceName(i, s), ": penalty_token_ids[", k, "] = ", d.penalty_token_ids[k],
              " (count ", d.penalty_counts[k], ") outside the vocabulary or negative"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const StepPlan& plan, StepOutput* output) {
  if (!in_flight_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Forward with ", in_flight_.size(), " steps in flight (Collect them first)"));
  }
  RETURN_IF_ERROR(Submit(plan));
  return Collect(output);
}

absl::Status CudaBackend::Submit(const StepPlan& plan) {
  InFlight f;
  f.t_begin = Clock::now();
  if (in_flight_.size() >= 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("Submit with ", in_flight_.size(), " steps in flight (at most two)"));
  }
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  RETURN_IF_ERROR(Validate(plan));
  const int V = static_cast<int>(config_.vocab_size);
  const int G = spec_.num_layer_groups;
  const int64_t bs = spec_.block_size;
  const int S = static_cast<int>(plan.sequences.size());
  const int T = static_cast<int>(plan.NumTokens());
  f.slot = static_cast<int>(steps_submitted_ % 2);
  if (T == 0) {
    feedable_.clear();
    ++steps_submitted_;
    f.t_prepared = f.t_submitted = Clock::now();
    in_flight_.push_back(std::move(f));
    return absl::OkStatus();
  }
  // The pinned metadata and penalty buffers are free once the step in
  // flight has uploaded them (at once, in practice: it is the only one).
  if (!in_flight_.empty()) {
    RETURN_IF_ERROR(Cuda(cudaEventSynchronize(inputs_uploaded_), "wait for the last upload"));
  }

  bool decode = true;
  int max_q_len = 0;
  int32_t max_context = 0;
  int32_t max_blocks = 1;
  bool views = false;  // some chunk has a shifted view (a shift > 0) in its context
  for (int i = 0; i < S; ++i) {
    const SequenceChunk& s = plan.sequences[i];
    const int n = static_cast<int>(s.token_ids.size());
    const int64_t need = (s.start_pos + n + bs - 1) / bs;
    decode = decode && n == 1;
    max_q_len = std::max(max_q_len, n);
    max_context = std::max(max_context, s.start_pos + n);
    max_blocks = std::max<int32_t>(max_blocks, static_cast<int32_t>(need));
    if (s.compute_logits) f.rows.push_back(i);
    for (size_t g = 0; g < s.block_shifts.size() && !views; ++g) {
      const std::vector<int32_t>& shifts = s.block_shifts[g];
      views = !shifts.empty() &&
              std::any_of(shifts.begin(), shifts.begin() + need, [](int32_t x) { return x != 0; });
    }
  }
  const int R = static_cast<int>(f.rows.size());
  int bucket = -1;
  if (decode && R == S) {
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (buckets_[b] >= S) {
        bucket = static_cast<int>(b);
        break;
      }
    }
  }
  StepArgs step;
  if (bucket >= 0) {
    const int B = buckets_[bucket];
    step.layout = Layout(B, B, max_blocks_per_seq_, views);
    step.num_tokens = B;
    step.num_seqs = B;
    step.max_context = max_model_len_;
    step.logit_rows = B;
    step.gather = false;
    FillPadding(step.layout);
  } else {
    step.layout = Layout(T, S, max_blocks, views);
    step.num_tokens = T;
    step.num_seqs = S;
    step.max_context = max_context;
    step.logit_rows = R;
    step.gather = true;
  }
  step.decode = decode;
  step.max_q_len = max_q_len;
  step.bucket_index = bucket;
  step.views = views;

  // Metadata, in the pinned buffer (the previous step was waited for).
  const MetaLayout& L = step.layout;
  int32_t* tokens = MetaHost<int32_t>(L.token_ids);
  int32_t* slots = MetaHost<int32_t>(L.slots);
  int32_t* ctx = MetaHost<int32_t>(L.context_lens);
  int32_t* cu = MetaHost<int32_t>(L.cu_q_lens);
  int32_t* logit_rows = MetaHost<int32_t>(L.logit_rows);
  int32_t* pen_offsets = MetaHost<int32_t>(L.penalty_offsets);
  int32_t* tables = MetaHost<int32_t>(L.block_tables);
  int32_t* tables_hi = views ? MetaHost<int32_t>(L.block_tables_hi) : nullptr;
  int32_t* shifts = views ? MetaHost<int32_t>(L.block_shifts) : nullptr;
  kernels::SamplingRow* sampling = MetaHost<kernels::SamplingRow>(L.sampling);
  int row = 0;
  for (int i = 0; i < S; ++i) {
    const SequenceChunk& s = plan.sequences[i];
    const int n = static_cast<int>(s.token_ids.size());
    const int32_t end = s.start_pos + n;
    cu[i] = row;
    ctx[i] = end;
    for (int t = 0; t < n; ++t) {
      const int64_t p = s.start_pos + t;
      // A fed token (fed_row): the embedding reads it from sampled_.
      tokens[row + t] = s.fed_row >= 0 ? -2 - s.fed_row : s.token_ids[t];
      for (int g = 0; g < G; ++g) {
        slots[int64_t{g} * L.tokens + row + t] =
            static_cast<int32_t>(s.block_tables[g][p / bs] * bs + p % bs);
      }
    }
    const int32_t need = static_cast<int32_t>((end + bs - 1) / bs);
    for (int g = 0; g < G; ++g) {
      const int64_t at = (int64_t{i} * G + g) * L.stride;
      const int32_t* table = s.block_tables[g].data();
      std::memcpy(tables + at, table, size_t(need) * 4);
      if (!views) continue;
      // Rows without views: hi = own block, shift 0 (never read as a view).
      if (s.block_shifts.empty() || s.block_shifts[g].empty()) {
        std::memcpy(tables_hi + at, table, size_t(need) * 4);
        std::memset(shifts + at, 0, size_t(need) * 4);
        continue;
      }
      const int32_t* hi = s.block_tables_hi[g].data();
      const int32_t* sh = s.block_shifts[g].data();
      for (int32_t b = 0; b < need; ++b) {
        tables_hi[at + b] = sh[b] > 0 ? hi[b] : table[b];
        shifts[at + b] = sh[b];
      }
    }
    row += n;
  }
  cu[S] = row;
  if (bucket >= 0) {
    for (int i = S; i < L.seqs; ++i) cu[i + 1] = i + 1;
  }
  // Greedy rows only: sampled on this rank's vocabulary shard, the best
  // candidate of each row kept over the ranks; no logits all-gather.
  const bool on_shards = options_.tp_size > 1 && options_.collectives->samples_on_shards() &&
                         GreedyOnShards(plan, f.rows);
  const int64_t shard_end = vocab_begin_ + vocab_rows_;
  int64_t penalties = 0;      // uploaded (on shards: this shard's)
  int64_t all_penalties = 0;  // of the plan, the same on every rank
  bool any_sampling = false;
  bool any_logprob = false;
  bool need_logits = false;
  bool all_greedy = true;
  bool any_fed_count = false;
  f.device_sampled.assign(R, 0);
  f.logprob.assign(R, 0);
  f.logits_index.assign(R, -1);
  f.logits_rows = 0;
  for (int r = 0; r < R; ++r) {
    const SequenceChunk& s = plan.sequences[f.rows[r]];
    if (!s.sampling.has_value() || s.sampling->return_logits) f.logits_index[r] = f.logits_rows++;
    logit_rows[r] = cu[f.rows[r]] + static_cast<int32_t>(s.token_ids.size()) - 1;
    pen_offsets[r] = static_cast<int32_t>(penalties);
    kernels::SamplingRow& k = sampling[r];
    k = kernels::SamplingRow{};
    k.temperature = 0.f;
    if (!s.sampling.has_value()) {
      need_logits = true;
      continue;
    }
    const DeviceSampling& d = *s.sampling;
    any_sampling = true;
    f.device_sampled[r] = 1;
    f.logprob[r] = d.return_logprob ? 1 : 0;
    any_logprob = any_logprob || d.return_logprob;
    need_logits = need_logits || d.return_logits;
    all_greedy = all_greedy && d.temperature <= 0.f;
    k.temperature = d.temperature;
    k.top_k = d.top_k;
    k.top_p = d.top_p;
    k.min_p = d.min_p;
    k.repetition_penalty = d.repetition_penalty;
    k.presence_penalty = d.presence_penalty;
    k.frequency_penalty = d.frequency_penalty;
    k.uniform = d.uniform;
    // A fed token counted in the lists on the device: one placeholder entry
    // (LaunchCountFedTokens; on shards, where the token is this shard's).
    const int64_t fed = d.count_fed_token && s.fed_row >= 0 ? 1 : 0;
    k.fed_row = fed > 0 ? s.fed_row : -1;
    any_fed_count = any_fed_count || fed > 0;
    all_penalties += static_cast<int64_t>(d.penalty_token_ids.size()) + fed;
    penalties += (on_shards ? CountShardPenalties(d, vocab_begin_, shard_end)
                            : static_cast<int64_t>(d.penalty_token_ids.size())) +
                 fed;
  }
  pen_offsets[R] = static_cast<int32_t>(penalties);
  if (all_penalties > std::numeric_limits<int32_t>::max() / 2) {
    return absl::InvalidArgumentError(absl::StrCat(all_penalties, " penalty tokens in one step"));
  }
  // A decode bucket whose LM head leaves greedy candidates, every row greedy
  // with no penalty, logprob or logits asked: the tokens come from the
  // candidates, and the LM head stores no logits.
  const bool from_candidates = bucket >= 0 && bucket_state_[bucket].greedy_candidates &&
                               !on_shards && any_sampling && all_greedy && all_penalties == 0 &&
                               !any_logprob && !need_logits;
  *MetaHost<int32_t>(L.store_logits) = from_candidates ? 0 : 1;
  *MetaHost<int32_t>(L.out_offset) = f.slot * max_seqs_;
  f.need_logits = R > 0 && need_logits;
  // Every row's logits: one copy, in row order (the index left empty).
  if (!f.need_logits || f.logits_rows == R) f.logits_index.clear();
  f.on_shards = on_shards;
  f.any_sampling = any_sampling;
  f.gpu_work = true;
  // Both this step and the one in flight download logits: that one's are
  // copied out first (host_logits_ holds one step's).
  if (!in_flight_.empty() && f.need_logits && in_flight_.front().need_logits &&
      !in_flight_.front().done.has_value()) {
    // Into the buffers the caller handed back last time (Collect): 64 rows
    // of a 152k vocabulary are 39 MB, which a fresh vector would take in
    // page faults every step (b64 pipelined with every row's logits: ~30
    // ms a step, against 13 ms one by one; bench/NOTES-cuda-backend.md,
    // session 12).
    StepOutput early = std::move(spare_output_);
    RETURN_IF_ERROR(FinishStep(in_flight_.front(), &early));
    in_flight_.front().done = std::move(early);
  }
  f.t_prepared = Clock::now();
  // Until this step is queued, no row can be fed from it.
  feedable_.clear();
  const OutSlot& o = out_slots_[f.slot];
  RETURN_IF_ERROR(Cuda(cudaEventRecord(o.begin, stream_), "record step start"));
  RETURN_IF_ERROR(UploadMetadata(L, max_blocks));
  if (penalties > 0) {
    if (static_cast<size_t>(penalties) > penalty_capacity_) {
      RETURN_IF_ERROR(Sync("grow penalty buffers"));
      if (penalty_host_ != nullptr) cudaFreeHost(penalty_host_);
      if (penalty_dev_ != nullptr) cudaFree(penalty_dev_);
      penalty_host_ = penalty_dev_ = nullptr;
      penalty_capacity_ = 0;
      const size_t cap = std::max<size_t>(penalties, 4096) * 2;
      RETURN_IF_ERROR(Cuda(cudaMallocHost(&penalty_host_, cap * 8), "pinned penalty tokens"));
      RETURN_IF_ERROR(Cuda(cudaMalloc(&penalty_dev_, cap * 8), "penalty tokens"));
      penalty_capacity_ = cap;
    }
    int32_t* ids = static_cast<int32_t*>(penalty_host_);
    int32_t* counts = ids + penalties;
    for (int r = 0; r < R; ++r) {
      const SequenceChunk& s = plan.sequences[f.rows[r]];
      if (!s.sampling.has_value()) continue;
      const DeviceSampling& d = *s.sampling;
      const int32_t at = pen_offsets[r];
      size_t end = at;
      if (on_shards) {
        end += CopyShardPenalties(d, vocab_begin_, shard_end, ids + at, counts + at);
      } else {
        std::memcpy(ids + at, d.penalty_token_ids.data(), d.penalty_token_ids.size() * 4);
        std::memcpy(counts + at, d.penalty_counts.data(), d.penalty_counts.size() * 4);
        end += d.penalty_token_ids.size();
      }
      if (sampling[r].fed_row >= 0) {  // the placeholder
        ids[end] = -1;
        counts[end] = 0;
      }
    }
    RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(penalty_dev_, penalty_host_, size_t(penalties) * 8,
                                         cudaMemcpyHostToDevice, stream_),
                         "upload penalty tokens"));
  }
  RETURN_IF_ERROR(Cuda(cudaEventRecord(inputs_uploaded_, stream_), "record the uploads"));
  if (any_fed_count) {  // while sampled_ still holds the tokens fed
    int32_t* pen_ids = static_cast<int32_t*>(penalty_dev_);
    RETURN_IF_ERROR(kernels::LaunchCountFedTokens(
        MetaDev<kernels::SamplingRow>(L.sampling), R, MetaDev<int32_t>(L.penalty_offsets), pen_ids,
        pen_ids + penalties, sampled_, stream_, on_shards ? static_cast<int32_t>(vocab_begin_) : 0,
        on_shards ? static_cast<int32_t>(shard_end) : INT32_MAX));
  }

  const cudaGraphExec_t graph =
      bucket < 0 ? nullptr
                 : (views ? bucket_state_[bucket].views_graph : bucket_state_[bucket].graph);
  if (graph != nullptr) {
    RETURN_IF_ERROR(Cuda(cudaGraphLaunch(graph, stream_), "graph launch"));
    ++graph_steps_;
  } else {
    RETURN_IF_ERROR(RunModel(step));
    ++(bucket >= 0 ? padded_decode_steps_ : eager_steps_);
  }
  view_steps_ += views ? 1 : 0;
  if (options_.tp_size > 1 && R > 0 && !on_shards) {  // whole rows of logits
    const cudaGraphExec_t gather = graph != nullptr ? bucket_state_[bucket].gather_graph : nullptr;
    if (gather != nullptr) {
      RETURN_IF_ERROR(Cuda(cudaGraphLaunch(gather, stream_), "graph launch (logits all-gather)"));
    } else {
      RETURN_IF_ERROR(GatherLogits(step.logit_rows));
    }
  }

  // Results: logits first (sampling may apply penalties in place).
  if (f.need_logits && f.logits_index.empty()) {
    RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(host_logits_, logits_, size_t(R) * V * 4, cudaMemcpyDeviceToHost, stream_),
        "download logits"));
  } else if (f.need_logits) {
    // Only the rows asked for (top-n logprob rows among device-sampled
    // ones: at batch 64 one such row would otherwise bring down 39 MB), a
    // copy per run of consecutive rows.
    for (int r = 0; r < R;) {
      if (f.logits_index[r] < 0) {
        ++r;
        continue;
      }
      int end = r + 1;
      while (end < R && f.logits_index[end] >= 0) ++end;
      RETURN_IF_ERROR(Cuda(
          cudaMemcpyAsync(host_logits_ + size_t(f.logits_index[r]) * V, logits_ + size_t(r) * V,
                          size_t(end - r) * V * 4, cudaMemcpyDeviceToHost, stream_),
          "download logits rows"));
      r = end;
    }
  }
  if (on_shards) {
    // This shard's greedy picks (penalties applied to its tokens), as
    // candidates; the best of every rank's.
    const int32_t* pen_ids = static_cast<const int32_t*>(penalty_dev_);
    if (vocab_rows_ > 0) {
      const int vr = static_cast<int>(vocab_rows_);
      RETURN_IF_ERROR(kernels::LaunchSample(
          logits_local_, vr, R, vr, MetaDev<kernels::SamplingRow>(L.sampling),
          penalties > 0 ? MetaDev<int32_t>(L.penalty_offsets) : nullptr,
          penalties > 0 ? pen_ids : nullptr, penalties > 0 ? pen_ids + penalties : nullptr,
          sampled_, stream_));
      RETURN_IF_ERROR(LaunchPackGreedyCandidates(logits_local_, vr, R, sampled_, vocab_begin_,
                                                 candidates_, stream_));
    } else {  // no columns here: the empty candidate
      RETURN_IF_ERROR(Cuda(cudaMemsetAsync(candidates_, 0, size_t(R) * 8, stream_),
                           "empty greedy candidates"));
    }
    RETURN_IF_ERROR(options_.collectives->AllReduceMaxU64(candidates_, R, stream_));
    // The group's tokens into sampled_ (a fed next step reads them there).
    RETURN_IF_ERROR(LaunchUnpackGreedyCandidates(candidates_, R, sampled_, stream_));
    RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(o.candidates, candidates_, size_t(R) * 8, cudaMemcpyDeviceToHost, stream_),
        "download greedy candidates"));
    ++shard_sampled_steps_;
  } else if (from_candidates) {
    // The decode graph's last kernel put the tokens into the pinned slot
    // (which the device reaches through unified addressing) and sampled_.
    ++greedy_candidate_steps_;
  } else if (any_sampling) {
    const float* raw = logits_;
    if (any_logprob) {
      RETURN_IF_ERROR(kernels::LaunchRowLogSumExp(logits_, V, R, V, lse_, stream_));
      if (penalties > 0) {
        RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(raw_logits_, logits_, size_t(R) * V * 4,
                                             cudaMemcpyDeviceToDevice, stream_),
                             "keep raw logits"));
        raw = raw_logits_;
      }
    }
    const int32_t* pen_ids = static_cast<const int32_t*>(penalty_dev_);
    // Into sampled_ (a fed next step reads them there), then down.
    RETURN_IF_ERROR(
        kernels::LaunchSample(logits_, V, R, V, MetaDev<kernels::SamplingRow>(L.sampling),
                              penalties > 0 ? MetaDev<int32_t>(L.penalty_offsets) : nullptr,
                              penalties > 0 ? pen_ids : nullptr,
                              penalties > 0 ? pen_ids + penalties : nullptr, sampled_, stream_));
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(o.tokens, sampled_, size_t(R) * 4, cudaMemcpyDeviceToHost, stream_),
             "download sampled tokens"));
    if (any_logprob) {
      RETURN_IF_ERROR(
          kernels::LaunchTokenLogprob(raw, V, R, V, sampled_, lse_, logprobs_, stream_));
      RETURN_IF_ERROR(Cuda(
          cudaMemcpyAsync(o.logprobs, logprobs_, size_t(R) * 4, cudaMemcpyDeviceToHost, stream_),
          "download logprobs"));
    }
  }
  RETURN_IF_ERROR(Cuda(cudaEventRecord(o.end, stream_), "record step end"));
  f.t_submitted = Clock::now();
  // Rows whose token is now in sampled_ (on shards, the group's, unpacked
  // from the reduced candidates).
  feedable_.assign(f.device_sampled.begin(), f.device_sampled.end());
  ++steps_submitted_;
  in_flight_.push_back(std::move(f));
  return absl::OkStatus();
}

absl::Status CudaBackend::FinishStep(InFlight& f, StepOutput* output) {
  const int V = static_cast<int>(config_.vocab_size);
  output->Clear();
  output->vocab_size = V;
  output->rows = f.rows;
  if (!f.gpu_work) return absl::OkStatus();
  const OutSlot& o = out_slots_[f.slot];
  const Clock::time_point t_wait = Clock::now();
  // The last step in flight: the whole stream, through the group's bounded
  // wait; an older one: its own end.
  RETURN_IF_ERROR(&f == &in_flight_.back()
                      ? Sync("step")
                      : Cuda(cudaEventSynchronize(o.end), "wait for the step"));
  const Clock::time_point t_done = Clock::now();
  float gpu_ms = 0;
  if (cudaEventElapsedTime(&gpu_ms, o.begin, o.end) == cudaSuccess) {
    last_step_gpu_seconds_ = gpu_ms * 1e-3;
  }
  const int R = static_cast<int>(f.rows.size());
  if (f.need_logits) {
    const size_t rows = f.logits_index.empty() ? size_t(R) : size_t(f.logits_rows);
    output->logits.assign(host_logits_, host_logits_ + rows * V);
    output->logits_index = f.logits_index;
  }
  if (f.on_shards) {
    output->sampled_token_ids.resize(R);
    output->sampled_logprobs.assign(R, std::numeric_limits<float>::quiet_NaN());
    for (int r = 0; r < R; ++r) {
      const int32_t t = GreedyCandidateToken(o.candidates[r]);
      if (t < 0 || t >= V) {
        return absl::InternalError(absl::StrCat("row ", r, ": greedy candidate ", o.candidates[r],
                                                " (token ", t, ") outside the vocabulary"));
      }
      output->sampled_token_ids[r] = t;
    }
  } else if (f.any_sampling) {
    output->sampled_token_ids.assign(R, -1);
    output->sampled_logprobs.assign(R, std::numeric_limits<float>::quiet_NaN());
    for (int r = 0; r < R; ++r) {
      if (!f.device_sampled[r]) continue;
      output->sampled_token_ids[r] = o.tokens[r];
      if (f.logprob[r]) output->sampled_logprobs[r] = o.logprobs[r];
    }
  }
  const auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  last_step_host_phases_ = {seconds(f.t_prepared - f.t_begin),
                            seconds(f.t_submitted - f.t_prepared), seconds(t_done - t_wait),
                            seconds(Clock::now() - t_done)};
  return absl::OkStatus();
}

absl::Status CudaBackend::Collect(StepOutput* output) {
  if (in_flight_.empty()) return absl::FailedPreconditionError("Collect with no step in flight");
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  InFlight& f = in_flight_.front();
  absl::Status status = absl::OkStatus();
  if (f.done.has_value()) {
    std::swap(*output, *f.done);
    spare_output_ = *std::move(f.done);  // the caller's old buffers, for the next early finish
  } else {
    status = FinishStep(f, output);
  }
  in_flight_.pop_front();
  return status;
}

absl::Status CudaBackend::CopyBlocks(int layer_group,
                                     absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  if (layer_group < 0 || layer_group >= spec_.num_layer_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer group ", layer_group, " of ", spec_.num_layer_groups));
  }
  std::vector<std::pair<int32_t, int32_t>> copies;
  absl::flat_hash_set<int32_t> sources, dests;
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= spec_.num_blocks || dst < 0 || dst >= spec_.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy ", src, " -> ", dst, ": block outside the pool [0, ", spec_.num_blocks, ")"));
    }
    if (src == dst) continue;
    if (!dests.insert(dst).second) {
      return absl::InvalidArgumentError(absl::StrCat("block ", dst, " is copied to twice"));
    }
    sources.insert(src);
    copies.emplace_back(src, dst);
  }
  for (const auto& [src, dst] : copies) {
    if (sources.contains(dst)) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", dst, " is both a source and a destination"));
    }
  }
  if (copies.empty()) return absl::OkStatus();
  const int n = static_cast<int>(copies.size());
  RETURN_IF_ERROR(ReservePairs(pairs_, n, stream_));
  RETURN_IF_ERROR(Cuda(cudaEventSynchronize(pairs_.copied), "wait for the last pair upload"));
  int32_t* host = static_cast<int32_t*>(pairs_.host);
  for (int i = 0; i < n; ++i) {
    host[2 * i] = copies[i].first;
    host[2 * i + 1] = copies[i].second;
  }
  RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(pairs_.dev, pairs_.host, size_t(n) * 8, cudaMemcpyHostToDevice, stream_),
           "upload block pairs"));
  RETURN_IF_ERROR(Cuda(cudaEventRecord(pairs_.copied, stream_), "record pair upload"));
  RETURN_IF_ERROR(kernels::LaunchCopyBlocks(pools_[layer_group], spec_.BlockBytes(layer_group),
                                            static_cast<const int32_t*>(pairs_.dev), n, stream_));
  return Cuda(cudaEventRecord(copies_done_, stream_), "record block copies");
}

absl::Status CudaBackend::ReservePairs(PairBuffers& b, size_t n, cudaStream_t stream) {
  if (n <= b.capacity) return absl::OkStatus();
  RETURN_IF_ERROR(stream == stream_
                      ? Sync("grow block-pair buffers")
                      : Cuda(cudaStreamSynchronize(stream), "grow block-pair buffers"));
  if (b.host != nullptr) cudaFreeHost(b.host);
  if (b.dev != nullptr) cudaFree(b.dev);
  b.host = b.dev = nullptr;
  b.capacity = 0;
  const size_t cap = std::max<size_t>(n, 1024);
  RETURN_IF_ERROR(Cuda(cudaMallocHost(&b.host, PairBufferBytes(cap)), "pinned block pairs"));
  RETURN_IF_ERROR(Cuda(cudaMalloc(&b.dev, PairBufferBytes(cap)), "block pairs"));
  b.capacity = cap;
  return absl::OkStatus();
}

absl::Status CudaBackend::ComputeDistanceSums(int layer_group,
                                              absl::Span<const kvmanager::BlockPair> pairs,
                                              absl::Span<kvmanager::DistanceSums> out) {
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  if (absl::Status s = ValidateDistancePairs(spec_, layer_group, pairs, out.size()); !s.ok()) {
    return s;
  }
  if (pairs.empty()) return absl::OkStatus();
  if (pairs.size() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(pairs.size(), " pairs in one call"));
  }
  const int n = static_cast<int>(pairs.size());
  const kernels::KvBlockShape shape{spec_.LayersInGroup(layer_group), spec_.kv_heads_local,
                                    spec_.block_size, spec_.head_dim};
  // With steps in flight, beside them: pipelined steps keep the device busy
  // while MemShare verifies (the blocks compared are committed, so no step
  // in flight writes them; the last CopyBlocks is waited for).
  const bool beside = !in_flight_.empty();
  cudaStream_t stream = beside ? aux_stream_ : stream_;
  PairBuffers& buf = beside ? aux_pairs_ : pairs_;
  auto wait = [&](absl::string_view what) {
    return beside ? Cuda(cudaStreamSynchronize(stream), what) : Sync(what);
  };
  const size_t ws = kernels::BlockDistanceWorkspaceBytes(shape, n);
  RETURN_IF_ERROR(ReservePairs(buf, n, stream));
  if (ws > distance_workspace_bytes_) {
    // No distance kernel runs now (each call waits for its own).
    if (distance_workspace_ != nullptr) cudaFree(distance_workspace_);
    distance_workspace_ = nullptr;
    distance_workspace_bytes_ = 0;
    RETURN_IF_ERROR(Cuda(cudaMalloc(&distance_workspace_, ws), "distance workspace"));
    distance_workspace_bytes_ = ws;
  }
  RETURN_IF_ERROR(Cuda(cudaEventSynchronize(buf.copied), "wait for the last pair upload"));
  if (beside) {
    RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(stream, copies_done_, 0), "order after block copies"));
  }
  // The pairs as they are (int32 [n][4], the kernel's layout), then the
  // results.
  std::memcpy(buf.host, pairs.data(), size_t(n) * sizeof(kvmanager::BlockPair));
  const size_t results_at = PairResultsOffset(buf.capacity);
  auto* dev_sums =
      reinterpret_cast<kernels::BlockPairSums*>(static_cast<char*>(buf.dev) + results_at);
  auto* host_sums =
      reinterpret_cast<kernels::BlockPairSums*>(static_cast<char*>(buf.host) + results_at);
  RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(buf.dev, buf.host, size_t(n) * sizeof(kvmanager::BlockPair),
                                       cudaMemcpyHostToDevice, stream),
                       "upload block pairs"));
  // Shift-0 pairs give what LaunchBlockDistance gives, bit for bit.
  RETURN_IF_ERROR(kernels::LaunchBlockDistanceWindows(pools_[layer_group], shape, spec_.num_blocks,
                                                      static_cast<const int32_t*>(buf.dev), n,
                                                      distance_workspace_, dev_sums, stream));
  RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(host_sums, dev_sums, size_t(n) * sizeof(*dev_sums),
                                       cudaMemcpyDeviceToHost, stream),
                       "download distance sums"));
  RETURN_IF_ERROR(Cuda(cudaEventRecord(buf.copied, stream), "record pair upload"));
  RETURN_IF_ERROR(wait("distance sums"));
  for (int i = 0; i < n; ++i) {
    out[i].k_diff_sq = host_sums[i].k_diff_sq;
    out[i].k_norm_sq = host_sums[i].k_norm_sq;
    out[i].v_diff_sq = host_sums[i].v_diff_sq;
    out[i].v_norm_sq = host_sums[i].v_norm_sq;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> CudaBackend::TimeGraphReplayForBenchmark(int32_t batch, int reps) {
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  if (!in_flight_.empty()) {
    return absl::FailedPreconditionError("graph replay with steps in flight (Collect them first)");
  }
  const auto it = std::find(buckets_.begin(), buckets_.end(), batch);
  if (it == buckets_.end() || reps < 1 || bucket_state_[it - buckets_.begin()].graph == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph replay: no decode graph of ", batch, " sequences (or reps < 1)"));
  }
  const cudaGraphExec_t graph = bucket_state_[it - buckets_.begin()].graph;
  const OutSlot& o = out_slots_[0];
  RETURN_IF_ERROR(Cuda(cudaGraphLaunch(graph, stream_), "graph launch"));  // warm
  RETURN_IF_ERROR(Cuda(cudaEventRecord(o.begin, stream_), "event"));
  for (int i = 0; i < reps; ++i) {
    RETURN_IF_ERROR(Cuda(cudaGraphLaunch(graph, stream_), "graph launch"));
  }
  RETURN_IF_ERROR(Cuda(cudaEventRecord(o.end, stream_), "event"));
  RETURN_IF_ERROR(Sync("graph replay"));
  float ms = 0;
  RETURN_IF_ERROR(Cuda(cudaEventElapsedTime(&ms, o.begin, o.end), "event time"));
  return ms * 1e-3 / reps;
}

absl::Status CudaBackend::FillKvPoolsForBenchmark(uint64_t seed, float std) {
  RETURN_IF_ERROR(Cuda(cudaSetDevice(options_.device), "cudaSetDevice"));
  for (int g = 0; g < spec_.num_layer_groups; ++g) {
    const int64_t n = spec_.BlockBytes(g) / 2 * spec_.num_blocks;
    RETURN_IF_ERROR(
        kernels::LaunchDummyNormalBf16(SplitMix64(seed + g), std, n, 0, n, 0, pools_[g], stream_));
  }
  return Sync("fill KV pools");
}

}  // namespace memshare::engine::cuda
