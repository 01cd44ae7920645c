// Embedding gather, vocab-parallel: each rank holds rows
// [vocab_begin, vocab_begin + rows) of the embedding table; a token outside
// them gets a zero row, so the sum over ranks (an all-reduce) is the
// embedding.
#ifndef MEMSHARE_KERNELS_EMBEDDING_H_
#define MEMSHARE_KERNELS_EMBEDDING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// table: bf16 [rows][hidden]; ids: int32 [n], device (-1 = padding, a zero
// row; with feed, -2 - r = the token feed[r], so a step can embed the
// tokens the previous step sampled on the device without a trip through
// the host; without feed every negative id is padding); out: bf16
// [n][hidden]. hidden must be a multiple of 8 and
// table and out 16-byte aligned. Enqueues on `stream`. With sumsq (fp32
// [ceil(hidden / 128)][n]): the sum of squares of each 128-column part of
// each row gathered, as a residual-mode skinny GEMM writes them
// (kernels/skinny_gemm.h), for the first layer's norm in the QKV product.
absl::Status LaunchEmbeddingGather(const void* table, int64_t vocab_begin, int64_t rows, int hidden,
                                   const int32_t* ids, int n, void* out, cudaStream_t stream,
                                   float* sumsq = nullptr, const int32_t* feed = nullptr);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_EMBEDDING_H_
