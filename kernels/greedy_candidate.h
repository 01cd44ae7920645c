// A row's greedy candidate over part of the vocabulary (a tensor-parallel
// rank's shard, or an LM-head GEMM tile: kernels/skinny_gemm.h), packed into
// a uint64 so that the maximum over the parts is the row's greedy token: the
// logit's key in kernels/sampling.cu's order
// (OrderedLogitKey) in the high half, the bitwise complement of the token
// id in the low half. The larger key wins; of equal keys the lower token id
// wins, kernels/sampling.h's tie rule (argmax, lowest id on ties). 0 is
// below every real candidate (key 0 is NaN's, and ~token > 0 for any
// token < 2^32 - 1): an empty part's candidate.
//
// Plain C++ for the host, and __host__ __device__ under nvcc (included by
// kernels and by engine/cuda/shard_candidates.cu); no dependencies.
#ifndef MEMSHARE_KERNELS_GREEDY_CANDIDATE_H_
#define MEMSHARE_KERNELS_GREEDY_CANDIDATE_H_

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define MEMSHARE_HOST_DEVICE __host__ __device__
#else
#define MEMSHARE_HOST_DEVICE
#endif

namespace memshare::kernels {

// Monotone map of floats to unsigned keys, NaN lowest (below -inf), -0
// below +0: kernels/sampling.cu's OrderedKey, bit for bit.
MEMSHARE_HOST_DEVICE inline uint32_t OrderedLogitKey(float x) {
  if (x != x) return 0u;
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// `token` (>= 0) with logit `logit`, as a candidate.
MEMSHARE_HOST_DEVICE inline uint64_t PackGreedyCandidate(float logit, int32_t token) {
  return (static_cast<uint64_t>(OrderedLogitKey(logit)) << 32) |
         static_cast<uint64_t>(~static_cast<uint32_t>(token));
}

// The token of a candidate (negative for 0, the empty candidate).
MEMSHARE_HOST_DEVICE inline int32_t GreedyCandidateToken(uint64_t candidate) {
  return static_cast<int32_t>(~static_cast<uint32_t>(candidate & 0xffffffffu));
}

}  // namespace memshare::kernels

#undef MEMSHARE_HOST_DEVICE

#endif  // MEMSHARE_KERNELS_GREEDY_CANDIDATE_H_
