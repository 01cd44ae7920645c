// Paged attention over one layer group's KV pool (DESIGN.md §4):
//   pool bf16 [num_blocks][layers][2 (K, V)][kv_heads][block_size][head_dim],
// K stored before RoPE. Both kernels rotate Q at its position and each K at
// the logical position of its slot while they read it (neox rotate-half,
// inverse frequencies from kernels/rope.h), so a physical block may appear
// in several block-table entries, of one or of several sequences, at any
// positions. GQA: query head h reads KV head h / (num_q_heads / kv_heads);
// all query heads of one KV head are computed together, so each K and V
// byte is read once per sequence.
//
// Decode: one query token per sequence, at position context_len - 1. The
// sequence is split into chunks of blocks (flash-decoding) when there are
// too few (sequence, KV head) pairs to fill the GPU; a second kernel merges
// the chunks.
// Prefill: q_len query tokens per sequence at positions
// context_len - q_len .. context_len - 1 (a chunk after a cached prefix, or
// the whole prompt), causal, flash-style.
//
// MemShare shifted views (kvmanager/block_table.h, engine/step_plan.h): a
// logical block may read a window that starts `shift` slots into its
// physical block and runs on into a second one (block_tables_hi below).
// Keys keep the logical positions of their slots, so a view attends exactly
// like a copy of the window would. Without views (null pointers) the kernels
// run the code they ran before views existed.
//
// Both expect the K and V of the query tokens to be in the pool already
// (kernels/qkv.h LaunchWriteKvCache), except that decode can take the
// step's K and V from the QKV output and write them itself (new_slots
// below). Supported: head_dim 64 and 128, block_size 16 or 8 (MemShare
// shares at a finer grain with 8; bench/RESULTS.md), query heads per KV head
// 1..16. bf16 throughout, fp32 softmax and accumulation.
#ifndef MEMSHARE_KERNELS_ATTENTION_H_
#define MEMSHARE_KERNELS_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/kv_block_shape.h"

namespace memshare::kernels {

struct PagedAttentionArgs {
  // bf16 [num_tokens][q_row_stride]; query head h at elements
  // [h * head_dim, (h + 1) * head_dim) of its row (the QKV GEMM output can be
  // read in place). Decode: one row per sequence.
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  int num_q_heads = 0;
  // The layer group's pool and the layer's index inside the group.
  const void* kv_pool = nullptr;
  KvBlockShape shape;
  int layer = 0;
  // int32 [num_seqs][block_table_stride]: physical block of each logical
  // block of this layer group; entries past a sequence's last block are
  // never read.
  const int32_t* block_tables = nullptr;
  int block_table_stride = 0;
  // Shifted views, both null (no views in this launch) or both set: int32
  // [num_seqs][block_table_stride] like block_tables. Logical block b of
  // sequence s with sh = block_shifts[s][b] > 0 is a view: its slot j reads
  // block_tables[s][b] slot j + sh when j + sh < block_size, else
  // block_tables_hi[s][b] slot j + sh - block_size. Entries with shift 0
  // never read block_tables_hi (callers fill it with the entry's own block).
  // Shifts outside [0, block_size) are the caller's error (validated on the
  // host): the kernels stay inside the two blocks but the result is wrong.
  const int32_t* block_tables_hi = nullptr;
  const int32_t* block_shifts = nullptr;
  // int32 [num_seqs]: keys per sequence, the query tokens included. A
  // sequence with context_len <= 0 is padding: its output rows are zeros.
  const int32_t* context_lens = nullptr;
  const float* rope_inv_freq = nullptr;  // fp32 [head_dim / 2], device
  float softmax_scale = 0.f;             // usually 1 / sqrt(head_dim)
  // bf16 [num_tokens][num_q_heads][head_dim].
  void* out = nullptr;
  // Decode only: the write of the step's K and V fused into the attention.
  // When new_slots (int32 [num_seqs], device) is set, row s of new_k and
  // new_v (bf16, row stride q_row_stride, KV head h at h * head_dim; usually
  // the K and V columns of the QKV output) holds sequence s's key (before
  // RoPE) and value at position context_len - 1. The kernel reads them from
  // there, not from the pool, and writes them into slot new_slots[s] of this
  // layer (what LaunchWriteKvCache does; a slot < 0 is skipped), so kv_pool
  // must be writable. The contract that makes it fast: that slot is in the
  // last block of the sequence's table, which is no view, and nothing the
  // kernels before this one in the stream do writes any other block of the
  // pool: those are read while the previous kernel still runs
  // (programmatic dependent launch). new_k, new_v: 16-byte aligned, with
  // q_row_stride a multiple of 8.
  const int32_t* new_slots = nullptr;
  const void* new_k = nullptr;
  const void* new_v = nullptr;
};

// How a decode launch splits each sequence: blocks_per_split consecutive
// tiles of 16 keys (blocks at block size 16, pairs of blocks at 8) per CTA;
// num_splits CTAs per (sequence, KV head), of which those past a shorter
// sequence's end exit at once; the last split also takes every tile past
// num_splits * blocks_per_split. Fixed values keep a CUDA graph valid across
// steps.
struct DecodeSplit {
  int num_splits = 1;
  int blocks_per_split = 1;
};

// A split for a step whose longest sequence has max_context_len keys, on a
// GPU of num_sms multiprocessors: one chunk per (sequence, KV head) when
// that fills the GPU, else as many chunks as fit in one wave of CTAs, never
// below 16 tiles each. The same for every block size.
DecodeSplit ChooseDecodeSplit(int num_seqs, int kv_heads, int max_context_len, int num_sms);

// Device workspace of a decode launch (0 when num_splits == 1).
size_t DecodeAttentionWorkspaceBytes(int num_seqs, int num_q_heads, int head_dim,
                                     const DecodeSplit& split);

// q, out: one row per sequence. workspace: DecodeAttentionWorkspaceBytes.
// Enqueues on `stream`; no synchronization. INVALID_ARGUMENT for an
// unsupported shape, a split that is not positive, or only one of
// block_tables_hi / block_shifts set.
absl::Status LaunchPagedDecodeAttention(const PagedAttentionArgs& args, int num_seqs,
                                        const DecodeSplit& split, void* workspace,
                                        cudaStream_t stream);

// cu_q_lens: int32 [num_seqs + 1], device: the query rows of sequence s are
// [cu_q_lens[s], cu_q_lens[s + 1]) of q and out; q_len = their count, with
// 0 <= q_len <= context_len (q_len 0: nothing is computed for it).
// max_q_len: the largest q_len (host value; sizes the grid).
absl::Status LaunchPagedPrefillAttention(const PagedAttentionArgs& args, int num_seqs,
                                         const int32_t* cu_q_lens, int max_q_len,
                                         cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_ATTENTION_H_
