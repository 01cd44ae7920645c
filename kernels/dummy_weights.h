// Random weights on the GPU for `--load-format dummy`: the same values as
// engine/model ModelWeights::Dummy (a normal draw that is a pure function of
// (seed, tensor name, element index in the whole tensor)), rounded to bf16,
// drawn where they are stored instead of on the host (a 7B model has 7.6 G
// elements: minutes on one core, a fraction of a second here).
#ifndef MEMSHARE_KERNELS_DUMMY_WEIGHTS_H_
#define MEMSHARE_KERNELS_DUMMY_WEIGHTS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// out[j] = bf16(std * Normal(stream, full(j))) for j < count, where
//   full(j) = base + (j / width) * full_row + j % width
// maps a local element to its index in the whole tensor (width = count and
// full_row = 0 for a contiguous range; width = columns of the slice and
// full_row = columns of the tensor for a column slice), and
//   Normal(s, i) = sqrt(-2 ln u1) cos(2 pi u2),
//   u1 = ((SplitMix64(s ^ SplitMix64(2i)) >> 11) + 1) 2^-53,
//   u2 = (SplitMix64(s ^ SplitMix64(2i + 1)) >> 11) 2^-53,
// in double, rounded to float, times std in float, rounded to bf16.
// out: bf16 [count], device. Enqueues on `stream`.
absl::Status LaunchDummyNormalBf16(uint64_t stream_key, float std, int64_t count, int64_t base,
                                   int64_t width, int64_t full_row, void* out, cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_DUMMY_WEIGHTS_H_
