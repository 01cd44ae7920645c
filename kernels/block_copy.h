// Whole-block copies inside one layer group's pool: copy-on-write of a
// shared block that must be written (engine::Backend::CopyBlocks); and a
// plain copy by a kernel.
#ifndef MEMSHARE_KERNELS_BLOCK_COPY_H_
#define MEMSHARE_KERNELS_BLOCK_COPY_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// pool: [num_blocks][block_bytes], 16-byte aligned; block_bytes a multiple
// of 16. pairs: int32 [num_pairs][2], device: (source, destination) block
// ids; a pair with a negative id is padding. Destinations must be distinct
// and no destination may be a source of the same launch.
absl::Status LaunchCopyBlocks(void* pool, int64_t block_bytes, const int32_t* pairs,
                              int num_pairs, cudaStream_t stream);

// dst[0 .. bytes) = src[0 .. bytes) by a kernel: src may be pinned host
// memory, which the device reads through unified addressing, so that a
// small upload stays on the compute engine (no copy engine to wait for).
// bytes a multiple of 16, both 16-byte aligned.
absl::Status LaunchCopy16(const void* src, void* dst, size_t bytes, cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_BLOCK_COPY_H_
