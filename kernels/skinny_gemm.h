// A bf16 GEMM for decode-shaped products (few token rows, large weights):
//   Y[m][n] = X[m][k] * W[n][k]^T (+ bias[n]),  m <= kSkinnyGemmMaxM,
// W in Hugging Face layout ([out_features][in_features]), fp32 accumulation,
// bf16 or fp32 Y; or, for a fused gate/up weight, Y = silu(X Wg^T) * (X Wu^T)
// in the epilogue (silu_mul). At these shapes the product is bound by reading W once;
// the kernel streams tiles of W and X into shared memory with the tensor copy
// engine (a ring of stages on mbarriers, one producer thread, four MMA
// warps) and splits k over the CTAs of a thread-block cluster, which sum
// their partial tiles through distributed shared memory in a fixed order
// (deterministic, no workspace), or, with the stream-K schedule, balances
// equal runs of k over one CTA per multiprocessor and sums cut tiles through
// a workspace (deterministic too), or, with the column split, gives each
// CTA every k of its own output features (no partial sums at all; the
// gate/up projection at 64 tokens). Launched with programmatic dependent
// launch it requests its first weights before the preceding kernel has
// finished.
//
// Plain C++ header; the kernels are in skinny_gemm.cu.
#ifndef MEMSHARE_KERNELS_SKINNY_GEMM_H_
#define MEMSHARE_KERNELS_SKINNY_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

inline constexpr int kSkinnyGemmMaxM = 64;

struct SkinnyGemmArgs {
  int m = 0;                // token rows, 1 .. kSkinnyGemmMaxM
  int n = 0;                // output features, a multiple of 8
  int k = 0;                // input features, a multiple of 8
  const void* x = nullptr;  // bf16 [m][ldx]
  int64_t ldx = 0;
  const void* w = nullptr;  // bf16 [n][ldw]
  int64_t ldw = 0;
  void* y = nullptr;  // bf16 or fp32 [m][ldy]
  int64_t ldy = 0;
  bool fp32_out = false;
  const void* bias = nullptr;  // bf16 [n] or null
  // SwiGLU in the epilogue: W's rows [0, n/2) are the gate projection and
  // [n/2, n) the up projection, and Y (n/2 columns, ldy >= n/2) is
  // silu(X Wg^T) * (X Wu^T), from the fp32 sums (n a multiple of 128: each
  // CTA's tile is 64 gate rows and their 64 up rows; bf16 output, no bias).
  bool silu_mul = false;
  // The RMSNorm between two products, split over their epilogues (decode
  // steps; kernels/norm.h is the unfused form). Residual mode (residual
  // set): Y = bf16(X W^T + residual) (residual bf16 [m][ldy], may be Y: the
  // residual stream updated in place), and for each 128-row tile t and
  // token i, sumsq_out[t * m + i] = the sum of squares of that tile's row of
  // Y as stored (bf16); bf16 output, no bias, no SwiGLU. Scale mode
  // (sumsq_in set): X is that un-normalized residual stream and W has the
  // norm's weight folded into its columns; each token's products are
  // multiplied by rsqrt(sum over p < sumsq_parts of sumsq_in[p * m + i] / k
  // + rms_eps) before the bias or the SwiGLU. The sums of parts are added
  // in a fixed order (the same bits every run).
  const void* residual = nullptr;
  float* sumsq_out = nullptr;
  const float* sumsq_in = nullptr;
  int sumsq_parts = 0;
  float rms_eps = 0.f;
  // Greedy candidates (fp32 output, no SwiGLU, not residual mode): for each
  // token i and 128-row tile t, the largest Y[i][row] of the tile's rows
  // with its row, packed as kernels/greedy_candidate.h packs a token, into
  // argmax_out[i * SkinnyGemmTiles(n) + t]; the largest of a token's
  // candidates gives its greedy token (lowest row on ties). With store_y (a
  // device flag read when the kernel runs) Y is stored only where
  // *store_y != 0: one captured graph serves the steps that need Y and the
  // steps that need only the candidates.
  uint64_t* argmax_out = nullptr;
  const int32_t* store_y = nullptr;
  // How, not what: the consumer warps issue wgmma (one warpgroup reading
  // both tiles straight from shared memory) instead of ldmatrix + mma.sync.
  // The same products up to the order of fp32 additions inside a k step.
  bool wgmma = false;
  // Programmatic dependent launch: every thread signals that the next
  // kernel may launch right after the CTA's set-up, instead of where its
  // part of the work has been issued, so that the next kernel's CTAs take
  // the multiprocessors this grid's early finishers leave and stream their
  // first weights there. Only the timing changes: the next kernel still
  // waits for this grid to finish before it reads what this one writes
  // (b64 decode step with it on gate/up and down: -10 to -15 us, H100,
  // bench/NOTES-cuda-backend.md session 11).
  bool dependents_at_start = false;
  // The schedule. 0: the k split over thread-block clusters that
  // LaunchSkinnyGemm's `splits` gives; a tile of 128 W rows per cluster, so
  // where the tiles do not divide the multiprocessors the last wave runs on
  // few of them (the gate/up projection's 296 tiles on 132). > 0: stream-K
  // over this many CTAs (at most the multiprocessor count: they must all be
  // resident at once, one per multiprocessor; wgmma consumers only): each
  // takes an equal run of the (tile, 64-k box) units in tile-major order; a
  // tile cut between CTAs is finished by the one holding its first box,
  // which adds the others' partial tiles from `workspace` in CTA order (the
  // same bits every run).
  int stream_k_ctas = 0;
  // > 0: the column split over this many CTAs (wgmma consumers only; bf16
  // output, no bias, residual mode or greedy candidates): each CTA reads
  // every k of a window of up to 288 W rows (with SwiGLU 144 gate rows and
  // their up rows) and stores the run of output features it owns, so that
  // no CTA adds another's partial sums. SkinnyGemmWideCtas() gives the count
  // for a GPU. The R1-Distill-Qwen-7B gate/up projection at 64 tokens is
  // 132 windows of 288 rows; bench/NOTES-cuda-backend.md, session 12.
  int wide_ctas = 0;
  // Stream-K only: device memory of SkinnyGemmWorkspaceBytes(stream_k_ctas)
  // bytes, 16-byte aligned, zeroed before its first use; each launch leaves
  // it ready for the next. Launches that share it must be ordered on one
  // stream.
  void* workspace = nullptr;
};

// The 128-row tiles of n output features: a residual-mode product writes
// this many sums of squares a token (what a scale-mode product of k = n
// takes as sumsq_parts), a product with argmax_out this many candidates.
inline int SkinnyGemmTiles(int n) { return (n + 127) / 128; }

// Bytes of the stream-K workspace for `stream_k_ctas` CTAs (32 KB each).
size_t SkinnyGemmWorkspaceBytes(int stream_k_ctas);

// Whether the kernel takes these arguments: shape limits above, 16-byte
// aligned pointers and leading dimensions (multiples of 8 elements).
bool SkinnyGemmSupports(const SkinnyGemmArgs& args);

// The k split (cluster size, 1..8) that keeps every CTA of the grid resident
// at once on `num_sms` multiprocessors; what LaunchSkinnyGemm uses when
// given 0.
int SkinnyGemmSplits(const SkinnyGemmArgs& args, int num_sms);

// The column split's CTA count (SkinnyGemmArgs::wide_ctas) for these
// arguments on `num_sms` multiprocessors: at most num_sms, as few as hold
// the output features in windows of the size that num_sms needs; 0 where
// the column split does not take them (its epilogue, or a window wider
// than 2 x 144 rows, or wider than the product).
int SkinnyGemmWideCtas(const SkinnyGemmArgs& args, int num_sms);

// Enqueues the product on `stream`. `splits` 0 picks SkinnyGemmSplits(); at
// most ceil(k / 64);
// `pdl` launches with programmatic stream serialization (the kernel waits
// for its predecessor before it reads X or writes Y; it reads W before).
// INVALID_ARGUMENT when !SkinnyGemmSupports(args), splits is outside 0..8,
// or, with stream-K, splits is not 0, wgmma is off, stream_k_ctas exceeds
// the multiprocessors or the workspace is missing or misaligned, or, with
// the column split, splits or stream_k_ctas is not 0, wgmma is off or the
// split does not take the arguments at wide_ctas CTAs.
absl::Status LaunchSkinnyGemm(const SkinnyGemmArgs& args, int splits, bool pdl,
                              cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_SKINNY_GEMM_H_
