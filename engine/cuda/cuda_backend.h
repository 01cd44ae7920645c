// The CUDA backend (DESIGN.md §5): the forward pass of a Llama, Mistral,
// Qwen2 or Qwen3 model on one NVIDIA GPU in bf16 with fp32 accumulation,
// over every sequence of a StepPlan at once (prefill chunks and decode
// tokens in one step), with the kernels of kernels/ and cuBLASLt GEMMs.
//
// Weights: bf16 on the device, Q/K/V fused into one matrix (and bias), gate
// and up fused into another, loaded from the checkpoint (any of F32, F16,
// BF16 on disk) or drawn on the GPU for `--load-format dummy` (the values of
// ModelWeights::Dummy, rounded to bf16).
//
// KV store: one pool per layer group, laid out as backend.h says, in device
// memory, zero-filled at creation. Its size: Options::num_blocks, or what
// is left when the weights, activations and workspaces are allocated and
// (1 - gpu_memory_utilization) of the card's memory is kept free.
//
// Per step: the step's metadata (token ids, KV slots, context lengths,
// block tables, MemShare shifted views when the step has any, sampling
// parameters) is built once in pinned host memory and copied in one
// transfer; then embedding -> per layer [RMSNorm (fused
// with the residual add), QKV GEMM (+bias in the epilogue), q/k RMSNorm
// (Qwen3), K/V write into the paged pool (K before RoPE), paged attention
// (RoPE on read), O GEMM, add + RMSNorm, gate/up GEMM, SiLU-and-mul, down
// GEMM] -> add + final RMSNorm -> LM head (fp32) for the rows that ask for
// logits only -> optional sampling on the device. The stream is
// synchronized once, at the end of Forward (or in Collect), to hand back
// results.
//
// Pipelined steps (Backend::Submit / Collect, one GPU): step N + 1 is
// prepared, uploaded and launched while step N runs, so the device goes
// from one step to the next without waiting for the host. The tokens a
// step samples on the device also stay in a device buffer, which the next
// step's embedding reads for its fed chunks (SequenceChunk::fed_row: the
// token id in the metadata is -2 - row). Each step in flight has its own
// pinned result slot; the pinned metadata is rewritten only after the step
// in flight has uploaded it.
//
// Decode steps (one token per sequence, every sequence asking for logits,
// at most the largest bucket) run padded to a batch-size bucket (padding
// rows: token -1, slot -1, context 0): replayed from a CUDA graph captured
// at creation, or, with graphs off, the same kernels launched one by one
// (bit-identical). Other steps run eagerly.
//
// MemShare shifted views (SequenceChunk::block_tables_hi / block_shifts):
// a step where some chunk has a view passes hi-block and shift tables,
// shaped like the block tables (rows without views: hi = own block, shift
// 0), to every attention launch; a step without views passes none, and the
// attention kernels run their view-free code. Each decode bucket has two
// graphs, one for each case. Distance sums read shifted reference windows
// (kernels/block_distance.h LaunchBlockDistanceWindows).
//
// Attention: the tensor-core kernels of kernels/attention.h for head_dim 64
// and 128 with 16-token blocks; kernels/attention_generic.h otherwise (the
// tiny test checkpoints).
//
// Tensor parallelism (tp_size > 1, DESIGN.md §5): this backend is one
// rank's shard. Q/K/V and gate/up are column-parallel (this rank's heads and
// intermediate rows), O and down row-parallel, their outputs all-reduced;
// the embedding is vocab-parallel (a token outside this rank's rows gets a
// zero row, then an all-reduce) and so is the LM head (each rank's logits
// columns). A step whose rows all sample greedily without logprobs or
// logits (shard_sampling.h) samples on the shards where the collectives
// offer it (DeviceCollectives::samples_on_shards): each rank applies the
// penalties of its tokens, takes its columns' argmax with the same sampler
// and the ranks keep the best candidate of each row (one all-reduce of a
// uint64 per row): exactly the tokens of the whole rows. Every other step
// all-gathers the columns into whole rows (in decode steps a second, small
// CUDA graph after the step's graph), so every rank samples the same
// tokens from the same logits. KV heads are split across ranks, or
// replicated when there are fewer KV heads than ranks; the KV pool holds
// this rank's heads, with the same block count on every rank (the smallest
// any rank can hold). The collectives are enqueued on the backend's stream
// (inside the decode graphs) through Options::collectives, and every wait
// for the stream is bounded by the group's timeout. Where the collectives
// offer it, a row-parallel output's all-reduce and the residual add +
// RMSNorm after it run as one kernel (the same bits). Every rank must be
// created with the same options (except tp_rank and device) and run the
// same calls in the same order (engine/parallel/group_*).
//
// Thread-compatible (backend.h): one caller at a time; any thread (each
// call makes its device current).
#ifndef MEMSHARE_ENGINE_CUDA_CUDA_BACKEND_H_
#define MEMSHARE_ENGINE_CUDA_CUDA_BACKEND_H_

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/cuda/device_collectives.h"
#include "engine/cuda/gemm.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace memshare::engine::cuda {

class CudaBackend : public Backend {
 public:
  struct Options {
    // Hugging Face model directory (config.json, *.safetensors). With
    // load_format kDummy it gives the config unless `config` is set.
    std::string model_dir;
    // kSafetensors: the directory's weights; kDummy: random weights.
    model::LoadFormat load_format = model::LoadFormat::kSafetensors;
    // The model's shape for kDummy without a model_dir.
    std::optional<model::ModelConfig> config;
    // kDummy only: seed and std of the random weights.
    model::ModelWeights::DummyOptions dummy;
    // CUDA device ordinal.
    int32_t device = 0;
    // Tokens per KV block.
    int32_t block_size = 16;
    // Contiguous layer ranges with their own block tables (SplitLayers).
    int32_t num_layer_groups = 1;
    // Physical KV blocks per layer group; 0: sized from
    // gpu_memory_utilization.
    int32_t num_blocks = 0;
    // Share of the card's memory this backend may leave in use once the KV
    // pools are allocated (num_blocks = 0 only); the rest stays free.
    double gpu_memory_utilization = 0.9;
    // Most tokens in one step (sizes the activation buffers).
    int32_t max_num_batched_tokens = 8192;
    // Most sequences in one step.
    int32_t max_num_seqs = 256;
    // Longest sequence (prompt + output) in tokens; 0: the model's
    // max_position_embeddings, capped at 32768. Sizes the block tables.
    int32_t max_model_len = 0;
    // Replay decode steps from CUDA graphs (false: the same padded work,
    // launched kernel by kernel).
    bool enable_cuda_graphs = true;
    // Decode batch-size buckets, ascending; empty: 1, 2, 4, 8, then every
    // multiple of 16 up to 128 and of 32 beyond, up to max_num_seqs (which
    // is always the last bucket).
    std::vector<int32_t> cuda_graph_batch_sizes;
    // Time cuBLASLt's candidate algorithms for the decode GEMM shapes at
    // every bucket at creation (a few seconds for a 7B model) instead of
    // taking the heuristic's first choice.
    bool tune_gemms = true;
    // Decode shapes (up to 64 tokens) on our skinny GEMM
    // (kernels/skinny_gemm.h): where the tuning above times it faster than
    // cuBLASLt (default), always, or never.
    SkinnyGemmMode skinny_gemm = SkinnyGemmMode::kWhenFaster;
    // kWhenFaster: how much slower than cuBLASLt, alone (timed without
    // programmatic dependent launch), the skinny kernel may time and still
    // be kept (CublasLtGemm::Options::skinny_preference; 0.3: 30 %), for the
    // overlap it gains in a step through that launch. On an H100 at batch
    // 64: decode step 7.29 ms at 0 (QKV and O on cuBLASLt), 7.12-7.13 ms at
    // 0.3 and 0.5 (bench/NOTES-cuda-backend.md, session 5, calls 5 and 8).
    double skinny_gemm_preference = 0.3;
    // The tuning may pick the skinny GEMM's column split (kernels/
    // skinny_gemm.h, SkinnyGemmArgs::wide_ctas; CublasLtGemm::Options::wide).
    bool skinny_wide = true;
    // One GPU (tp_size 1) with the skinny GEMM on: the RMSNorms of steps of
    // up to 64 tokens run in the GEMMs' epilogues (kernels/skinny_gemm.h:
    // residual mode in the O and down projections, scale mode in the QKV,
    // gate/up and, untied, LM-head products), which saves two kernels a
    // layer. The norms' weights are then folded into those products'
    // weights at load (one bf16 rounding each) and every norm kernel left
    // (prefill, a shape tuned to cuBLASLt) runs with unit weight. Measured
    // (H100, bench/NOTES-cuda-backend.md, session 7): the decode step at
    // batch 64 0.07-0.08 ms faster; on the golden checkpoints the error
    // against transformers fp32 went from 0.64-0.93 to 0.73-1.06 of
    // transformers' own bf16 error.
    bool fuse_norms = true;
    // One GPU, decode buckets whose LM head runs on the skinny GEMM: greedy
    // rows (no penalties, logprobs or logits asked) take their tokens from
    // the LM head's per-tile greedy candidates; no logits are stored and no
    // sampling pass runs. The reduction of the candidates to tokens is the
    // last kernel of the bucket's graph.
    bool greedy_candidates = true;
    // The step's metadata uploaded by a kernel that reads the pinned buffer
    // through unified addressing, instead of a copy-engine transfer (where
    // the whole buffer goes up at once): the stream then waits for no copy
    // engine between steps (b64 pipelined decode step -2 to -8 us, H100,
    // bench/NOTES-cuda-backend.md session 10).
    bool upload_by_kernel = true;
    // Which skinny products let the next kernel launch at their start
    // (GemmArgs::early_dependents), a bit each: 1 QKV, 2 O, 4 gate/up, 8
    // down, 16 the LM head. Gate/up and down by default: the b64 decode
    // step -10 to -15 us against none; adding QKV or the LM head changed
    // nothing, all five were +12 us (H100, bench/NOTES-cuda-backend.md
    // session 11).
    int early_dependents = 4 | 8;
    // Token counts of prefill steps to tune the GEMMs for at creation
    // (TuneForTokens), e.g. max_num_batched_tokens; empty: none.
    std::vector<int32_t> tune_prefill_tokens;
    // Tensor parallelism: this rank and the group's size (1: the whole
    // model on this device).
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    // The group's collectives, required when tp_size > 1 (not owned; they
    // outlive the backend).
    DeviceCollectives* collectives = nullptr;
  };

  // INVALID_ARGUMENT for bad options (also a tp_rank outside 0 ..
  // tp_size-1, or collectives missing or of another size); the loader's
  // errors (naming file and tensor) for a bad checkpoint; UNIMPLEMENTED for
  // a shape the kernels do not run or heads that do not split over
  // tp_size ranks (model::ListWeights); RESOURCE_EXHAUSTED when weights, buffers or one block per
  // group do not fit; INTERNAL for a CUDA or cuBLASLt failure (also
  // FAILED_PRECONDITION when no CUDA device is usable).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const Options& options);

  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const KvCacheSpec& kv_spec() const override { return spec_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(config_.vocab_size); }
  bool SamplesOnDevice() const override { return true; }
  // Both attention paths (tensor-core and generic) and the distance kernel
  // read views, for every shape this backend runs.
  bool SupportsShiftedViews() const override { return true; }
  const model::ModelConfig& config() const { return config_; }

  // Backend. INVALID_ARGUMENT (nothing run) for what every backend rejects
  // (engine/plan_validation.h; shifted views included), with positions
  // checked against max_model_len, and also for more than max_num_seqs
  // sequences or max_num_batched_tokens tokens and bad sampling values.
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override;
  // On one GPU and as a tensor-parallel rank: a fed token comes from the
  // previous step's sampling on the device, on vocabulary shards the group's
  // greedy token (the reduced candidates, unpacked on every rank).
  bool SupportsPipelining() const override { return true; }
  absl::Status Submit(const StepPlan& plan) override;
  absl::Status Collect(StepOutput* output) override;
  // INVALID_ARGUMENT also when a destination repeats or is the source of
  // another pair (the copies run in parallel). Enqueued, not waited for:
  // ordered before the next Forward.
  absl::Status CopyBlocks(int layer_group,
                          absl::Span<const std::pair<int32_t, int32_t>> src_dst) override;

  // kvmanager::BlockDistance, with kernels/block_distance.h (fp32 sums per
  // pair in a fixed order, shifted reference windows included; returned as
  // double).
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override;

  // Decode buckets and how steps ran, for tests and benchmarks.
  const std::vector<int32_t>& decode_buckets() const { return buckets_; }
  bool graphs_captured() const { return !bucket_state_.empty() && bucket_state_[0].graph; }
  int64_t graph_steps() const { return graph_steps_; }
  int64_t padded_decode_steps() const { return padded_decode_steps_; }
  int64_t eager_steps() const { return eager_steps_; }
  // Steps whose attention read shifted views (any of the three kinds).
  int64_t view_steps() const { return view_steps_; }
  // tp_size > 1: steps sampled on the vocabulary shards (no logits
  // all-gather).
  int64_t shard_sampled_steps() const { return shard_sampled_steps_; }
  // Steps whose tokens came from the LM head's greedy candidates (no logits
  // stored, no sampling pass).
  int64_t greedy_candidate_steps() const { return greedy_candidate_steps_; }
  // Steps whose block tables went up as the used part of each row only
  // (UploadMetadata).
  int64_t compact_table_uploads() const { return compact_table_uploads_; }
  int32_t max_model_len() const { return max_model_len_; }
  // Device bytes of the weights and of every KV pool together.
  int64_t weight_bytes() const { return weight_bytes_; }
  int32_t tp_rank() const { return options_.tp_rank; }
  int32_t tp_size() const { return options_.tp_size; }
  int64_t kv_pool_bytes() const { return kv_pool_bytes_; }

  // Device time of the last step collected (Forward or Collect), from its
  // metadata upload to its last result download (CUDA events; a pipelined
  // step's span starts when the step before it ends), in seconds.
  double last_step_gpu_seconds() const { return last_step_gpu_seconds_; }
  // Host time of the last step collected by phase, in seconds: validation
  // and metadata (prepare) and the uploads and launches (submit) in Submit,
  // the wait for the device (wait) and the results copied out (finish) in
  // Collect.
  struct HostPhases {
    double prepare = 0;
    double submit = 0;
    double wait = 0;
    double finish = 0;
  };
  const HostPhases& last_step_host_phases() const { return last_step_host_phases_; }

  // Times cuBLASLt's candidates for the model's GEMM shapes at `tokens`
  // rows (the LM head at min(tokens, max_num_seqs)) and keeps the fastest,
  // e.g. for the prefill chunk size a scheduler uses. Synchronizes;
  // overwrites the activation buffers (between steps that is harmless).
  // INVALID_ARGUMENT for tokens outside 1 .. max_num_batched_tokens.
  absl::Status TuneForTokens(int32_t tokens);

  // What each of the model's GEMMs runs at `tokens` rows (clamped to 1 ..
  // max_num_batched_tokens): "qkv cublaslt, o skinny-wgmma/4, ..." in the
  // terms of CublasLtGemm::Choice ("untuned" where no plan exists yet).
  std::string GemmChoices(int32_t tokens) const;

  // Fills every KV pool with bf16 N(0, std^2) values drawn on the device
  // (benchmarks of attention over a context nobody prefilled). Waits for it.
  absl::Status FillKvPoolsForBenchmark(uint64_t seed, float std);

  // Replays the graph of the decode bucket of exactly `batch` sequences
  // (no shifted views) `reps` times back to back, with the device metadata
  // of the last step, and returns the GPU time of one replay in seconds: a
  // decode step less its upload, sampling and host work (benchmarks).
  absl::StatusOr<double> TimeGraphReplayForBenchmark(int32_t batch, int reps);

 private:
  using Clock = std::chrono::steady_clock;
  // Pinned results of one step in flight; two, so that step N + 1 can run
  // while step N's are read (Submit / Collect).
  struct OutSlot {
    int32_t* tokens = nullptr;       // [max_seqs], in host_tokens_
    float* logprobs = nullptr;       // [max_seqs]
    uint64_t* candidates = nullptr;  // [max_seqs]: tp_size > 1, sampling on shards
    cudaEvent_t begin = nullptr;     // the step's first and last work on the stream
    cudaEvent_t end = nullptr;
  };
  // A step submitted and not yet collected: what Collect needs to build
  // its StepOutput.
  struct InFlight {
    int slot = 0;
    bool gpu_work = false;  // false for an empty plan
    std::vector<int32_t> rows;
    std::vector<uint8_t> device_sampled;  // per row: the chunk has `sampling`
    std::vector<uint8_t> logprob;         // per row: its logprob asked
    bool need_logits = false;             // rows of logits come back in host_logits_
    // With need_logits: empty when every row's logits come back; else, per
    // row, its place among the packed rows that do (-1: not downloaded;
    // StepOutput::logits_index).
    std::vector<int32_t> logits_index;
    int32_t logits_rows = 0;              // rows in host_logits_
    bool on_shards = false;               // tokens from the ranks' greedy candidates
    bool any_sampling = false;
    // Results already copied out (a later step needed host_logits_).
    std::optional<StepOutput> done;
    Clock::time_point t_begin, t_prepared, t_submitted;
  };

  // The buffers of an output the caller handed back through Collect,
  // reused by the next step finished early (Submit).
  StepOutput spare_output_;

  // Waits for `f` (the oldest step in flight) and copies its results out.
  absl::Status FinishStep(InFlight& f, StepOutput* output);
  // One layer's weights on the device (bf16; null where the model has none).
  struct LayerWeights {
    const void* input_norm = nullptr;  // [hidden]
    const void* qkv = nullptr;         // [q_dim + 2 kv_dim][hidden]: Q, K, V rows
    const void* qkv_bias = nullptr;    // [q_dim + 2 kv_dim]
    const void* q_norm = nullptr;      // [head_dim]
    const void* k_norm = nullptr;      // [head_dim]
    const void* o_proj = nullptr;      // [hidden][q_dim]
    const void* post_norm = nullptr;   // [hidden]
    const void* gate_up = nullptr;     // [2 inter][hidden]: gate rows, then up rows
    const void* down = nullptr;        // [hidden][inter]
  };
  // One of the model's GEMMs at some token count, on layer 0's weights and
  // the step's buffers; per_layer names the weight in LayerWeights (null:
  // the LM head).
  struct ModelGemm {
    const char* name;
    GemmArgs args;
    const void* LayerWeights::*per_layer;
  };
  std::vector<ModelGemm> ModelGemms(int32_t tokens) const;

  // Byte offsets of one step's metadata, the same in the pinned host buffer
  // and its device copy. T tokens, S sequences, G layer groups, `stride`
  // block-table entries per (sequence, group); int32 unless said.
  struct MetaLayout {
    int32_t tokens = 0;          // T
    int32_t seqs = 0;            // S
    int32_t stride = 0;          // block-table entries per (sequence, group)
    size_t token_ids = 0;        // [T]
    size_t slots = 0;            // [G][T]: block * block_size + offset; -1 padding
    size_t context_lens = 0;     // [S]: keys per sequence; 0 padding
    size_t cu_q_lens = 0;        // [S + 1]
    size_t logit_rows = 0;       // [S]: token row of each logits row
    size_t sampling = 0;         // kernels::SamplingRow [S]
    size_t penalty_offsets = 0;  // [S + 1]
    size_t store_logits = 0;     // one int32: whether the LM head stores logits_
    size_t out_offset = 0;       // one int32: host_tokens_'s row of the step's row 0
    size_t block_tables = 0;     // [S][G][stride]
    // With views only (else 0): shifted views, [S][G][stride] like
    // block_tables (hi = own block and shift 0 where there is no view).
    // They come last, so the offsets above are the same either way.
    bool views = false;
    size_t block_tables_hi = 0;
    size_t block_shifts = 0;
    size_t bytes = 0;
  };

  // Device pointers of a step, as the kernels see them.
  struct StepArgs {
    MetaLayout layout;
    int num_tokens = 0;  // rows computed (padded for decode buckets)
    int num_seqs = 0;
    int max_q_len = 0;
    int32_t max_context = 0;  // longest sequence of the step (sizes a decode split)
    bool decode = false;      // one query token per sequence
    int logit_rows = 0;       // rows of the LM head
    bool gather = false;      // LM head rows are logit_rows[], not 0..logit_rows-1
    int bucket_index = -1;    // decode bucket, or -1
    bool views = false;       // attention reads layout.block_tables_hi / block_shifts
  };

  struct Bucket {
    int32_t size = 0;
    int32_t num_splits = 1;
    int32_t blocks_per_split = 1;
    cudaGraphExec_t graph = nullptr;        // steps without shifted views
    cudaGraphExec_t views_graph = nullptr;  // steps with them
    // The bucket's LM head leaves greedy candidates in greedy_candidates_
    // (one GPU, the skinny kernel): steps whose rows are all greedy without
    // penalties, logprobs or logits take their tokens from them.
    bool greedy_candidates = false;
    // tp_size > 1: the logits all-gather of the bucket's rows (GatherLogits),
    // replayed after either graph when the step needs whole rows.
    cudaGraphExec_t gather_graph = nullptr;
  };

  CudaBackend(const Options& options, model::ModelConfig config);

  absl::Status Init();
  absl::Status AllocateWeights();
  absl::Status LoadWeights();
  absl::Status AllocateBuffers();
  absl::Status AllocatePools();
  absl::Status PrepareBuckets();
  absl::Status Validate(const StepPlan& plan) const;
  MetaLayout Layout(int tokens, int seqs, int stride, bool views) const;
  // Fills the pinned buffer for a decode bucket of padding only.
  void FillPadding(const MetaLayout& layout);
  // Enqueues the model (embedding to logits) for a step whose metadata is
  // on the device. tp_size > 1: to this rank's logits columns
  // (logits_local_); GatherLogits makes whole rows of them.
  absl::Status RunModel(const StepArgs& step);
  // tp_size > 1: every rank's logits columns of `rows` rows, all-gathered
  // into whole rows of logits_.
  absl::Status GatherLogits(int rows);
  static GemmArgs Args(int m, int n, int k, const void* x, const void* w, void* y, const void* bias,
                       bool fp32_out);
  absl::Status Gemm(int m, int n, int k, const void* x, const void* w, void* y, const void* bias,
                    bool fp32_out);
  // With fold_norms_: `a` (a product whose output is the residual stream's
  // update) in residual mode into residual_ and sumsq_, where it runs on the
  // skinny kernel; else `a` unchanged.
  GemmArgs WithResidual(GemmArgs a) const;
  // `a` (a product of hidden_) in scale mode on residual_ after a
  // residual-mode product, where it runs on the skinny kernel (fused with
  // SwiGLU too when `act` is given); else `a` unchanged.
  GemmArgs WithRmsScale(GemmArgs a, const void* act = nullptr) const;
  // The weight a norm kernel gets: none (ones) where it is folded.
  const void* NormWeight(const void* w, bool folded) const { return folded ? nullptr : w; }
  // act_ = silu(hidden_ Wg^T) * (hidden_ Wu^T) for `tokens` rows, through
  // CublasLtGemm::MatmulSiluMul (one kernel where the skinny GEMM runs the
  // fused gate/up weight; else the product into gate_up_ and a SiLU pass).
  absl::Status GateUpSilu(const GemmArgs& a);
  GemmArgs GateUpArgs(int tokens, const void* gate_up_weight) const;
  // Waits for the stream: through the group's bounded wait when there is
  // one.
  absl::Status Sync(absl::string_view what);
  // Enqueues the upload of the step's metadata from the pinned buffer;
  // `used_blocks`: the most block-table entries a row of the step reads.
  absl::Status UploadMetadata(const MetaLayout& L, int32_t used_blocks);
  // Sums a bf16 [count] activation over the ranks (nothing with one rank).
  absl::Status AllReduce(void* data, int64_t count);
  // x (bf16 [rows][hidden], a row-parallel projection's output) summed over
  // the ranks, then residual_ += it and hidden_ = RmsNorm(residual_) *
  // weight: one kernel where the collectives fuse the two
  // (DeviceCollectives::FusesAllReduceAddRmsNorm), else the all-reduce and
  // kernels::LaunchAddRmsNorm; the norm alone with one rank.
  absl::Status AllReduceAddRmsNorm(void* x, const void* weight, int rows, int hidden, float eps);
  template <typename T>
  T* MetaDev(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(meta_dev_) + offset);
  }
  template <typename T>
  T* MetaHost(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(meta_host_) + offset);
  }

  const Options options_;
  const model::ModelConfig config_;
  KvCacheSpec spec_;
  std::vector<int32_t> group_of_layer_;
  int32_t max_model_len_ = 0;
  int32_t max_blocks_per_seq_ = 0;
  int32_t max_tokens_ = 0;  // activation rows
  int32_t max_seqs_ = 0;
  int num_sms_ = 0;
  bool fast_attention_ = false;
  // Options::fuse_norms in effect: the input and post-attention norms'
  // weights are folded into the QKV and gate/up weights; fold_final_norm_:
  // the final norm's into the LM head (not where it is the embedding).
  bool fold_norms_ = false;
  bool fold_final_norm_ = false;
  // This rank's shard (the whole model with one rank).
  int32_t heads_local_ = 0;   // query heads
  int64_t q_local_ = 0;       // heads_local_ * head_dim
  int64_t kv_local_dim_ = 0;  // kv_heads_local * head_dim
  int64_t inter_local_ = 0;   // intermediate rows
  int64_t vocab_begin_ = 0;   // first embedding / LM head row
  int64_t vocab_rows_ = 0;    // rows held
  int64_t vocab_chunk_ = 0;   // rows of every rank but the last (all-gather stride)

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CublasLtGemm> gemm_;

  // Weights: one allocation.
  void* weight_arena_ = nullptr;
  int64_t weight_bytes_ = 0;
  const void* embedding_ = nullptr;  // [vocab][hidden]
  const void* lm_head_ = nullptr;    // [vocab][hidden] (the embedding when tied)
  const void* final_norm_ = nullptr;
  std::vector<LayerWeights> layers_;
  std::vector<std::pair<const void*, size_t>> weight_slots_;  // per ListWeights entry: dst, bytes
  float* inv_freq_ = nullptr;                                 // [head_dim / 2]

  // Activations: one allocation, rows for max_tokens_.
  void* act_arena_ = nullptr;
  void* residual_ = nullptr;     // bf16 [T][hidden]
  void* hidden_ = nullptr;       // bf16 [T][hidden], normed
  void* qkv_ = nullptr;          // bf16 [T][q_dim + 2 kv_dim]
  void* attn_ = nullptr;         // bf16 [T][q_dim]
  void* tmp_ = nullptr;          // bf16 [T][hidden]: O and down outputs
  // fold_norms_: per-tile sums of squares of residual_'s rows from the last
  // residual-mode product (fp32 [SkinnyGemmTiles(hidden)][m]).
  float* sumsq_ = nullptr;
  // Decode buckets, one GPU: the LM head's greedy candidates, uint64
  // [kSkinnyGemmMaxM][SkinnyGemmTiles(vocab)] (kernels/skinny_gemm.h).
  uint64_t* greedy_candidates_ = nullptr;
  void* gate_up_ = nullptr;      // bf16 [T][2 inter]
  void* act_ = nullptr;          // bf16 [T][inter]
  void* selected_ = nullptr;     // bf16 [max_seqs][hidden]: rows for the LM head
  float* logits_ = nullptr;      // fp32 [max_seqs][vocab]
  float* raw_logits_ = nullptr;  // fp32 [max_seqs][vocab]: copy kept for logprobs
  // tp_size > 1: this rank's LM head columns ([rows][vocab_rows_], in a
  // buffer of max_seqs * vocab_chunk_) and every rank's, all-gathered
  // ([tp_size][max_seqs * vocab_chunk_]).
  float* logits_local_ = nullptr;
  float* logits_gathered_ = nullptr;
  float* lse_ = nullptr;        // [max_seqs]
  // [max_seqs]: the tokens sampled on the device (and the feed of the
  // next step's fed chunks, SequenceChunk::fed_row).
  int32_t* sampled_ = nullptr;
  // tp_size > 1, sampling on shards: each row's greedy candidate
  // (greedy_candidate.h), this rank's, then the best of every rank's.
  uint64_t* candidates_ = nullptr;  // [max_seqs]
  float* logprobs_ = nullptr;       // [max_seqs]
  void* attn_workspace_ = nullptr;
  size_t attn_workspace_bytes_ = 0;

  // Step metadata: pinned host buffer and its device copy.
  void* meta_host_ = nullptr;
  void* meta_dev_ = nullptr;
  size_t meta_bytes_ = 0;
  // Penalty tokens and counts ([2][capacity] int32), grown on demand.
  void* penalty_host_ = nullptr;
  void* penalty_dev_ = nullptr;
  size_t penalty_capacity_ = 0;
  // Results (pinned): two OutSlots' tokens, logprobs and greedy
  // candidates, then logits rows (one buffer: a step that downloads them
  // while another step's wait to be collected finishes that one first).
  void* out_host_ = nullptr;
  size_t out_host_bytes_ = 0;
  OutSlot out_slots_[2];
  int32_t* host_tokens_ = nullptr;  // [2][max_seqs]: the slots' tokens
  float* host_logits_ = nullptr;    // [max_seqs][vocab]
  // Steps submitted and not yet collected (at most two), oldest first.
  std::deque<InFlight> in_flight_;
  int64_t steps_submitted_ = 0;  // slot of a step: its number % 2
  // Recorded after each step's uploads: the pinned metadata and penalty
  // buffers may be rewritten once it has passed.
  cudaEvent_t inputs_uploaded_ = nullptr;
  // Per output row of the last step submitted: whether its token was
  // sampled into sampled_ on the device, so the next step may feed it
  // (SequenceChunk::fed_row).
  std::vector<bool> feedable_;
  // Block pairs of CopyBlocks and ComputeDistanceSums, results of the
  // latter: pinned and device buffers of `capacity` pairs, and the last
  // upload out of `host`.
  struct PairBuffers {
    void* host = nullptr;
    void* dev = nullptr;
    size_t capacity = 0;
    cudaEvent_t copied = nullptr;
  };
  // Room for n pairs in `b`, grown after `stream` is waited for.
  absl::Status ReservePairs(PairBuffers& b, size_t n, cudaStream_t stream);
  // On stream_; and for ComputeDistanceSums while steps are in flight, on
  // aux_stream_ beside them (it reads committed blocks only, which no step
  // in flight writes), ordered after the last CopyBlocks (copies_done_).
  PairBuffers pairs_;
  PairBuffers aux_pairs_;
  cudaStream_t aux_stream_ = nullptr;
  cudaEvent_t copies_done_ = nullptr;
  void* distance_workspace_ = nullptr;
  size_t distance_workspace_bytes_ = 0;

  std::vector<void*> pools_;  // per layer group
  int64_t kv_pool_bytes_ = 0;

  std::vector<int32_t> buckets_;
  std::vector<Bucket> bucket_state_;
  int64_t graph_steps_ = 0;
  int64_t padded_decode_steps_ = 0;
  int64_t eager_steps_ = 0;
  int64_t view_steps_ = 0;
  int64_t shard_sampled_steps_ = 0;
  int64_t greedy_candidate_steps_ = 0;
  int64_t compact_table_uploads_ = 0;
  // Whether the last RunModel's LM head left greedy candidates.
  bool lm_head_candidates_ = false;
  double last_step_gpu_seconds_ = 0;
  HostPhases last_step_host_phases_;
};

}  // namespace memshare::engine::cuda

#endif  // MEMSHARE_ENGINE_CUDA_CUDA_BACKEND_H_
