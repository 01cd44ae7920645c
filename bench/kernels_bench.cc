// Kernel benchmarks on one GPU (bench/NOTES-kernels.md has the floors,
// the predictions and the results). Every figure is the median of many
// launches timed with CUDA events after a warm-up, on random data, with
// inputs rotated so that the working set exceeds L2 where the kernel is
// memory-bound.
//
//   kernels_bench [--json FILE] [--only attn,gemm,dist,misc,prefill] [--sweep] [--block_size 8]
//                 [--gemm_m 1,16,64]  (the GEMM section's token counts)
//
// attn includes decode over MemShare shifted views (block_tables_hi /
// block_shifts) next to the same sharing without views.
//
// Prints one line per measurement and a summary table last.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "engine/cuda/gemm.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/block_copy.h"
#include "kernels/block_distance.h"
#include "kernels/kv_block_shape.h"
#include "kernels/norm.h"
#include "kernels/qkv.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/skinny_gemm.h"

namespace memshare::bench {
namespace {

using engine::cuda::CublasLtGemm;
using engine::cuda::GemmArgs;
using kernels::KvBlockShape;

#define CUDA_OK(expr)                                                                  \
  do {                                                                                 \
    const cudaError_t e__ = (expr);                                                    \
    if (e__ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr,               \
                   cudaGetErrorString(e__));                                           \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

#define STATUS_OK(expr)                                                                     \
  do {                                                                                      \
    const absl::Status s__ = (expr);                                                        \
    if (!s__.ok()) {                                                                        \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr,                    \
                   std::string(s__.message()).c_str());                                    \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

struct Row {
  std::string what;
  double us;
  std::string figure;  // e.g. "2710 GB/s"
};
std::vector<Row> g_rows;
FILE* g_json = nullptr;

void Report(const std::string& what, double us, const std::string& figure,
            const std::string& extra_json = "") {
  std::printf("%-72s %10.2f us  %s\n", what.c_str(), us, figure.c_str());
  std::fflush(stdout);
  g_rows.push_back({what, us, figure});
  if (g_json != nullptr) {
    std::fprintf(g_json, "{\"what\": \"%s\", \"us\": %.3f, \"figure\": \"%s\"%s%s}\n", what.c_str(),
                 us, figure.c_str(), extra_json.empty() ? "" : ", ", extra_json.c_str());
    std::fflush(g_json);
  }
}

// Median time in microseconds of `reps` runs of fn(i), each between two
// events, after `warm` untimed runs. fn gets the rep index for rotation.
double MedianUs(const std::function<void(int)>& fn, int reps = 30, int warm = 5) {
  for (int i = 0; i < warm; ++i) fn(i);
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CUDA_OK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CUDA_OK(cudaEventRecord(ev[2 * i]));
    fn(warm + i);
    CUDA_OK(cudaEventRecord(ev[2 * i + 1]));
  }
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaGetLastError());
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CUDA_OK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[reps / 2];
}

// Median time per call in microseconds of `calls` calls fn(i, stream)
// captured back to back in one CUDA graph, over `replays` replays: the
// kernels' time without the host's launch cost (what a decode step replayed
// from a graph sees). The peer script bench/torch_peer_kernels.py times
// PyTorch the same way.
double GraphMedianUs(const std::function<void(int, cudaStream_t)>& fn, int calls = 20,
                     int replays = 30) {
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  fn(0, s);
  fn(1, s);
  CUDA_OK(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) fn(i, s);
  CUDA_OK(cudaStreamEndCapture(s, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CUDA_OK(cudaGraphLaunch(exec, s));
  std::vector<cudaEvent_t> ev(2 * replays);
  for (auto& e : ev) CUDA_OK(cudaEventCreate(&e));
  for (int i = 0; i < replays; ++i) {
    CUDA_OK(cudaEventRecord(ev[2 * i], s));
    CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaEventRecord(ev[2 * i + 1], s));
  }
  CUDA_OK(cudaStreamSynchronize(s));
  std::vector<float> ms(replays);
  for (int i = 0; i < replays; ++i) CUDA_OK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(s));
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[replays / 2] / calls;
}

void* DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, bytes));
  return p;
}

// Fills bf16 memory with N(0, scale) on the device side via a host staging
// buffer of at most 64 MB, repeated with different offsets (random enough
// for timing, never zeros).
void FillRandomBf16(void* dst, size_t count, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  const size_t chunk = std::min<size_t>(count, size_t{32} << 20);
  std::vector<Bf16> host(chunk);
  for (auto& x : host) x = FloatToBf16(normal(rng));
  auto* d = static_cast<Bf16*>(dst);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t n = std::min(chunk, count - off);
    const size_t rot = (off / chunk * 7919) % chunk;  // vary the pattern per chunk
    const size_t first = std::min(n, chunk - rot);
    CUDA_OK(cudaMemcpy(d + off, host.data() + rot, first * sizeof(Bf16), cudaMemcpyHostToDevice));
    if (first < n) {
      CUDA_OK(cudaMemcpy(d + off + first, host.data(), (n - first) * sizeof(Bf16),
                         cudaMemcpyHostToDevice));
    }
  }
}

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

double g_copy_gbs = 0;
int g_sms = 0;

void BenchCopy() {
  const size_t n = size_t{1} << 30;
  void* a = DeviceAlloc(n);
  void* b = DeviceAlloc(n);
  CUDA_OK(cudaMemset(a, 0x5a, n));
  const double us = MedianUs([&](int) { CUDA_OK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); }, 20);
  g_copy_gbs = 2.0 * n / (us * 1e-6) / 1e9;
  Report("copy 1 GiB device-to-device (read + write)", us, Fmt("%.0f GB/s", g_copy_gbs));
  cudaFree(a);
  cudaFree(b);
}

// Decode attention: batch 64, 28 query / 4 KV heads, head_dim 128, all
// sequences at `ctx` keys. shared: every sequence's second half of logical
// blocks points at the physical blocks of its first half (MemShare-style
// sharing inside a request). views: the same blocks, but every second
// logical block of the second half is a shifted view (shift 7) over two
// consecutive blocks of the first half (MemShare shifted sharing: the view
// launch, block_tables_hi / block_shifts). KV bytes counted per logical
// token, as the peer's figure counts its contiguous cache. bs: the pool's
// block size (16 or 8, --block_size).
void BenchDecode(int kSeqs, int ctx, bool shared, bool sweep, bool views, int bs) {
  constexpr int kQh = 28, kKvh = 4, kD = 128;
  const int nb = (ctx + bs - 1) / bs;
  const int tiles = (ctx + 15) / 16;  // DecodeSplit counts tiles of 16 keys
  const int unique_per_seq = shared ? (nb + 1) / 2 : nb;
  const int64_t kv_bytes_layer = int64_t{kSeqs} * ctx * kKvh * kD * 2 * 2;
  // Enough layers that rotating over them moves > 1 GB of distinct memory.
  const int layers = std::max<int64_t>(
      1, (int64_t{1} << 30) / (int64_t{kSeqs} * unique_per_seq * bs * kKvh * kD * 4));
  const KvBlockShape shape{layers, kKvh, bs, kD};
  const int64_t num_blocks = int64_t{kSeqs} * unique_per_seq;
  void* pool = DeviceAlloc(num_blocks * shape.BlockElements() * 2);
  FillRandomBf16(pool, num_blocks * shape.BlockElements(), 7);
  // Scattered physical ids: a random permutation.
  std::vector<int32_t> perm(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) perm[i] = int32_t(i);
  std::mt19937 rng(5);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(size_t(kSeqs) * nb);
  for (int s = 0; s < kSeqs; ++s) {
    for (int b = 0; b < nb; ++b) {
      tables[size_t(s) * nb + b] = perm[size_t(s) * unique_per_seq + (b % unique_per_seq)];
    }
  }
  std::vector<int32_t> hi(tables), shifts(tables.size(), 0);
  if (views) {
    for (int s = 0; s < kSeqs; ++s) {
      for (int b = unique_per_seq; b < nb; b += 2) {
        const int k = b % unique_per_seq;
        if (k + 1 >= unique_per_seq || (b + 1) * bs > ctx) continue;
        hi[size_t(s) * nb + b] = perm[size_t(s) * unique_per_seq + k + 1];
        shifts[size_t(s) * nb + b] = 7;
      }
    }
  }
  std::vector<int32_t> lens(kSeqs, ctx);
  int32_t* d_tables = static_cast<int32_t*>(DeviceAlloc(tables.size() * 4));
  int32_t* d_hi = static_cast<int32_t*>(DeviceAlloc(tables.size() * 4));
  int32_t* d_shifts = static_cast<int32_t*>(DeviceAlloc(tables.size() * 4));
  CUDA_OK(cudaMemcpy(d_hi, hi.data(), hi.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_shifts, shifts.data(), shifts.size() * 4, cudaMemcpyHostToDevice));
  int32_t* d_lens = static_cast<int32_t*>(DeviceAlloc(kSeqs * 4));
  CUDA_OK(cudaMemcpy(d_tables, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_lens, lens.data(), kSeqs * 4, cudaMemcpyHostToDevice));
  const int64_t q_stride = (kQh + 2 * kKvh) * kD;
  void* q = DeviceAlloc(kSeqs * q_stride * 2);
  FillRandomBf16(q, kSeqs * q_stride, 9);
  void* out = DeviceAlloc(kSeqs * kQh * kD * 2);
  kernels::RopeConfig rc;
  rc.theta = 1000000.;
  const std::vector<float> inv = *kernels::RopeInvFreq(rc);
  float* d_inv = static_cast<float*>(DeviceAlloc(inv.size() * 4));
  CUDA_OK(cudaMemcpy(d_inv, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));

  kernels::PagedAttentionArgs a;
  a.q = q;
  a.q_row_stride = q_stride;
  a.num_q_heads = kQh;
  a.kv_pool = pool;
  a.shape = shape;
  a.block_tables = d_tables;
  a.block_table_stride = nb;
  a.context_lens = d_lens;
  a.rope_inv_freq = d_inv;
  a.softmax_scale = 1.f / std::sqrt(float(kD));
  a.out = out;
  if (views) {
    a.block_tables_hi = d_hi;
    a.block_shifts = d_shifts;
  }
  const char* sharing = views ? "views" : shared ? "shared" : "unique";

  const kernels::DecodeSplit autos = kernels::ChooseDecodeSplit(kSeqs, kKvh, ctx, g_sms);
  std::vector<kernels::DecodeSplit> splits = {autos};
  if (sweep) {
    for (int s : {1, 2, 4, 8, 16}) {
      const int bps = (tiles + s - 1) / s;
      if (s != autos.num_splits) splits.push_back({(tiles + bps - 1) / bps, bps});
    }
  }
  size_t ws_bytes = 16;
  for (const auto& sp : splits) {
    ws_bytes = std::max(ws_bytes, kernels::DecodeAttentionWorkspaceBytes(kSeqs, kQh, kD, sp));
  }
  void* ws = DeviceAlloc(ws_bytes);
  for (size_t i = 0; i < splits.size(); ++i) {
    const auto sp = splits[i];
    const double us = MedianUs([&](int rep) {
      kernels::PagedAttentionArgs r = a;
      r.layer = rep % layers;
      STATUS_OK(kernels::LaunchPagedDecodeAttention(r, kSeqs, sp, ws, nullptr));
    });
    const double gbs = kv_bytes_layer / (us * 1e-6) / 1e9;
    if (i == 0) {
      const double gus = GraphMedianUs([&](int rep, cudaStream_t st) {
        kernels::PagedAttentionArgs r = a;
        r.layer = rep % layers;
        STATUS_OK(kernels::LaunchPagedDecodeAttention(r, kSeqs, sp, ws, st));
      }, 10, 20);
      char gwhat[160];
      std::snprintf(gwhat, sizeof(gwhat),
                    "decode attn b=%d h=28/4 d=128 bs=%d ctx=%d %s split=%dx%d (auto, graph)",
                    kSeqs, bs, ctx, sharing, sp.num_splits, sp.blocks_per_split);
      const double ggbs = kv_bytes_layer / (gus * 1e-6) / 1e9;
      Report(gwhat, gus, Fmt("%.0f GB/s KV", ggbs) + Fmt(" = %.1f%% of copy", 100.0 * ggbs / std::max(1.0, g_copy_gbs)));
    }
    char what[160];
    std::snprintf(what, sizeof(what), "decode attn b=%d h=28/4 d=128 bs=%d ctx=%d %s split=%dx%d%s",
                  kSeqs, bs, ctx, sharing, sp.num_splits, sp.blocks_per_split,
                  i == 0 ? " (auto)" : "");
    char fig[80];
    std::snprintf(fig, sizeof(fig), "%.0f GB/s KV = %.1f%% of copy", gbs,
                  100.0 * gbs / std::max(1.0, g_copy_gbs));
    char extra[240];
    std::snprintf(extra, sizeof(extra),
                  "\"batch\": %d, \"block_size\": %d, \"ctx\": %d, \"shared\": %s, "
                  "\"views\": %s, \"auto\": %s, \"kv_gbs\": %.1f, \"copy_frac\": %.4f",
                  kSeqs, bs, ctx, shared ? "true" : "false", views ? "true" : "false",
                  i == 0 ? "true" : "false", gbs, gbs / std::max(1.0, g_copy_gbs));
    Report(what, us, fig, extra);
  }
  cudaFree(ws);
  cudaFree(pool);
  cudaFree(d_tables);
  cudaFree(d_hi);
  cudaFree(d_shifts);
  cudaFree(d_lens);
  cudaFree(q);
  cudaFree(out);
  cudaFree(d_inv);
}

// Prefill attention: `seqs` prompts of `len` tokens, causal, 28/4 heads,
// d 128 (64 x 512: the offline workload's prefill).
void BenchPrefill(int kSeqs, int len) {
  constexpr int kQh = 28, kKvh = 4, kD = 128, kBs = 16;
  const int nb = (len + kBs - 1) / kBs;
  const KvBlockShape shape{1, kKvh, kBs, kD};
  const int64_t blocks = int64_t{kSeqs} * nb;
  void* pool = DeviceAlloc(blocks * shape.BlockElements() * 2);
  FillRandomBf16(pool, blocks * shape.BlockElements(), 3);
  std::vector<int32_t> tables(blocks), lens(kSeqs, len), cu(kSeqs + 1);
  for (int64_t i = 0; i < blocks; ++i) tables[i] = int32_t(i);
  for (int s = 0; s <= kSeqs; ++s) cu[s] = s * len;
  int32_t* d_tables = static_cast<int32_t*>(DeviceAlloc(blocks * 4));
  int32_t* d_lens = static_cast<int32_t*>(DeviceAlloc(kSeqs * 4));
  int32_t* d_cu = static_cast<int32_t*>(DeviceAlloc((kSeqs + 1) * 4));
  CUDA_OK(cudaMemcpy(d_tables, tables.data(), blocks * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_lens, lens.data(), kSeqs * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_cu, cu.data(), (kSeqs + 1) * 4, cudaMemcpyHostToDevice));
  const int64_t q_stride = (kQh + 2 * kKvh) * kD;
  void* q = DeviceAlloc(int64_t{kSeqs} * len * q_stride * 2);
  FillRandomBf16(q, int64_t{kSeqs} * len * q_stride, 4);
  void* out = DeviceAlloc(int64_t{kSeqs} * len * kQh * kD * 2);
  kernels::RopeConfig rc;
  const std::vector<float> inv = *kernels::RopeInvFreq(rc);
  float* d_inv = static_cast<float*>(DeviceAlloc(inv.size() * 4));
  CUDA_OK(cudaMemcpy(d_inv, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
  kernels::PagedAttentionArgs a;
  a.q = q;
  a.q_row_stride = q_stride;
  a.num_q_heads = kQh;
  a.kv_pool = pool;
  a.shape = shape;
  a.block_tables = d_tables;
  a.block_table_stride = nb;
  a.context_lens = d_lens;
  a.rope_inv_freq = d_inv;
  a.softmax_scale = 1.f / std::sqrt(float(kD));
  a.out = out;
  const double us = MedianUs(
      [&](int) { STATUS_OK(kernels::LaunchPagedPrefillAttention(a, kSeqs, d_cu, len, nullptr)); },
      10, 2);
  // Causal: half of the len x len score matrix, QK^T and PV.
  const double flops = 4.0 * kSeqs * kQh * kD * (double(len) * (len + 1) / 2);
  char what[120];
  std::snprintf(what, sizeof(what), "prefill attn %d x %d tokens causal h=28/4 d=128", kSeqs, len);
  Report(what, us, Fmt("%.0f TFLOP/s", flops / (us * 1e-6) / 1e12));
  for (void* p : {pool, static_cast<void*>(d_tables), static_cast<void*>(d_lens),
                  static_cast<void*>(d_cu), q, out, static_cast<void*>(d_inv)}) {
    cudaFree(p);
  }
}

// Decode-shaped GEMMs of R1-Distill-Qwen-7B: weights rotated over copies
// totalling >= 256 MB, so that every launch reads its weights from DRAM.
void BenchGemm(CublasLtGemm& lt_only, CublasLtGemm& gemm, const std::vector<int>& token_counts) {
  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  void* stream_k_ws = DeviceAlloc(kernels::SkinnyGemmWorkspaceBytes(sms));
  CUDA_OK(cudaMemset(stream_k_ws, 0, kernels::SkinnyGemmWorkspaceBytes(sms)));
  struct Shape {
    const char* name;
    int n, k;
  };
  const Shape shapes[] = {{"qkv", 4608, 3584},
                          {"o", 3584, 3584},
                          {"gate_up", 37888, 3584},
                          {"down", 3584, 18944}};
  for (const Shape& s : shapes) {
    const int64_t wbytes = int64_t{s.n} * s.k * 2;
    const int copies = int(std::max<int64_t>(1, ((int64_t{256} << 20) + wbytes - 1) / wbytes));
    std::vector<void*> ws;
    for (int c = 0; c < copies; ++c) {
      ws.push_back(DeviceAlloc(wbytes));
      FillRandomBf16(ws.back(), wbytes / 2, 100 + c, 0.02f);
    }
    void* x = DeviceAlloc(int64_t{256} * s.k * 2);
    FillRandomBf16(x, int64_t{256} * s.k, 11);
    void* y = DeviceAlloc(int64_t{256} * s.n * 2);
    for (int m : token_counts) {
      GemmArgs a;
      a.m = m, a.n = s.n, a.k = s.k;
      a.x = x, a.ldx = s.k;
      a.w = ws[0], a.ldw = s.k;
      a.y = y, a.ldy = s.n;
      std::vector<const void*> rotate(ws.begin(), ws.end());
      // 0: cuBLASLt's heuristic; 1: tuned on one weight copy (L2-warm for
      // the smaller shapes); 2: tuned over the rotated copies (cold, as in a
      // forward pass), the skinny kernel among the candidates.
      for (int tuned = 0; tuned < 3; ++tuned) {
        CublasLtGemm& g = tuned == 2 ? gemm : lt_only;
        if (tuned == 1) STATUS_OK(g.Tune(a, nullptr, 10));
        if (tuned == 2) STATUS_OK(g.Tune(a, nullptr, 10, rotate));
        const double us = GraphMedianUs([&](int rep, cudaStream_t st) {
          GemmArgs r = a;
          r.w = ws[rep % copies];
          STATUS_OK(g.Matmul(r, st));
        });
        const char* how[] = {"heuristic", "tuned", "tuned-cold"};
        char what[160];
        std::snprintf(what, sizeof(what), "gemm %s M=%d N=%d K=%d %s %s (%d weight copies, graph)",
                      s.name, m, s.n, s.k, how[tuned], g.Choice(a).c_str(), copies);
        char fig[80];
        std::snprintf(fig, sizeof(fig), "%.0f GB/s weights, %.1f TFLOP/s", wbytes / (us * 1e-6) / 1e9,
                      2.0 * m * s.n * s.k / (us * 1e-6) / 1e12);
        char extra[200];
        std::snprintf(extra, sizeof(extra),
                      "\"m\": %d, \"n\": %d, \"k\": %d, \"tuned\": %d, \"choice\": \"%s\", "
                      "\"weight_gbs\": %.1f",
                      m, s.n, s.k, tuned, g.Choice(a).c_str(), wbytes / (us * 1e-6) / 1e9);
        Report(what, us, fig, extra);
      }
      // The skinny kernel directly: k splits that fill the GPU and half of
      // that, with and without programmatic dependent launch, then stream-K
      // over every multiprocessor (wgmma consumers).
      kernels::SkinnyGemmArgs k;
      k.m = m, k.n = s.n, k.k = s.k;
      k.x = x, k.ldx = s.k;
      k.w = ws[0], k.ldw = s.k;
      k.y = y, k.ldy = s.n;
      if (!kernels::SkinnyGemmSupports(k)) continue;
      // Times and reports `r` (its schedule: `splits`, or r.stream_k_ctas).
      auto time_skinny = [&](const kernels::SkinnyGemmArgs& r, int splits, bool pdl) {
        const double us = GraphMedianUs([&](int rep, cudaStream_t st) {
          kernels::SkinnyGemmArgs rr = r;
          rr.w = ws[rep % copies];
          STATUS_OK(kernels::LaunchSkinnyGemm(rr, splits, pdl, st));
        });
        const bool sk = r.stream_k_ctas > 0;
        const bool wide = r.wide_ctas > 0;
        const char* schedule = sk ? "stream-k" : wide ? "wide" : "splits";
        const int count = sk ? r.stream_k_ctas : wide ? r.wide_ctas : splits;
        char what[160];
        std::snprintf(what, sizeof(what), "gemm %s M=%d N=%d K=%d skinny%s %s=%d pdl=%d%s (graph)",
                      s.name, m, s.n, s.k, r.wgmma ? "-wgmma" : "", schedule, count, pdl,
                      r.silu_mul ? " +silu" : "");
        char fig[80];
        std::snprintf(fig, sizeof(fig), "%.0f GB/s weights", wbytes / (us * 1e-6) / 1e9);
        char extra[200];
        std::snprintf(extra, sizeof(extra),
                      "\"m\": %d, \"n\": %d, \"k\": %d, \"%s\": %d, \"pdl\": %d, "
                      "\"wgmma\": %d, \"weight_gbs\": %.1f",
                      m, s.n, s.k,
                      sk     ? "skinny_stream_k"
                      : wide ? "skinny_wide"
                             : "skinny_splits",
                      count, pdl, r.wgmma ? 1 : 0, wbytes / (us * 1e-6) / 1e9);
        Report(what, us, fig, extra);
      };
      const int full = kernels::SkinnyGemmSplits(k, sms);
      for (int splits : {full, std::max(1, full / 2)}) {
        for (bool wgmma : {false, true}) {
          for (bool pdl : {false, true}) {
            kernels::SkinnyGemmArgs r = k;
            r.wgmma = wgmma;
            time_skinny(r, splits, pdl);
          }
        }
        if (full == 1) break;
      }
      for (bool pdl : {false, true}) {
        kernels::SkinnyGemmArgs r = k;
        r.wgmma = true;
        r.stream_k_ctas = sms;
        r.workspace = stream_k_ws;
        time_skinny(r, 0, pdl);
      }
      // The column split (every k of a CTA's own output features).
      if (const int wide = kernels::SkinnyGemmWideCtas(k, sms); wide > 0) {
        for (bool pdl : {false, true}) {
          kernels::SkinnyGemmArgs r = k;
          r.wgmma = true;
          r.wide_ctas = wide;
          time_skinny(r, 0, pdl);
        }
      }
      // The gate/up projection with SwiGLU in its epilogue (n / 2 columns
      // out): against the plain product plus the SiLU pass (misc).
      if (std::strcmp(s.name, "gate_up") == 0) {
        kernels::SkinnyGemmArgs r = k;
        r.wgmma = true;
        r.silu_mul = true;
        r.ldy = s.n / 2;
        time_skinny(r, full, true);
        r.stream_k_ctas = sms;
        r.workspace = stream_k_ws;
        time_skinny(r, 0, true);
        r.stream_k_ctas = 0;
        r.workspace = nullptr;
        if ((r.wide_ctas = kernels::SkinnyGemmWideCtas(r, sms)) > 0) time_skinny(r, 0, true);
      }
    }
    for (void* p : ws) cudaFree(p);
    cudaFree(x);
    cudaFree(y);
  }
  cudaFree(stream_k_ws);
}

// Block distance, R1-Distill-Qwen-7B with one layer group (917,504-byte
// blocks): random pairs over a 1.8 GB pool.
void BenchDistance() {
  const KvBlockShape shape{28, 4, 16, 128};
  const int blocks = 4096;  // 3.8 GB
  const int64_t block_bytes = shape.BlockElements() * 2;
  void* pool = DeviceAlloc(blocks * block_bytes);
  FillRandomBf16(pool, blocks * shape.BlockElements(), 21);
  std::mt19937 rng(22);
  for (int pairs : {1, 16, 64, 256, 1024}) {
    // Each launch reads 2 x pairs distinct blocks (a random permutation), and
    // launches rotate over permutations: no block is read twice in a launch.
    const int sets = 4;
    std::vector<int32_t> host;
    for (int s = 0; s < sets; ++s) {
      std::vector<int32_t> perm(blocks);
      for (int i = 0; i < blocks; ++i) perm[i] = i;
      std::shuffle(perm.begin(), perm.end(), rng);
      host.insert(host.end(), perm.begin(), perm.begin() + 2 * pairs);
    }
    int32_t* d_pairs = static_cast<int32_t*>(DeviceAlloc(host.size() * 4));
    CUDA_OK(cudaMemcpy(d_pairs, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
    void* ws = DeviceAlloc(kernels::BlockDistanceWorkspaceBytes(shape, pairs));
    auto* out = static_cast<kernels::BlockPairSums*>(DeviceAlloc(pairs * sizeof(kernels::BlockPairSums)));
    const double us = MedianUs([&](int rep) {
      STATUS_OK(kernels::LaunchBlockDistance(pool, shape, blocks, d_pairs + size_t(rep % sets) * pairs * 2,
                                             pairs, ws, out, nullptr));
    });
    char what[120];
    std::snprintf(what, sizeof(what), "block distance 7B group (28 layers) %d pairs", pairs);
    char fig[96];
    std::snprintf(fig, sizeof(fig), "%.2f us/pair, %.0f GB/s", us / pairs,
                  2.0 * block_bytes * pairs / (us * 1e-6) / 1e9);
    Report(what, us, fig);
    // The same pairs as shifted windows (shift 5): candidate, reference,
    // reference_next = the next pair's candidate, shift (3 blocks per pair;
    // bytes counted as before: the window is one block's worth).
    std::vector<int32_t> windows;
    for (size_t i = 0; i + 1 < host.size(); i += 2) {
      for (int32_t v : {host[i], host[i + 1], host[(i + 2) % host.size()], 5}) {
        windows.push_back(v);
      }
    }
    int32_t* d_windows = static_cast<int32_t*>(DeviceAlloc(windows.size() * 4));
    CUDA_OK(cudaMemcpy(d_windows, windows.data(), windows.size() * 4, cudaMemcpyHostToDevice));
    const double wus = MedianUs([&](int rep) {
      STATUS_OK(kernels::LaunchBlockDistanceWindows(
          pool, shape, blocks, d_windows + size_t(rep % sets) * pairs * 4, pairs, ws, out,
          nullptr));
    });
    std::snprintf(what, sizeof(what), "block distance 7B group (28 layers) %d shifted windows",
                  pairs);
    std::snprintf(fig, sizeof(fig), "%.2f us/pair, %.0f GB/s", wus / pairs,
                  2.0 * block_bytes * pairs / (wus * 1e-6) / 1e9);
    Report(what, wus, fig);
    cudaFree(d_windows);
    cudaFree(d_pairs);
    cudaFree(ws);
    cudaFree(out);
  }
  cudaFree(pool);
}

// The small per-layer kernels at decode batch 64 (7B shapes) and sampling.
void BenchMisc() {
  const int n = 64, hidden = 3584, inter = 18944;
  void* x = DeviceAlloc(int64_t{n} * hidden * 2);
  void* res = DeviceAlloc(int64_t{n} * hidden * 2);
  void* w = DeviceAlloc(hidden * 2);
  void* out = DeviceAlloc(int64_t{n} * hidden * 2);
  FillRandomBf16(x, int64_t{n} * hidden, 1);
  FillRandomBf16(res, int64_t{n} * hidden, 2);
  FillRandomBf16(w, hidden, 3);
  double us = MedianUs([&](int) {
    STATUS_OK(kernels::LaunchAddRmsNorm(x, res, w, out, n, hidden, 1e-6f, nullptr));
  });
  Report("add+rmsnorm 64 x 3584", us, Fmt("%.0f GB/s", 4.0 * n * hidden * 2 / (us * 1e-6) / 1e9));
  void* gu = DeviceAlloc(int64_t{n} * 2 * inter * 2);
  void* act = DeviceAlloc(int64_t{n} * inter * 2);
  FillRandomBf16(gu, int64_t{n} * 2 * inter, 4);
  us = MedianUs([&](int) { STATUS_OK(kernels::LaunchSiluAndMul(gu, act, n, inter, nullptr)); });
  Report("silu_and_mul 64 x 18944", us, Fmt("%.0f GB/s", 3.0 * n * inter * 2 / (us * 1e-6) / 1e9));

  // Sampling: 64 rows of Qwen's vocabulary, top-k 20 + top-p 0.95 at T 0.6.
  const int vocab = 151936;
  std::vector<float> logits(size_t(n) * vocab);
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (auto& v : logits) v = normal(rng);
  float* d_logits = static_cast<float*>(DeviceAlloc(logits.size() * 4));
  std::vector<kernels::SamplingRow> params(n);
  for (int i = 0; i < n; ++i) {
    params[i].temperature = 0.6f;
    params[i].top_k = 20;
    params[i].top_p = 0.95f;
    params[i].uniform = (i + 0.5f) / n;
  }
  auto* d_params =
      static_cast<kernels::SamplingRow*>(DeviceAlloc(n * sizeof(kernels::SamplingRow)));
  int32_t* d_tok = static_cast<int32_t*>(DeviceAlloc(n * 4));
  CUDA_OK(cudaMemcpy(d_logits, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
  // Times the sampler with every row's parameters changed by `set` (from
  // the previous case's).
  auto sample_case = [&](const char* name, auto set) {
    for (auto& p : params) set(p);
    CUDA_OK(cudaMemcpy(d_params, params.data(), n * sizeof(kernels::SamplingRow),
                       cudaMemcpyHostToDevice));
    const double t = MedianUs(
        [&](int) {
          STATUS_OK(kernels::LaunchSample(d_logits, vocab, n, vocab, d_params, nullptr, nullptr,
                                          nullptr, d_tok, nullptr));
        },
        10, 2);
    Report(std::string("sample 64 x 151936 ") + name, t,
           params[0].temperature <= 0.f ? Fmt("%.0f GB/s", double(n) * vocab * 4 / (t * 1e-6) / 1e9)
                                        : std::string());
  };
  sample_case("T=0.6 top-k 20 top-p 0.95", [](kernels::SamplingRow&) {});
  sample_case("T=0.6 top-p 0.9", [](kernels::SamplingRow& p) { p.top_k = 0, p.top_p = 0.9f; });
  sample_case("T=1 top-p 0.95",
              [](kernels::SamplingRow& p) { p.temperature = 1.f, p.top_p = 0.95f; });
  sample_case("T=1", [](kernels::SamplingRow& p) { p.top_p = 1.f; });
  sample_case("greedy", [](kernels::SamplingRow& p) { p.temperature = 0.f; });

  // Copy-on-write of 64 blocks of the 7B group (917,504 bytes each).
  const int64_t block_bytes = 917504;
  const int blocks = 512;
  void* pool = DeviceAlloc(blocks * block_bytes);
  CUDA_OK(cudaMemset(pool, 0x3c, blocks * block_bytes));
  std::vector<int32_t> pairs;
  for (int i = 0; i < 64; ++i) pairs.push_back(i), pairs.push_back(256 + i);
  int32_t* d_pairs = static_cast<int32_t*>(DeviceAlloc(pairs.size() * 4));
  CUDA_OK(cudaMemcpy(d_pairs, pairs.data(), pairs.size() * 4, cudaMemcpyHostToDevice));
  us = MedianUs([&](int) { STATUS_OK(kernels::LaunchCopyBlocks(pool, block_bytes, d_pairs, 64, nullptr)); });
  Report("copy 64 blocks of 917,504 bytes", us, Fmt("%.0f GB/s", 2.0 * 64 * block_bytes / (us * 1e-6) / 1e9));
  for (void* p : {x, res, w, out, gu, act, static_cast<void*>(d_logits), static_cast<void*>(d_params),
                  static_cast<void*>(d_tok), pool, static_cast<void*>(d_pairs)}) {
    cudaFree(p);
  }
}

bool Wants(const std::string& only, const char* what) {
  return only.empty() || ("," + only + ",").find(std::string(",") + what + ",") != std::string::npos;
}

}  // namespace
}  // namespace memshare::bench

int main(int argc, char** argv) {
  using namespace memshare::bench;
  std::string only;
  bool sweep = false;
  int block_size = 16;
  std::vector<int> gemm_m = {1, 2, 4, 8, 16, 32, 48, 64, 128, 256};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      g_json = std::fopen(argv[++i], "w");
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!std::strcmp(argv[i], "--sweep")) {
      sweep = true;
    } else if (!std::strcmp(argv[i], "--block_size") && i + 1 < argc) {
      // KV block size of the decode attention section: 16 or 8.
      block_size = std::atoi(argv[++i]);
      if (block_size != 16 && block_size != 8) {
        std::fprintf(stderr, "--block_size: 16 or 8\n");
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--gemm_m") && i + 1 < argc) {
      // Token counts of the GEMM section (1 .. 256), comma-separated.
      gemm_m.clear();
      for (const char* c = argv[++i]; *c != '\0';) {
        char* end = nullptr;
        const long m = std::strtol(c, &end, 10);
        if (end == c || m < 1 || m > 256 || (*end != ',' && *end != '\0')) {
          std::fprintf(stderr, "--gemm_m: token counts 1 .. 256, comma-separated\n");
          return 2;
        }
        gemm_m.push_back(static_cast<int>(m));
        c = *end == ',' ? end + 1 : end;
      }
    } else {
      std::fprintf(stderr,
                   "usage: %s [--json FILE] [--only attn,prefill,gemm,dist,misc] [--sweep] "
                   "[--gemm_m 1,16,64] [--block_size 16|8]\n",
                   argv[0]);
      return 2;
    }
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, L2 %d MB, compute %d.%d\n", prop.name, g_sms,
              prop.l2CacheSize >> 20, prop.major, prop.minor);
  BenchCopy();
  if (Wants(only, "attn")) {
    for (int ctx : {1024, 4096, 16384}) {
      for (bool shared : {false, true}) BenchDecode(64, ctx, shared, sweep, false, block_size);
      BenchDecode(64, ctx, /*shared=*/true, sweep, /*views=*/true, block_size);
    }
    // Few sequences: the split over the sequence (flash-decoding) matters.
    BenchDecode(8, 16384, false, sweep, false, block_size);
    BenchDecode(1, 16384, false, sweep, false, block_size);
  }
  if (Wants(only, "prefill")) {
    for (int len : {512, 2048}) BenchPrefill(4, len);
    BenchPrefill(64, 512);
  }
  if (Wants(only, "gemm")) {
    CublasLtGemm::Options lt_options;
    lt_options.skinny = memshare::engine::cuda::SkinnyGemmMode::kOff;
    auto lt_only = CublasLtGemm::Create(lt_options);
    STATUS_OK(lt_only.status());
    auto gemm = CublasLtGemm::Create({});
    STATUS_OK(gemm.status());
    BenchGemm(**lt_only, **gemm, gemm_m);
  }
  if (Wants(only, "dist")) BenchDistance();
  if (Wants(only, "misc")) BenchMisc();
  std::printf("\n%-72s %12s  %s\n", "measurement", "median", "figure");
  for (const auto& r : g_rows) {
    std::printf("%-72s %10.2f us  %s\n", r.what.c_str(), r.us, r.figure.c_str());
  }
  if (g_json != nullptr) std::fclose(g_json);
  return 0;
}
