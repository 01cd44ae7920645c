// Which all-reduce a tensor-parallel group's device collectives use
// (issue 7), and the shape of the one-shot exchange buffers that
// one_shot_all_reduce.h's kernels use (shared by the host and the kernels:
// plain C++, no CUDA).
//
// One-shot all-reduce (2 to kMaxRanks ranks on one host, peer access over
// NVLink): each rank has one exchange buffer that every other rank maps
// through CUDA IPC:
//   [kSignalBytes]  uint32 flag [kMaxRanks][kSlots]: flag [s][b] is
//                   written by rank s only
//   [2][kSlots][world][kSlotBytes]  staging, double-buffered by the slot's
//                   parity; [..][b][s] holds rank s's piece of slot b
// Block b of a launch uses slot b: it copies its piece of this rank's data
// into staging [b][rank] of every peer's buffer (push; pull: of its own),
// raises flag [rank][b] in every peer's buffer to the slot's next count (a
// release at system scope), waits until flag [s][b] of its own buffer
// reaches the same count for every peer s (their pieces are there), and
// sums the world's pieces in rank order (read from its own buffer; pull:
// from each peer's, over NVLink), so every rank gets the same bits.
// The counts live in device memory, so CUDA graphs replay them. Two
// parities: a slot is written again only after every peer passed the next
// use of the same slot, hence finished reading the previous one.
//
// Lamport variant (the default for bf16 sums in groups of two ranks;
// MEMSHARE_TP_ONESHOT=push takes the flags instead): a second
// staging area of the same shape, every bf16 of it 0xffff (a NaN) while
// empty. Senders replace 0xffff in their data by 0x7fff (another NaN:
// sums keep their value) and push it; receivers poll their own staging
// until no lane of a vector is 0xffff, then write 0xffff back for the use
// after next. No flags and no system-scope release: one NVLink trip
// instead of the data's, the fence's and the flag's. The same two
// parities; a peer writes a vector again only after it received this
// rank's next use, which this rank sends after it cleared the vector.
//  [kSignalBytes | staging (flags) | staging (lamport)]
//
// NCCL stays for what the one-shot does not take: world sizes outside
// 2 .. kMaxRanks, ranks without a host channel (other hosts) or peer
// access, messages over kMaxBytes, counts not a multiple of 8, unaligned
// data; and wherever the mode says so (MEMSHARE_TP_ALLREDUCE=nccl).
#ifndef MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_PATH_H_
#define MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_PATH_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace memshare::engine {

namespace one_shot {
inline constexpr int kMaxRanks = 8;
inline constexpr int kSlots = 256;
inline constexpr size_t kSlotBytes = 16384;
inline constexpr size_t kSignalBytes = size_t{kMaxRanks} * kSlots * 4;
// A plain all-reduce gives each block (slot) this many bytes.
inline constexpr size_t kChunkBytes = 8192;
inline constexpr int kChunkThreads = static_cast<int>(kChunkBytes / 16);  // one uint4 each
// Largest plain all-reduce taken (bytes).
inline constexpr size_t kMaxBytes = kSlots * kChunkBytes;  // 2 MiB
// Bytes of one staging area of a group of `world` ranks.
constexpr size_t StagingBytes(int world) {
  return size_t{2} * kSlots * static_cast<size_t>(world) * kSlotBytes;
}
// Bytes of one rank's exchange buffer in a group of `world` ranks.
constexpr size_t BufferBytes(int world) { return kSignalBytes + 2 * StagingBytes(world); }
// Whether a group of `world` ranks can run one-shot (given the buffers).
constexpr bool WorldSupported(int world) { return world >= 2 && world <= kMaxRanks; }
// Largest all-reduce of uint64 maxima (greedy candidates) taken: one slot
// of kChunkBytes per block, as the bf16 sum.
inline constexpr size_t kMaxU64Count = kMaxBytes / 8;
}  // namespace one_shot

enum class AllReduceMode {
  kNccl,     // NCCL for every all-reduce
  kOneShot,  // the one-shot kernel where it applies; the norm after it separate
  kFused,    // kOneShot, and the residual add + RMSNorm in the same kernel
};

// "nccl", "oneshot", "fused" (also in capitals); empty: `fallback`. False
// for anything else.
bool ParseAllReduceMode(absl::string_view text, AllReduceMode fallback, AllReduceMode* mode);
const char* AllReduceModeName(AllReduceMode mode);

// True when a bf16 all-reduce of `count` elements at `data` runs one-shot:
// the exchange buffers are up (`ready`: 2 .. kMaxRanks ranks, one host,
// peer access, every rank agreed) and the mode allows it, and the message fits.
bool UseOneShotAllReduce(bool ready, AllReduceMode mode, int64_t count, uintptr_t data);

// True when the all-reduce of x [rows][hidden] bf16 and the residual add +
// RMSNorm after it run as one kernel: one block per row (rows <= kSlots),
// a row in one slot, hidden a multiple of 8 up to 16384 (kernels/norm.h),
// every pointer 16-byte aligned.
bool UseFusedAddRmsNorm(bool ready, AllReduceMode mode, int rows, int hidden, uintptr_t x,
                        uintptr_t residual, uintptr_t weight, uintptr_t out);

// True when the element-wise maximum of `count` uint64 at `data` over the
// ranks (the greedy candidates of sampling over vocabulary shards) runs
// one-shot: ready, any mode but kNccl, 1 .. kMaxU64Count values, 8-byte
// aligned.
bool UseOneShotMaxU64(bool ready, AllReduceMode mode, int64_t count, uintptr_t data);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_PATH_H_
