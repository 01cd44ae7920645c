#include "engine/cuda/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/activation.h"
#include "kernels/skinny_gemm.h"

namespace memshare::engine::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", cublasGetStatusString(s)));
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

// Largest power of two (<= 256) dividing the address: cuBLASLt picks
// kernels by the alignment it is promised.
int AlignmentOf(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// Whether an MPS share smaller than the GPU applies to this process
// (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE below 100).
bool MpsShareOfGpu() {
  const char* v = std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  const double percent = std::strtod(v, &end);
  return end != v && percent < 100.0;
}

}  // namespace

kernels::SkinnyGemmArgs ToSkinnyGemmArgs(const GemmArgs& g) {
  kernels::SkinnyGemmArgs s;
  s.m = g.m, s.n = g.n, s.k = g.k;
  s.x = g.x, s.ldx = g.ldx;
  s.w = g.w, s.ldw = g.ldw;
  s.y = g.y, s.ldy = g.ldy;
  s.fp32_out = g.out == GemmOut::kFp32;
  s.bias = g.bias;
  s.residual = g.residual;
  s.sumsq_out = g.sumsq_out;
  s.sumsq_in = g.sumsq_in;
  s.sumsq_parts = g.sumsq_parts;
  s.rms_eps = g.rms_eps;
  s.argmax_out = g.argmax_out;
  s.store_y = g.store_y;
  s.dependents_at_start = g.early_dependents;
  return s;
}

namespace {

bool HasSkinnyEpilogue(const GemmArgs& g) {
  return g.residual != nullptr || g.sumsq_in != nullptr || g.argmax_out != nullptr;
}

absl::Status SkinnyEpilogueNeedsSkinny(const GemmArgs& g) {
  return absl::InvalidArgumentError(absl::StrCat(
      "gemm: the fused RMSNorm or greedy-candidate epilogue (m ", g.m, " n ", g.n, " k ", g.k,
      ") needs the skinny kernel, which this shape's plan does not run (check RunsSkinny)"));
}

}  // namespace

struct CublasLtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // W, k x n column-major (ld ldw), transposed
  cublasLtMatrixLayout_t b = nullptr;  // X, k x m column-major (ld ldx)
  cublasLtMatrixLayout_t c = nullptr;  // Y, n x m column-major (ld ldy)
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;
  int chosen = 0;
  SkinnySchedule skinny;  // what Tune() chose (kAlways: the cluster split untuned)

  ~Plan() {
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
  }
};

absl::StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create(const Options& options) {
  if (options.max_algorithms <= 0) {
    return absl::InvalidArgumentError("gemm: max_algorithms must be > 0");
  }
  cublasLtHandle_t handle = nullptr;
  if (absl::Status s = LtStatus(cublasLtCreate(&handle), "create"); !s.ok()) return s;
  void* workspace = nullptr;
  if (options.workspace_bytes > 0) {
    if (absl::Status s =
            CudaStatus(cudaMalloc(&workspace, options.workspace_bytes), "gemm workspace");
        !s.ok()) {
      cublasLtDestroy(handle);
      return s;
    }
  }
  int device = 0, num_sms = 0;  // 0 if unknown: the skinny kernel then splits less
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
  }
  // The skinny kernel's stream-K workspace: one CTA per multiprocessor.
  void* skinny_workspace = nullptr;
  if (options.skinny != SkinnyGemmMode::kOff && options.stream_k && !MpsShareOfGpu() &&
      num_sms > 0) {
    const size_t bytes = kernels::SkinnyGemmWorkspaceBytes(num_sms);
    absl::Status s = CudaStatus(cudaMalloc(&skinny_workspace, bytes), "skinny gemm workspace");
    if (s.ok()) s = CudaStatus(cudaMemset(skinny_workspace, 0, bytes), "skinny gemm workspace");
    if (!s.ok()) {
      if (skinny_workspace != nullptr) cudaFree(skinny_workspace);
      if (workspace != nullptr) cudaFree(workspace);
      cublasLtDestroy(handle);
      return s;
    }
  }
  return std::unique_ptr<CublasLtGemm>(
      new CublasLtGemm(handle, workspace, skinny_workspace, num_sms, options));
}

CublasLtGemm::CublasLtGemm(void* handle, void* workspace, void* skinny_workspace, int num_sms,
                           const Options& options)
    : handle_(handle),
      workspace_(workspace),
      skinny_workspace_(skinny_workspace),
      num_sms_(num_sms),
      options_(options) {}

CublasLtGemm::~CublasLtGemm() {
  plans_.clear();
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (skinny_workspace_ != nullptr) cudaFree(skinny_workspace_);
  cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

absl::Status CublasLtGemm::CheckArgs(const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.ldx < g.k || g.ldw < g.k || g.ldy < g.n ||
      g.x == nullptr || g.w == nullptr || g.y == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("gemm: bad shape m ", g.m, " n ", g.n, " k ",
                                                   g.k, " ld ", g.ldx, "/", g.ldw, "/", g.ldy));
  }
  if (g.bias != nullptr && g.out != GemmOut::kBf16) {
    return absl::InvalidArgumentError("gemm: bias needs bf16 output");
  }
  return absl::OkStatus();
}

CublasLtGemm::Key CublasLtGemm::KeyOf(const GemmArgs& g) {
  const int align = std::min({AlignmentOf(g.x), AlignmentOf(g.w), AlignmentOf(g.y),
                              g.bias != nullptr ? AlignmentOf(g.bias) : 256});
  return Key{g.m, g.n, g.k, g.ldx, g.ldw, g.ldy, static_cast<int>(g.out), g.bias != nullptr, align};
}

std::string CublasLtGemm::Choice(const GemmArgs& args) const {
  auto it = plans_.find(KeyOf(args));
  if (it == plans_.end()) return "";
  const Plan& plan = *it->second;
  const SkinnySchedule& sk = plan.skinny;
  switch (sk.kind) {
    case SkinnySchedule::kNone:
      return "cublaslt";
    case SkinnySchedule::kCluster:
      return absl::StrCat(sk.wgmma ? "skinny-wgmma/" : "skinny/", sk.splits);
    case SkinnySchedule::kStreamK:
      return absl::StrCat("skinny-wgmma/stream-k", num_sms_);
    case SkinnySchedule::kWide:
      return absl::StrCat("skinny-wgmma/wide",
                          kernels::SkinnyGemmWideCtas(ToSkinnyGemmArgs(args), num_sms_));
  }
  return "cublaslt";
}

absl::StatusOr<CublasLtGemm::Plan*> CublasLtGemm::GetPlan(const GemmArgs& g) {
  if (absl::Status s = CheckArgs(g); !s.ok()) return s;
  const Key key = KeyOf(g);
  const int align = std::get<8>(key);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();

  auto plan = std::make_unique<Plan>();
  const cudaDataType_t out_type = g.out == GemmOut::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
  if (absl::Status s = LtStatus(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                                "matmul desc");
      !s.ok()) {
    return s;
  }
  const cublasOperation_t trans_a = CUBLAS_OP_T;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a));
  cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi));
    const cudaDataType_t bias_type = CUDA_R_16BF;
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                   sizeof(bias_type));
    // The pointer itself is set per call; a placeholder lets the heuristic
    // see an epilogue with a bias.
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                   sizeof(g.bias));
  }
  if (absl::Status s =
          LtStatus(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, g.k, g.n, g.ldw), "layout W");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          LtStatus(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, g.k, g.m, g.ldx), "layout X");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          LtStatus(cublasLtMatrixLayoutCreate(&plan->c, out_type, g.n, g.m, g.ldy), "layout Y");
      !s.ok()) {
    return s;
  }

  cublasLtMatmulPreference_t pref = nullptr;
  if (absl::Status s = LtStatus(cublasLtMatmulPreferenceCreate(&pref), "preference"); !s.ok()) {
    return s;
  }
  const uint64_t ws = options_.workspace_bytes;
  const uint32_t align_bytes = static_cast<uint32_t>(align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align_bytes, sizeof(align_bytes));
  }
  plan->candidates.resize(options_.max_algorithms);
  int returned = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
      static_cast<cublasLtHandle_t>(handle_), plan->op, plan->a, plan->b, plan->c, plan->c, pref,
      options_.max_algorithms, plan->candidates.data(), &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (absl::Status s = LtStatus(hs, "heuristic"); !s.ok()) return s;
  if (returned == 0) {
    return absl::InternalError(
        absl::StrCat("cuBLASLt: no algorithm for m ", g.m, " n ", g.n, " k ", g.k));
  }
  plan->candidates.resize(returned);
  if (options_.skinny == SkinnyGemmMode::kAlways &&
      kernels::SkinnyGemmSupports(ToSkinnyGemmArgs(g))) {
    plan->skinny.kind = SkinnySchedule::kCluster;
    plan->skinny.splits = kernels::SkinnyGemmSplits(ToSkinnyGemmArgs(g), num_sms_);
  }
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status CublasLtGemm::Run(const Plan& plan, const GemmArgs& g, const void* algo,
                               cudaStream_t stream) {
  if (g.bias != nullptr) {
    cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                   sizeof(g.bias));
  }
  const float alpha = 1.f;
  const float beta = 0.f;
  return LtStatus(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan.op, &alpha, g.w,
                                 plan.a, g.x, plan.b, &beta, g.y, plan.c, g.y, plan.c,
                                 static_cast<const cublasLtMatmulAlgo_t*>(algo), workspace_,
                                 options_.workspace_bytes, stream),
                  "matmul");
}

absl::Status CublasLtGemm::RunSkinny(const GemmArgs& args, const SkinnySchedule& schedule, bool pdl,
                                     cudaStream_t stream, bool silu_mul) {
  kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(args);
  s.silu_mul = silu_mul;
  s.wgmma = schedule.wgmma;
  int splits = schedule.splits;
  if (schedule.kind == SkinnySchedule::kStreamK) {
    s.stream_k_ctas = num_sms_;
    s.workspace = skinny_workspace_;
    splits = 0;
  } else if (schedule.kind == SkinnySchedule::kWide) {
    // Zero where the column split does not take args' epilogue (residual
    // mode, greedy candidates: the O, down and LM head products, where it
    // never times fastest): the cluster split then runs them.
    s.wide_ctas = kernels::SkinnyGemmWideCtas(s, num_sms_);
    splits = 0;
  }
  return kernels::LaunchSkinnyGemm(s, splits, pdl, stream);
}

absl::Status CublasLtGemm::Matmul(const GemmArgs& args, cudaStream_t stream) {
  absl::StatusOr<Plan*> plan = GetPlan(args);
  if (!plan.ok()) return plan.status();
  if ((*plan)->skinny.kind != SkinnySchedule::kNone) {
    return RunSkinny(args, (*plan)->skinny, options_.pdl, stream);
  }
  if (HasSkinnyEpilogue(args)) return SkinnyEpilogueNeedsSkinny(args);
  return Run(**plan, args, &(*plan)->candidates[(*plan)->chosen].algo, stream);
}

kernels::SkinnyGemmArgs CublasLtGemm::SiluMulArgs(const GemmArgs& args, void* act) {
  kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(args);
  s.y = act;
  s.ldy = args.n / 2;
  s.silu_mul = true;
  return s;
}

bool CublasLtGemm::SkinnyPlan(const GemmArgs& args) const {
  auto it = plans_.find(KeyOf(args));
  return it != plans_.end() ? it->second->skinny.kind != SkinnySchedule::kNone
                            : options_.skinny == SkinnyGemmMode::kAlways;
}

bool CublasLtGemm::RunsSkinny(const GemmArgs& args) const {
  return SkinnyPlan(args) && kernels::SkinnyGemmSupports(ToSkinnyGemmArgs(args));
}

bool CublasLtGemm::FusesSiluMul(const GemmArgs& args, const void* act) const {
  return SkinnyPlan(args) && kernels::SkinnyGemmSupports(SiluMulArgs(args, const_cast<void*>(act)));
}

absl::Status CublasLtGemm::MatmulSiluMul(const GemmArgs& args, void* act, cudaStream_t stream) {
  if (args.out != GemmOut::kBf16 || args.bias != nullptr || args.n % 2 != 0 ||
      args.ldy != args.n || act == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gemm with SwiGLU: needs bf16 output, no bias, an even n (", args.n, ") with ldy == n (",
        args.ldy, ") and an output buffer"));
  }
  absl::StatusOr<Plan*> plan = GetPlan(args);
  if (!plan.ok()) return plan.status();
  const Plan& p = **plan;
  if (p.skinny.kind != SkinnySchedule::kNone &&
      kernels::SkinnyGemmSupports(SiluMulArgs(args, act))) {
    GemmArgs fused = args;
    fused.y = act;
    fused.ldy = args.n / 2;
    return RunSkinny(fused, p.skinny, options_.pdl, stream, /*silu_mul=*/true);
  }
  if (HasSkinnyEpilogue(args)) return SkinnyEpilogueNeedsSkinny(args);
  if (absl::Status s = Matmul(args, stream); !s.ok()) return s;
  return kernels::LaunchSiluAndMul(args.y, act, args.m, args.n / 2, stream);
}

absl::Status CublasLtGemm::Tune(const GemmArgs& args, cudaStream_t stream, int reps,
                                const std::vector<const void*>& rotate_w, double skinny_credit_ms) {
  absl::StatusOr<Plan*> plan_or = GetPlan(args);
  if (!plan_or.ok()) return plan_or.status();
  Plan& plan = **plan_or;
  reps = std::max(1, reps);
  if (HasSkinnyEpilogue(args)) {
    return absl::InvalidArgumentError("gemm tune: times the plain product (no skinny epilogue)");
  }
  // Candidates: the heuristic's algorithms, then the skinny kernel at the
  // k split that fills the GPU and at half of it, each with mma.sync and
  // with wgmma consumers, and with stream-K (wgmma). Where the tiles
  // outnumber the multiprocessors a cluster split runs in several waves,
  // the last on few of them; back to back it can time as fast as stream-K,
  // but in a decode step it is not (the b64 step with the gate/up
  // projection on the split of 1, which Tune chose in 9 of 10 processes on
  // one H100: +39 us against stream-K; bench/NOTES-cuda-backend.md session
  // 11), so it is left out where stream-K runs. Last, the column split
  // (wgmma; each CTA every k of its own output features, no partial sums)
  // where it takes the shape.
  using Kind = SkinnySchedule::Kind;
  std::vector<SkinnySchedule> skinny;
  if (options_.skinny != SkinnyGemmMode::kOff &&
      kernels::SkinnyGemmSupports(ToSkinnyGemmArgs(args))) {
    const int full = kernels::SkinnyGemmSplits(ToSkinnyGemmArgs(args), num_sms_);
    const bool stream_k = skinny_workspace_ != nullptr;
    const bool waves = num_sms_ > 0 && kernels::SkinnyGemmTiles(args.n) > num_sms_;
    for (bool wgmma : {false, true}) {
      if (!(waves && stream_k)) {
        skinny.push_back({Kind::kCluster, full, wgmma});
        if (full > 1) skinny.push_back({Kind::kCluster, full / 2, wgmma});
      }
      if (wgmma && stream_k) skinny.push_back({Kind::kStreamK, 0, wgmma});
    }
    if (options_.wide && num_sms_ > 0 &&
        kernels::SkinnyGemmWideCtas(ToSkinnyGemmArgs(args), num_sms_) > 0) {
      skinny.push_back({Kind::kWide, 0, true});
    }
  }
  const size_t num_lt = plan.candidates.size();
  auto run = [&](size_t i, int rep, cudaStream_t st) {
    GemmArgs a = args;
    if (!rotate_w.empty()) a.w = rotate_w[rep % rotate_w.size()];
    if (i < num_lt) return Run(plan, a, &plan.candidates[i].algo, st);
    // Without PDL: back to back, a kernel of fewer CTAs would overlap the
    // next run of itself and time faster than it runs in a step, where the
    // kernel after it is another.
    return RunSkinny(a, skinny[i - num_lt], /*pdl=*/false, st);
  };
  // Each candidate runs `reps` times inside a CUDA graph on a private
  // stream, so the timing is the kernels' alone: for a 10 us decode GEMM the
  // host's launch cost would otherwise be most of what is measured.
  if (absl::Status s = CudaStatus(cudaStreamSynchronize(stream), "gemm tune"); !s.ok()) return s;
  cudaStream_t tune_stream = nullptr;
  if (absl::Status s = CudaStatus(cudaStreamCreateWithFlags(&tune_stream, cudaStreamNonBlocking),
                                  "gemm tune stream");
      !s.ok()) {
    return s;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  absl::Status status = CudaStatus(cudaEventCreate(&start), "event");
  if (status.ok()) status = CudaStatus(cudaEventCreate(&stop), "event");
  // The fastest cuBLASLt candidate and the fastest skinny one, each.
  float best_ms[2] = {0.f, 0.f};
  int best_of[2] = {-1, -1};
  for (size_t i = 0; status.ok() && i < num_lt + skinny.size(); ++i) {
    if (!run(i, 0, tune_stream).ok()) continue;  // skip what fails
    if (cudaStreamSynchronize(tune_stream) != cudaSuccess) {
      status = CudaStatus(cudaGetLastError(), "gemm tune");
      break;
    }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    bool ok = cudaStreamBeginCapture(tune_stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    for (int r = 0; ok && r < reps; ++r) ok = run(i, r, tune_stream).ok();
    ok = (cudaStreamEndCapture(tune_stream, &graph) == cudaSuccess) && ok;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    float ms = 0.f;
    for (int trial = 0; ok && trial < 3; ++trial) {  // best of 3 replays
      float t = 0.f;
      ok = cudaGraphLaunch(exec, tune_stream) == cudaSuccess;  // warm
      ok = ok && cudaEventRecord(start, tune_stream) == cudaSuccess &&
           cudaGraphLaunch(exec, tune_stream) == cudaSuccess &&
           cudaEventRecord(stop, tune_stream) == cudaSuccess &&
           cudaEventSynchronize(stop) == cudaSuccess &&
           cudaEventElapsedTime(&t, start, stop) == cudaSuccess;
      if (ok && (trial == 0 || t < ms)) ms = t;
    }
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // a candidate that failed to capture is skipped, not fatal
    const int kind = i < num_lt ? 0 : 1;
    if (ok && (best_of[kind] < 0 || ms < best_ms[kind])) {
      best_of[kind] = static_cast<int>(i), best_ms[kind] = ms;
    }
  }
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  cudaStreamDestroy(tune_stream);
  if (!status.ok()) return status;
  // The skinny kernel, less its credit, wins ties up to
  // options_.skinny_preference.
  int best = best_of[0];
  if (best_of[1] >= 0 && (best < 0 || best_ms[1] - skinny_credit_ms <=
                                          best_ms[0] * (1.0 + options_.skinny_preference))) {
    best = best_of[1];
  }
  if (best < 0) return absl::InternalError("gemm tune: no candidate ran");
  if (static_cast<size_t>(best) < num_lt) {
    plan.chosen = best;
    if (options_.skinny != SkinnyGemmMode::kAlways) plan.skinny = SkinnySchedule{};
  } else {
    plan.skinny = skinny[best - num_lt];
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine::cuda
