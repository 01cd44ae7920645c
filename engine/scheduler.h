// Continuous batching over one Backend and one kvmanager::KvManager
// (DESIGN.md §4, §5).
//
// Each Step():
//   1. ends sequences whose deadline has passed (blocks freed at once);
//   2. schedules running sequences first, in priority order (higher first,
//      FCFS within a priority): a decode token each, or the next chunk of a
//      prompt that is being prefilled; when the pool cannot hold a
//      sequence's next tokens, the lowest-priority, latest-arrived resident
//      sequence is preempted (its blocks are freed, it goes back to the
//      waiting queue keeping its generated tokens, and is recomputed later,
//      so its output does not change; a MemShare sequence's output is
//      segmented again on re-admission, so that it shares again what it
//      shared before once recomputed);
//   3. if nothing was preempted, admits waiting sequences in the same order,
//      reusing their longest cached prefix, while the token budget, the
//      sequence limit and the pool allow; the last chunk may be partial
//      (chunked prefill), so decode and prefill share a step. A waiting
//      sequence of higher priority than a resident one is admitted even
//      then, preempting the lowest-priority resident sequences it needs;
//   4. runs the step (pending copy-on-write copies, then Forward), samples
//      a token for every sequence whose computed tokens reach its end,
//      and ends those that hit a stop token, EOS, max_tokens or the model
//      length;
//   5. feeds the text piece of each sampled token to the KV manager's
//      reasoning-step segmenter (MemShare sequences) and runs MemShare dedup
//      on the steps that finished, verified through the backend's block
//      distances, before the next step.
//
// A sequence is a list of tokens (prompt, then generated) of which the
// first num_computed have their KV in the cache. Prefill, decode and
// recompute after preemption are all "compute tokens [num_computed, end)":
// logits are taken only when a chunk reaches the end.
//
// Requests are checked on Add: an empty prompt, a token outside the
// vocabulary, a prompt longer than the server's limit or leaving no room to
// generate within the model length are INVALID_ARGUMENT naming the field;
// nothing is truncated.
//
// Sampling. On a backend that samples on the device
// (Backend::SamplesOnDevice(), options.sample_on_device), every sequence
// is sampled there: its chunk carries a DeviceSampling (its parameters, one
// draw of its seeded stream, its penalty lists, kept incrementally by its
// Sampler) and the token comes back in StepOutput::sampled_token_ids, so
// its logits reach the host only when it asks for top-n logprobs (then the
// raw row comes back beside the token, and the alternatives and the
// token's logprob are computed here from it); the Sampler records the
// token, so penalties and the stream go on as if it had sampled it. On
// other backends every sequence is sampled here from its logits row. Stop
// tokens, EOS and lengths are checked here either way. A
// sequence keeps its Sampler through preemption and draws from its own
// stream, so its draws depend neither on the rest of the batch nor on
// preemption. Greedy picks the same token on the device as here from the
// same logits; a seeded random reply is reproducible per backend, not
// across backends (the device follows its own kernel's rules,
// kernels/sampling.h, with the draw rounded to 24 bits).
//
// Stop strings live in the detokenized text, which the scheduler does not
// see: the engine calls Finish() when one matches.
//
// Pipelined steps (Options::pipeline_steps, on a backend whose
// SupportsPipelining() is true, e.g. the CUDA backend, alone or in a
// tensor-parallel group). Step() submits the step after the one in flight
// before it reads that one's results, so the device goes from step to step
// without waiting for the host's sampling, bookkeeping and next plan. It
// does so while nothing waiting would be admitted now (the queue is empty,
// or its head outranks no resident sequence and finds the batch full or the
// pool short, as under memory pressure; a sequence the step in flight ends
// frees its blocks for the step after) and every resident sequence samples
// on the device (its penalty lists, a step behind, count the fed token
// there: DeviceSampling::count_fed_token): each then gets one decode token
// whose id is the one the step in flight samples for it
// (SequenceChunk::fed_row), held in the KV manager as an uncommitted
// placeholder until that step's results set it (KvManager::SetToken,
// CommitStep's keep_last). Otherwise, and
// whenever the pool cannot take one more token each, the step in flight is
// finished first and the next one is scheduled as above. Each Step() still
// returns the tokens of one step. A sequence that ends while a step that
// computes its next token is in flight (a stop token seen one step late, a
// stop string, an abort or deadline) drops that token: it is never
// returned, and its blocks are freed at once (the backend's stream runs any
// later writer after the step in flight). The outputs are those of steps
// run one by one.
//
// Thread-compatible: one thread (the engine's scheduler thread) calls every
// method. The Backend and the KvManager are borrowed and must outlive the
// scheduler; nothing else may change the KvManager's sequences.
#ifndef MEMSHARE_ENGINE_SCHEDULER_H_
#define MEMSHARE_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/backend.h"
#include "engine/request.h"
#include "engine/sampler/sampler.h"
#include "engine/sampler/sampling_params.h"
#include "kvmanager/kv_manager.h"

namespace memshare::engine {

// One request as the scheduler sees it: already tokenized.
struct SequenceRequest {
  uint64_t seq_id = 0;  // unique among live sequences
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
  int32_t priority = 0;  // higher runs first; FCFS within a priority
  absl::Time deadline = absl::InfiniteFuture();
  std::string cache_salt;           // prefix-cache isolation between tenants
  kvmanager::DedupParams memshare;  // unset fields: the KV manager's policy
};

// What one sequence produced in a step, or how it ended.
struct SequenceOutput {
  uint64_t seq_id = 0;
  std::vector<TokenLogprob> tokens;  // sampled this step (token id; logprobs if asked)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  absl::Status status;  // non-OK: the sequence failed (deadline, backend error)
  Usage usage;          // set when finished
};

struct SchedulerStats {
  int32_t running = 0;         // resident in the KV cache
  int32_t waiting = 0;         // queued, or preempted and waiting for recompute
  int64_t waiting_tokens = 0;  // tokens of waiting sequences still to compute
  int64_t steps = 0;
  int64_t preemptions = 0;
  double reserve_ratio = 0;  // of conservative admission (Scheduler::Options)
  int64_t prompt_tokens_computed = 0;  // prefill and recompute tokens run
  int64_t generated_tokens = 0;
  int64_t device_sampled_tokens = 0;  // of generated_tokens: sampled by the backend
  int64_t prefix_cached_tokens = 0;   // prompt tokens served from the prefix cache
  int64_t aborted = 0;
  int64_t deadline_exceeded = 0;
  int64_t failed = 0;        // ended by a backend or KV error
  int64_t dedup_errors = 0;  // RunDedup failures (the steps stay unshared)
  // Of the last step:
  int32_t last_step_sequences = 0;
  int32_t last_step_tokens = 0;
  int32_t last_step_prefill_tokens = 0;
  int32_t last_step_decode_tokens = 0;
  // Wall time of the phases of the last step, in seconds: choosing the
  // batch and building the plan; copies and Forward; sampling and finish
  // checks; MemShare dedup (0 when no sequence uses it).
  double last_schedule_seconds = 0;
  double last_forward_seconds = 0;
  double last_sample_seconds = 0;
  double last_dedup_seconds = 0;
  // Steps submitted while the step before them ran (Options::pipeline_steps).
  int64_t pipelined_steps = 0;
};

class Scheduler {
 public:
  struct Options {
    // Most tokens computed in one step (prefill chunks plus decode tokens).
    int32_t max_num_batched_tokens = 2048;
    // Most sequences resident (running) at once.
    int32_t max_num_seqs = 64;
    // Longest sequence (prompt + generated); capped by what the pool holds.
    int32_t max_model_len = 4096;
    // Longest prompt accepted; 0 = max_model_len - 1.
    int32_t max_prompt_len = 0;
    // Token ids that end generation unless a request sets ignore_eos.
    std::vector<int32_t> eos_token_ids;
    // Bounds for the sampling parameters (vocab_size is taken from the backend).
    SamplingLimits sampling_limits;
    // The text one token stands for, fed to MemShare's reasoning-step
    // segmenter; unset: empty pieces (steps are then cut by length only).
    std::function<std::string(int32_t token_id)> token_piece;
    // Let a backend that samples on the device do so (see the file
    // comment). false: every token is sampled here from its logits row.
    bool sample_on_device = true;
    // Conservative admission under memory pressure (as SGLang's "new token
    // ratio"): a waiting sequence is admitted only if, after its tokens, the
    // pool keeps a reserve for the growth of the resident sequences,
    //   ratio × Σ min(tokens left before max_tokens, reserve_horizon_tokens)
    //         × (the sequence's physical share of its blocks) / block_size.
    // The ratio is 0 (admission as long as the tokens fit) until a resident
    // sequence has to be preempted for lack of blocks; each step that does
    // raises it by reserve_ratio_step (up to 1), every step lowers it by
    // reserve_ratio_decay. Without it, a pool that bounds the batch admits
    // sequences that preempt each other over and over, each recomputing
    // its tokens. A MemShare sequence reserves only its physical share
    // (blocks held ÷ logical blocks), so the memory it saves admits more
    // sequences. reserve_ratio_step = 0 (the default): no reserve. On the
    // tiny reasoner under a small pool (bench/NOTES-memshare-eval.md) 0.2
    // cut preemptions fourfold but also the batch, and tokens/s fell 10 %:
    // it pays where recomputing a preempted sequence is expensive (long
    // contexts, large models), not where the step is host-bound.
    double reserve_ratio_step = 0;
    double reserve_ratio_decay = 0.002;
    int32_t reserve_horizon_tokens = 4096;
    // Pipelined steps on a backend that runs them (Backend::
    // SupportsPipelining): while step N runs, step N + 1 is built and
    // submitted, its decode tokens fed on the device from step N's (see the
    // file comment). false: every step is submitted after the previous one's
    // results are read.
    bool pipeline_steps = true;
  };

  // `backend` and `kv` must agree on block size, layer groups and block count.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const Options& options, Backend* backend,
                                                           kvmanager::KvManager* kv);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();

  // Queues a sequence. INVALID_ARGUMENT naming the field for a bad request,
  // ALREADY_EXISTS for a live seq_id; nothing is queued then.
  absl::Status Add(SequenceRequest request);

  // The checks of Add that depend on the request alone (not on seq_id).
  // Reads only what is fixed at construction: safe from any thread.
  absl::Status Validate(const SequenceRequest& request) const;

  // Ends a live sequence now (finish_reason kAbort), releasing its blocks.
  // NOT_FOUND if it is not live.
  absl::StatusOr<SequenceOutput> Abort(uint64_t seq_id);

  // Ends a live sequence now with `reason` (the engine found a stop string).
  absl::StatusOr<SequenceOutput> Finish(uint64_t seq_id, FinishReason reason);

  // Runs one step (see the file comment) and returns what each sequence
  // produced, and every sequence that ended.
  std::vector<SequenceOutput> Step(absl::Time now);

  bool HasWork() const { return !running_.empty() || !waiting_.empty() || in_flight_.has_value(); }
  bool IsLive(uint64_t seq_id) const { return sequences_.contains(seq_id); }
  const SchedulerStats& stats() const { return stats_; }
  // KV pool figures and counters (any thread may call KvManager::Stats).
  kvmanager::KvStatsSnapshot kv_stats() const { return kv_->Stats(); }
  // The model length in force (options.max_model_len capped by the pool).
  int32_t max_model_len() const { return max_model_len_; }
  int32_t max_prompt_len() const { return max_prompt_len_; }
  int32_t vocab_size() const { return vocab_size_; }
  // Whether sequences are sampled on the device.
  bool samples_on_device() const { return device_sampling_; }

 private:
  struct Sequence;
  // A step launched and not yet completed: its plan and, per chunk, the
  // sequence it was built for (found again through Live(): it may have
  // ended since).
  struct Pending {
    struct Item {
      uint64_t id = 0;
      uint64_t arrival = 0;
      int32_t num_tokens = 0;
    };
    StepPlan plan;
    std::vector<Item> items;  // per plan chunk
    int32_t prefill_tokens = 0;
    int32_t decode_tokens = 0;
    bool submitted = false;  // through Backend::Submit (else Forward ran in Launch)
    absl::Status status;     // of building and launching it
  };
  // Priority order: higher priority first, then earlier arrival.
  using QueueKey = std::tuple<int32_t, uint64_t, uint64_t>;  // (-priority, arrival, seq_id)

  Scheduler(const Options& options, Backend* backend, kvmanager::KvManager* kv);

  QueueKey KeyOf(const Sequence& s) const;
  void Preempt(Sequence* s);
  // A preempted MemShare sequence just re-admitted: feeds the pieces of its
  // output to the KV manager's segmenter again (KvManager::SequenceSpec::
  // output_begin), so its steps are shared again once recomputed.
  void ResegmentOutput(Sequence* s);
  // Blocks conservative admission keeps for a resident sequence's growth
  // (Options::reserve_ratio_step).
  double ReserveBlocks(const Sequence& s) const;
  // Releases a resident sequence's blocks.
  void FreeBlocks(Sequence* s);
  // Removes a sequence (from whichever queue holds it), releases its blocks
  // and describes its end.
  SequenceOutput End(Sequence* s, FinishReason reason, absl::Status status);
  void UpdatePeaks(Sequence* s);
  // The sequence of an item while it is live and resident (not ended,
  // preempted, or a new request under the same id), else null.
  Sequence* Live(const Pending::Item& item) const;
  // Steps 2-3 of the file comment: the running and admitted sequences'
  // chunks. None when nothing is scheduled.
  std::optional<Pending> Schedule(std::vector<SequenceOutput>* outputs);
  // Runs the pending copy-on-write copies, then submits p (pipelining) or
  // runs it (Forward into step_output_).
  void Launch(Pending* p);
  // The step after p, launched before p's results are read, when the
  // pipeline may go on: p was submitted, nothing waiting would be admitted
  // now (see the file comment), every
  // resident sequence takes its next token from a row of p sampled on the
  // device, and the pool holds one more token each. Its
  // chunks feed those tokens (SequenceChunk::fed_row); their ids in the KV
  // manager are placeholders until Complete(p) sets them. None otherwise.
  std::optional<Pending> Continue(const Pending& p, std::vector<SequenceOutput>* outputs);
  // Waits for p's results (when submitted), commits its tokens (not
  // next's) and takes each live sequence's token, ending those that stop.
  void Complete(Pending& p, const Pending* next, std::vector<SequenceOutput>* outputs);
  void RefreshWaitingStats();
  // The chunk's DeviceSampling for this step: s's parameters and penalty
  // lists, and one draw of its stream unless it is greedy.
  DeviceSampling DeviceSamplingOf(Sequence* s);
  // INTERNAL if the backend's output does not have the shape the step
  // contract (step_plan.h) gives it.
  absl::Status CheckStepOutput(const StepOutput& result) const;
  // s's next token from output row `row` (-1: none came back): the one the
  // backend sampled for a chunk with `sampling` (recorded in s's Sampler),
  // else one sampled here from the row's logits.
  absl::StatusOr<TokenLogprob> TakeToken(Sequence* s, const SequenceChunk& chunk,
                                         const StepOutput& result, int32_t row);

  const Options options_;
  Backend* const backend_;
  kvmanager::KvManager* const kv_;
  const int32_t vocab_size_;
  const bool device_sampling_;
  int32_t max_model_len_ = 0;
  int32_t max_prompt_len_ = 0;
  absl::flat_hash_set<int32_t> eos_;

  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> sequences_;  // every live sequence
  std::set<QueueKey> waiting_;      // not resident in the KV cache
  std::vector<Sequence*> running_;  // resident, any order (sorted when scheduling)
  uint64_t next_arrival_ = 0;
  SamplerWorkspace workspace_;
  StepOutput step_output_;  // Forward's output, reused across steps
  const bool pipelining_;   // Options::pipeline_steps on a backend that pipelines
  std::optional<Pending> in_flight_;    // submitted, its results not read yet
  std::vector<uint64_t> continue_ids_;  // scratch of Continue and Complete
  // UpdatePeaks' count of a table's distinct blocks: block_stamps_[b] ==
  // stamp_ marks block b as seen in the table being counted (one entry per
  // block of a pool), with no allocation per sequence and step.
  std::vector<uint32_t> block_stamps_;
  uint32_t stamp_ = 0;
  SchedulerStats stats_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SCHEDULER_H_
