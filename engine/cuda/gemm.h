// bf16 GEMMs for the CUDA backend: the linear layers
//   Y[m][n] = X[m][k] * W[n][k]^T (+ bias[n])
// with W in Hugging Face layout ([out_features][in_features], fused QKV and
// gate/up weights concatenated along n), fp32 accumulation, bf16 or fp32 Y.
// One plan per shape (layouts, operation, algorithm) is built on first use
// from cuBLASLt's heuristic and cached; Tune() times the heuristic's
// candidates and, for decode shapes (m <= 64), our skinny kernel
// (kernels/skinny_gemm.h) on the real buffers and keeps the fastest. It is
// meant for start-up (it synchronizes the stream), before CUDA graphs are
// captured.
//
// Thread-compatible: one scheduler thread drives a backend. Uses the device
// current at Create(); the workspace is shared by every call, so calls must
// be ordered on one stream (or streams ordered with each other).
#ifndef MEMSHARE_ENGINE_CUDA_GEMM_H_
#define MEMSHARE_ENGINE_CUDA_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/skinny_gemm.h"

namespace memshare::engine::cuda {

enum class GemmOut { kBf16, kFp32 };

// When decode shapes (m <= 64) run on kernels/skinny_gemm instead of cuBLASLt.
enum class SkinnyGemmMode {
  kOff,
  kWhenFaster,  // where Tune() times it faster
  kAlways,      // every shape it takes, tuned or not (tests)
};

struct GemmArgs {
  int m = 0;                // rows of X and Y (tokens)
  int n = 0;                // rows of W, columns of Y (output features)
  int k = 0;                // columns of X and W (input features)
  const void* x = nullptr;  // bf16 [m][ldx]
  int64_t ldx = 0;
  const void* w = nullptr;  // bf16 [n][ldw]
  int64_t ldw = 0;
  void* y = nullptr;  // [m][ldy] of `out`
  int64_t ldy = 0;
  GemmOut out = GemmOut::kBf16;
  const void* bias = nullptr;  // bf16 [n] or null; bf16 output only
  // Epilogues of the skinny kernel (kernels::SkinnyGemmArgs has the
  // meaning): the RMSNorm's residual mode (residual, sumsq_out) or scale
  // mode (sumsq_in, sumsq_parts, rms_eps), and the greedy candidates
  // (argmax_out, store_y). Matmul and MatmulSiluMul refuse them unless
  // RunsSkinny(args).
  const void* residual = nullptr;
  float* sumsq_out = nullptr;
  const float* sumsq_in = nullptr;
  int sumsq_parts = 0;
  float rms_eps = 0.f;
  uint64_t* argmax_out = nullptr;
  const int32_t* store_y = nullptr;
  // The skinny kernel lets the next kernel launch at its start
  // (kernels::SkinnyGemmArgs::dependents_at_start); ignored by cuBLASLt.
  bool early_dependents = false;
};

// The same product as kernels/skinny_gemm takes it.
kernels::SkinnyGemmArgs ToSkinnyGemmArgs(const GemmArgs& args);

class CublasLtGemm {
 public:
  struct Options {
    // Device workspace shared by every call (cuBLASLt's split-K and
    // stream-K algorithms use it; 32 MiB is NVIDIA's advice for Hopper).
    size_t workspace_bytes = size_t{32} << 20;
    // Candidates asked of the heuristic, and timed by Tune().
    int max_algorithms = 32;
    // Which decode shapes run on kernels/skinny_gemm (SkinnyGemmMode).
    SkinnyGemmMode skinny = SkinnyGemmMode::kWhenFaster;
    // Launch the skinny kernel with programmatic dependent launch, so that
    // it streams its first weights while the preceding kernel finishes.
    bool pdl = true;
    // Let Tune() try the skinny kernel's stream-K schedule, whose grid must
    // be resident all at once, one CTA per multiprocessor. Off as well when
    // CUDA_MPS_ACTIVE_THREAD_PERCENTAGE gives this process less than the
    // whole GPU (an MPS share): the grid could not be resident and its wait
    // would trap.
    bool stream_k = true;
    // Let Tune() try the skinny kernel's column split (kernels::
    // SkinnyGemmArgs::wide_ctas). It needs no workspace, and its CTAs never
    // wait for one another, so unlike stream-K it runs under an MPS share.
    bool wide = true;
    // Tune() keeps the skinny kernel when it times at most (1 + this) x the
    // fastest cuBLASLt candidate: in a decode step it overlaps its
    // neighbours through programmatic dependent launch, which cuBLASLt's
    // kernels do not and the isolated timing does not see.
    double skinny_preference = 0.0;
  };

  static absl::StatusOr<std::unique_ptr<CublasLtGemm>> Create(const Options& options);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // Enqueues Y = X W^T (+ bias) on `stream`. INVALID_ARGUMENT for
  // non-positive sizes, leading dimensions below the row length, or a bias
  // with fp32 output; INTERNAL when cuBLASLt fails or finds no algorithm.
  absl::Status Matmul(const GemmArgs& args, cudaStream_t stream);

  // The SwiGLU of a fused gate/up weight (W's rows [0, n/2) the gate and
  // [n/2, n) the up projection): act (bf16 [m][n/2]) = silu(X Wg^T) *
  // (X Wu^T). One kernel when the plan for `args` runs the skinny kernel
  // and that takes the SwiGLU epilogue (FusesSiluMul); else the product into
  // args.y, then kernels::LaunchSiluAndMul. args as for Matmul, with bf16
  // output, no bias and ldy == n (args.y is the product's scratch).
  absl::Status MatmulSiluMul(const GemmArgs& args, void* act, cudaStream_t stream);

  // Whether Matmul(args) runs the skinny kernel (the plan for args' shape,
  // tuned or not, is the skinny kernel and it takes args, epilogues
  // included).
  bool RunsSkinny(const GemmArgs& args) const;

  // Whether MatmulSiluMul(args, act) runs as one kernel: the plan for args
  // (tuned or not) runs the skinny kernel, which takes the shape with the
  // SwiGLU epilogue (n a multiple of 128) and act.
  bool FusesSiluMul(const GemmArgs& args, const void* act) const;

  // Times each heuristic candidate and the skinny kernel (`reps`
  // back-to-back runs in a CUDA graph, best of 3 replays; the skinny kernel
  // without programmatic dependent launch, so each run's own time) on args' buffers,
  // which it overwrites, and keeps the fastest for this shape. Run r reads
  // its weights from rotate_w[r % size] when given (same shape and leading
  // dimension as args.w), so that, as in a model's forward pass, they come
  // from DRAM and not from L2. Synchronizes `stream`; runs on a private
  // stream; not to be called while `stream` is being captured.
  // `skinny_credit_ms` is taken off the skinny kernel's time before the
  // comparison: what the caller saves by running it (a kernel that its
  // epilogue replaces).
  absl::Status Tune(const GemmArgs& args, cudaStream_t stream, int reps = 10,
                    const std::vector<const void*>& rotate_w = {}, double skinny_credit_ms = 0.0);

  // Whether Tune() tries the skinny kernel's stream-K schedule
  // (Options::stream_k, no MPS share, a known multiprocessor count).
  bool stream_k_enabled() const { return skinny_workspace_ != nullptr; }

  // Plans built so far (one per distinct shape, layout and alignment).
  size_t num_plans() const { return plans_.size(); }

  // What the plan for `args` runs: "cublaslt", "skinny/<splits>",
  // "skinny-wgmma/<splits>", "skinny-wgmma/stream-k<CTAs>" or
  // "skinny-wgmma/wide<CTAs>"; empty when there is no plan yet.
  std::string Choice(const GemmArgs& args) const;

 private:
  struct Plan;
  // How the skinny kernel runs a product.
  struct SkinnySchedule {
    enum Kind { kNone, kCluster, kStreamK, kWide };
    Kind kind = kNone;  // kNone: cuBLASLt
    int splits = 0;     // kCluster: the k split (0: SkinnyGemmSplits)
    bool wgmma = false;
  };
  // m, n, k, ldx, ldw, ldy, out, bias, alignment class of the pointers.
  using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int, bool, int>;

  CublasLtGemm(void* handle, void* workspace, void* skinny_workspace, int num_sms,
               const Options& options);
  static absl::Status CheckArgs(const GemmArgs& args);
  static Key KeyOf(const GemmArgs& args);
  absl::StatusOr<Plan*> GetPlan(const GemmArgs& args);
  // Whether the plan for args' shape (or, untuned, the mode) is the skinny kernel.
  bool SkinnyPlan(const GemmArgs& args) const;
  absl::Status Run(const Plan& plan, const GemmArgs& args, const void* algo, cudaStream_t stream);
  // The skinny kernel on that schedule (stream-K over num_sms_; the column
  // split over SkinnyGemmWideCtas(), or, where that does not take args'
  // epilogue, the cluster split that fills the GPU).
  absl::Status RunSkinny(const GemmArgs& args, const SkinnySchedule& schedule, bool pdl,
                         cudaStream_t stream, bool silu_mul = false);
  // args with Y = act (n/2 columns) and the SwiGLU epilogue.
  static kernels::SkinnyGemmArgs SiluMulArgs(const GemmArgs& args, void* act);

  void* handle_;     // cublasLtHandle_t
  void* workspace_;  // device
  void* skinny_workspace_;  // device, kernels::SkinnyGemmWorkspaceBytes(num_sms_); or null
  int num_sms_;
  Options options_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace memshare::engine::cuda

#endif  // MEMSHARE_ENGINE_CUDA_GEMM_H_
