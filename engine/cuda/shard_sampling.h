// Sampling on vocabulary shards (tensor parallelism, issue 7): which steps
// may skip the all-gather of the logits, and each shard's share of the
// penalty tokens.
//
// A greedy row's token is the argmax of its penalized logits, lowest id on
// ties (kernels/sampling.h). Each penalty acts on one token's logit, so a
// rank that holds columns [begin, end) of the LM head can apply the
// penalties of its tokens and take its shard's argmax with the same
// sampler (kernels::LaunchSample over the shard): the same values, the
// same comparisons. The best of the shards' picks, by greedy_candidate.h's
// order (an all-reduce of uint64 maxima), is then exactly the token the
// sampler picks from the all-gathered row. Rows that sample with a
// temperature, or return logprobs (a log-sum-exp over the whole row) or
// logits, need the whole row: such a step all-gathers as before.
//
// Thread-safe (functions of their arguments).
#ifndef MEMSHARE_ENGINE_CUDA_SHARD_SAMPLING_H_
#define MEMSHARE_ENGINE_CUDA_SHARD_SAMPLING_H_

#include <cstdint>

#include "absl/types/span.h"
#include "engine/step_plan.h"

namespace memshare::engine::cuda {

// True when `rows` (indices into plan.sequences) is not empty and every
// row samples on the device greedily (temperature <= 0) without asking for
// its logprob or logits.
bool GreedyOnShards(const StepPlan& plan, absl::Span<const int32_t> rows);

// The number of `d`'s penalty tokens inside the shard [begin, end).
int64_t CountShardPenalties(const DeviceSampling& d, int64_t begin, int64_t end);

// Writes `d`'s penalty tokens inside the shard [begin, end), in their
// order, as shard indices (token - begin) to ids and their counts to
// counts (room for CountShardPenalties); returns how many.
int64_t CopyShardPenalties(const DeviceSampling& d, int64_t begin, int64_t end, int32_t* ids,
                           int32_t* counts);

}  // namespace memshare::engine::cuda

#endif  // MEMSHARE_ENGINE_CUDA_SHARD_SAMPLING_H_
