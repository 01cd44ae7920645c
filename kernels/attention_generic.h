// Paged attention for the shapes the tensor-core kernels of attention.h do
// not compile (head_dim other than 64 and 128, block sizes other than 16 and 8,
// more than 16 query heads per KV head): the tiny test checkpoints and
// unusual models. Same pool layout, same RoPE-on-read contract, same
// arguments as LaunchPagedPrefillAttention; decode is the case q_len = 1.
// MemShare shifted views (block_tables_hi / block_shifts, attention.h) are
// read as the tensor-core kernels read them.
//
// One CTA per (query head, query token, sequence), fp32 throughout (scores,
// softmax, accumulation; sin and cos by sincosf of the float32 angle
// position * inv_freq, as the CPU backend computes them). Correct for any
// size, fast for none: each key is rotated once per query head.
#ifndef MEMSHARE_KERNELS_ATTENTION_GENERIC_H_
#define MEMSHARE_KERNELS_ATTENTION_GENERIC_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/attention.h"

namespace memshare::kernels {

// Whether LaunchPagedDecodeAttention / LaunchPagedPrefillAttention take
// this shape (else use LaunchPagedAttentionGeneric).
bool FastAttentionSupports(const KvBlockShape& shape, int num_q_heads);

// cu_q_lens: int32 [num_seqs + 1], device; sequence s has query rows
// [cu_q_lens[s], cu_q_lens[s + 1]) at positions context_len - q_len ..
// context_len - 1. A sequence with context_len <= 0 is padding: its rows
// (at most one) are written as zeros. max_q_len: host value, sizes the grid.
// Supported: even head_dim <= 256, any block_size >= 1, num_q_heads a
// multiple of kv_heads. Enqueues on `stream`. INVALID_ARGUMENT also for
// only one of block_tables_hi / block_shifts set.
absl::Status LaunchPagedAttentionGeneric(const PagedAttentionArgs& args, int num_seqs,
                                         const int32_t* cu_q_lens, int max_q_len,
                                         cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_ATTENTION_GENERIC_H_
