// GPU tests of kernels/attention (paged decode and prefill) and of
// kernels/attention_generic (the shapes those do not take) against a
// float64 CPU reference: RoPE applied to Q and K at their logical positions,
// GQA, causal masking, ragged sequences, block tables with physical blocks
// shared inside and across sequences, MemShare shifted views (a logical
// block reading a window over two earlier blocks), NaN in pool slots that no
// sequence owns, poisoned outputs.
#include "kernels/attention.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "kernels/attention_generic.h"
#include "kernels/kv_block_shape.h"
#include "kernels/rope.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

using testing::Compare;
using testing::DeviceBuffer;

struct Problem {
  int head_dim = 128;
  int q_heads = 28;
  int kv_heads = 4;
  int layers = 3;
  int layer = 1;
  int block = 16;          // tokens per KV block
  std::vector<int> ctx;    // keys per sequence
  std::vector<int> q_len;  // prefill: query tokens per sequence (empty: decode)
  bool llama3 = false;
  // Make about half of the full blocks past the second shifted views over
  // two earlier consecutive non-view entries of their sequence, at random
  // shifts 1..block - 1 (block_tables_hi / block_shifts).
  bool views = false;
  uint32_t seed = 1;
};

// Host copy of everything a launch reads, and the pool's device copy.
struct Fixture {
  Problem pr;
  KvBlockShape shape;
  int num_blocks = 0;
  int bt_stride = 0;
  int64_t q_stride = 0;
  int num_tokens = 0;
  std::vector<Bf16> pool;
  std::vector<int32_t> tables;
  // Empty unless pr.views: dense like `tables` (hi = own block, shift 0 for
  // entries that are no view).
  std::vector<int32_t> tables_hi;
  std::vector<int32_t> shifts;
  int view_entries = 0;
  std::vector<int32_t> cu_q;
  std::vector<Bf16> q;
  std::vector<float> inv_freq;
  int shared_entries = 0;  // table entries naming a block another entry also names
};

Fixture Build(const Problem& pr) {
  Fixture f;
  f.pr = pr;
  f.shape = {pr.layers, pr.kv_heads, pr.block, pr.head_dim};
  std::mt19937 rng(pr.seed);
  const int seqs = static_cast<int>(pr.ctx.size());
  int max_blocks = 1;
  for (int c : pr.ctx) max_blocks = std::max(max_blocks, (c + pr.block - 1) / pr.block);
  f.bt_stride = max_blocks + 3;
  // Physical ids 0..7 are shared: full blocks pick them half of the time,
  // from any sequence; every other block (and every partial last block) is
  // owned by one table entry.
  constexpr int kShared = 8;
  int next = kShared;
  f.tables.assign(size_t(seqs) * f.bt_stride, -1);
  std::vector<int> uses(kShared, 0);
  std::uniform_int_distribution<int> coin(0, 1), pick(0, kShared - 1);
  std::vector<std::pair<int, int>> partial;  // (physical block, valid slots)
  for (int s = 0; s < seqs; ++s) {
    const int nb = (pr.ctx[s] + pr.block - 1) / pr.block;
    for (int b = 0; b < nb; ++b) {
      const bool full = (b + 1) * pr.block <= pr.ctx[s];
      int id;
      if (full && coin(rng)) {
        id = pick(rng);
        ++uses[id];
      } else {
        id = next++;
        if (!full) partial.push_back({id, pr.ctx[s] - b * pr.block});
      }
      f.tables[size_t(s) * f.bt_stride + b] = id;
    }
  }
  for (int u : uses) f.shared_entries += u > 1 ? u : 0;
  if (pr.views) {
    f.tables_hi = f.tables;
    f.shifts.assign(f.tables.size(), 0);
    std::uniform_int_distribution<int> shift(1, pr.block - 1);
    for (int s = 0; s < seqs; ++s) {
      const int full = pr.ctx[s] / pr.block;
      int32_t* t = &f.tables[size_t(s) * f.bt_stride];
      int32_t* hi = &f.tables_hi[size_t(s) * f.bt_stride];
      int32_t* sh = &f.shifts[size_t(s) * f.bt_stride];
      for (int b = 2; b < full; ++b) {
        if (!coin(rng)) continue;
        const int k = std::uniform_int_distribution<int>(0, b - 2)(rng);
        if (sh[k] != 0 || sh[k + 1] != 0) continue;  // views never chain
        t[b] = t[k];
        hi[b] = t[k + 1];
        sh[b] = shift(rng);
        ++f.view_entries;
      }
    }
  }
  f.num_blocks = next;
  f.pool = testing::RandomBf16(size_t(f.num_blocks) * f.shape.BlockElements(), rng);
  // NaN in the slots past each sequence's end: they must never be read.
  const Bf16 nan{0xffff};
  for (auto [id, valid] : partial) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < pr.kv_heads; ++h) {
        for (int slot = valid; slot < pr.block; ++slot) {
          const int64_t off = id * f.shape.BlockElements() +
                              (int64_t{pr.layer} * 2 + kv) * f.shape.SlabElements() +
                              (int64_t{h} * pr.block + slot) * pr.head_dim;
          for (int d = 0; d < pr.head_dim; ++d) f.pool[off + d] = nan;
        }
      }
    }
  }
  // Queries: decode has one row per sequence, prefill q_len rows each. The
  // row stride is that of a fused QKV buffer, as the backend reads it.
  f.cu_q.assign(1, 0);
  for (int s = 0; s < seqs; ++s)
    f.cu_q.push_back(f.cu_q.back() + (pr.q_len.empty() ? 1 : pr.q_len[s]));
  f.num_tokens = f.cu_q.back();
  f.q_stride = int64_t{pr.q_heads + 2 * pr.kv_heads} * pr.head_dim;
  f.q = testing::RandomBf16(size_t(f.num_tokens) * f.q_stride, rng);
  RopeConfig rc;
  rc.head_dim = pr.head_dim;
  rc.theta = pr.llama3 ? 500000. : 1000000.;
  rc.llama3_scaling = pr.llama3;
  f.inv_freq = *RopeInvFreq(rc);
  return f;
}

// out[token][head][d] in float64; rope_k = false leaves K unrotated and
// views = false reads every view's own lo block unshifted (the negative
// controls).
std::vector<double> Reference(const Fixture& f, bool rope_k = true, bool views = true) {
  const Problem& pr = f.pr;
  const int D = pr.head_dim;
  const int group = pr.q_heads / pr.kv_heads;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> out(size_t(f.num_tokens) * pr.q_heads * D, 0.0);
  auto rotate = [&](std::vector<double>& v, double pos) {
    for (int i = 0; i < D / 2; ++i) {
      const double a = pos * double(f.inv_freq[i]);
      const double c = std::cos(a), s = std::sin(a);
      const double x = v[i], y = v[i + D / 2];
      v[i] = x * c - y * s;
      v[i + D / 2] = y * c + x * s;
    }
  };
  for (size_t s = 0; s < pr.ctx.size(); ++s) {
    const int ctx = pr.ctx[s];
    if (ctx <= 0) continue;
    const int ql = f.cu_q[s + 1] - f.cu_q[s];
    // K (rotated) and V of every key, per kv head.
    std::vector<std::vector<double>> keys(size_t(pr.kv_heads) * ctx), vals(keys.size());
    for (int j = 0; j < ctx; ++j) {
      const size_t entry = s * f.bt_stride + j / pr.block;
      int64_t phys = f.tables[entry];
      int slot = j % pr.block;
      if (views && !f.shifts.empty() && f.shifts[entry] != 0) {
        slot += f.shifts[entry];
        if (slot >= pr.block) {
          slot -= pr.block;
          phys = f.tables_hi[entry];
        }
      }
      for (int h = 0; h < pr.kv_heads; ++h) {
        std::vector<double> k(D), v(D);
        for (int kv = 0; kv < 2; ++kv) {
          const int64_t off = phys * f.shape.BlockElements() +
                              (int64_t{pr.layer} * 2 + kv) * f.shape.SlabElements() +
                              (int64_t{h} * pr.block + slot) * D;
          for (int d = 0; d < D; ++d) (kv == 0 ? k : v)[d] = Bf16ToFloat(f.pool[off + d]);
        }
        if (rope_k) rotate(k, j);
        keys[size_t(h) * ctx + j] = std::move(k);
        vals[size_t(h) * ctx + j] = std::move(v);
      }
    }
    for (int t = 0; t < ql; ++t) {
      const int token = f.cu_q[s] + t;
      const int pos = ctx - ql + t;
      for (int h = 0; h < pr.q_heads; ++h) {
        const int kvh = h / group;
        std::vector<double> q(D);
        for (int d = 0; d < D; ++d)
          q[d] = Bf16ToFloat(f.q[token * f.q_stride + int64_t{h} * D + d]);
        rotate(q, pos);
        std::vector<double> p(pos + 1);
        double mx = -INFINITY;
        for (int j = 0; j <= pos; ++j) {
          double dot = 0;
          const auto& k = keys[size_t(kvh) * ctx + j];
          for (int d = 0; d < D; ++d) dot += q[d] * k[d];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        double* o = &out[(size_t(token) * pr.q_heads + h) * D];
        for (int j = 0; j <= pos; ++j) {
          const auto& v = vals[size_t(kvh) * ctx + j];
          for (int d = 0; d < D; ++d) o[d] += p[j] / sum * v[d];
        }
      }
    }
  }
  return out;
}

struct DeviceInputs {
  DeviceBuffer<Bf16> pool, q, out;
  DeviceBuffer<int32_t> tables, tables_hi, shifts, ctx, cu_q;
  DeviceBuffer<float> inv_freq;
  PagedAttentionArgs args;
};

void Upload(const Fixture& f, DeviceInputs& d) {
  d.pool.Resize(f.pool.size());
  d.pool.Upload(f.pool);
  d.q.Resize(f.q.size());
  d.q.Upload(f.q);
  d.out.Resize(size_t(f.num_tokens) * f.pr.q_heads * f.pr.head_dim);
  d.tables.Resize(f.tables.size());
  d.tables.Upload(f.tables);
  d.ctx.Resize(f.pr.ctx.size());
  d.ctx.Upload(f.pr.ctx);
  d.cu_q.Resize(f.cu_q.size());
  d.cu_q.Upload(f.cu_q);
  d.inv_freq.Resize(f.inv_freq.size());
  d.inv_freq.Upload(f.inv_freq);
  PagedAttentionArgs& a = d.args;
  a.q = d.q.get();
  a.q_row_stride = f.q_stride;
  a.num_q_heads = f.pr.q_heads;
  a.kv_pool = d.pool.get();
  a.shape = f.shape;
  a.layer = f.pr.layer;
  a.block_tables = d.tables.get();
  a.block_table_stride = f.bt_stride;
  if (!f.shifts.empty()) {
    d.tables_hi.Resize(f.tables_hi.size());
    d.tables_hi.Upload(f.tables_hi);
    d.shifts.Resize(f.shifts.size());
    d.shifts.Upload(f.shifts);
    a.block_tables_hi = d.tables_hi.get();
    a.block_shifts = d.shifts.get();
  }
  a.context_lens = d.ctx.get();
  a.rope_inv_freq = d.inv_freq.get();
  a.softmax_scale = 1.f / std::sqrt(float(f.pr.head_dim));
  a.out = d.out.get();
}

void ExpectMatches(const Fixture& f, const std::vector<Bf16>& got_bf16, double tol = 1e-2) {
  const std::vector<double> got = testing::ToDouble(got_bf16);
  const std::vector<double> ref = Reference(f);
  const testing::ErrorStats e = Compare(got, ref);
  EXPECT_EQ(e.nan_count, 0) << "unwritten or NaN outputs";
  EXPECT_LT(e.rel_l2, tol);
  // The check can fail: K left unrotated is far off, and so are the views
  // read as plain blocks.
  EXPECT_GT(Compare(got, Reference(f, /*rope_k=*/false)).rel_l2, 0.1);
  if (f.view_entries > 0) {
    // Per sequence holding views (outputs of short sequences are larger and
    // would hide the others in one global norm).
    const std::vector<double> plain = Reference(f, true, /*views=*/false);
    const size_t row = size_t(f.pr.q_heads) * f.pr.head_dim;
    int checked = 0;
    for (size_t s = 0; s < f.pr.ctx.size(); ++s) {
      const size_t first = s * f.bt_stride;
      const int blocks = (f.pr.ctx[s] + f.pr.block - 1) / f.pr.block;
      if (f.cu_q[s + 1] == f.cu_q[s] ||
          std::all_of(f.shifts.begin() + first, f.shifts.begin() + first + blocks,
                      [](int32_t v) { return v == 0; })) {
        continue;
      }
      const auto b = got.begin() + f.cu_q[s] * row, e = got.begin() + f.cu_q[s + 1] * row;
      const auto pb = plain.begin() + f.cu_q[s] * row, pe = plain.begin() + f.cu_q[s + 1] * row;
      EXPECT_GT(Compare({b, e}, {pb, pe}).rel_l2, 0.05) << "seq " << s;
      ++checked;
    }
    EXPECT_GT(checked, 0);
  }
  // Padding sequences give zero rows.
  const int row = f.pr.q_heads * f.pr.head_dim;
  for (size_t s = 0; s < f.pr.ctx.size(); ++s) {
    if (f.pr.ctx[s] > 0) continue;
    for (int t = f.cu_q[s]; t < f.cu_q[s + 1]; ++t) {
      for (int i = 0; i < row; ++i) ASSERT_EQ(got[size_t(t) * row + i], 0.0) << "seq " << s;
    }
  }
  std::printf("  rel_l2 %.2e over %lld values, %d shared table entries, %d shifted views\n",
              e.rel_l2, static_cast<long long>(e.count), f.shared_entries, f.view_entries);
}

int NumSms() {
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return sms;
}

// fused: the step's K and V are not in the pool (their slots hold NaN where
// no other table entry reads the block) but in the K and V columns of the
// query rows, and the launch writes them (PagedAttentionArgs::new_slots).
void RunDecode(const Problem& pr, const DecodeSplit* forced = nullptr, bool fused = false) {
  const Fixture f = Build(pr);
  ASSERT_GT(f.shared_entries, 0);
  if (pr.views) {
    ASSERT_GT(f.view_entries, 0);
  }
  DeviceInputs d;
  Upload(f, d);
  DeviceBuffer<int32_t> new_slots;
  int poisoned_rows = 0;
  if (fused) {
    const int D = pr.head_dim;
    std::vector<Bf16> q = f.q, pool = f.pool;
    std::vector<int32_t> slots(pr.ctx.size(), -1);
    std::vector<int> uses(f.num_blocks, 0);
    for (int32_t id : f.tables) {
      if (id >= 0) ++uses[id];
    }
    for (size_t s = 0; s < pr.ctx.size(); ++s) {
      const int ctx = pr.ctx[s];
      if (ctx <= 0) continue;
      const int32_t phys = f.tables[s * f.bt_stride + (ctx - 1) / pr.block];
      const int row = (ctx - 1) % pr.block;
      slots[s] = phys * pr.block + row;
      for (int kv = 0; kv < 2; ++kv) {
        for (int h = 0; h < pr.kv_heads; ++h) {
          const int64_t off = phys * f.shape.BlockElements() +
                              (int64_t{pr.layer} * 2 + kv) * f.shape.SlabElements() +
                              (int64_t{h} * pr.block + row) * D;
          const int64_t col = int64_t{pr.q_heads + kv * pr.kv_heads + h} * D;
          for (int i = 0; i < D; ++i) q[s * f.q_stride + col + i] = f.pool[off + i];
          if (uses[phys] == 1) {
            for (int i = 0; i < D; ++i) pool[off + i] = Bf16{0xffff};
            ++poisoned_rows;
          }
        }
      }
    }
    ASSERT_GT(poisoned_rows, 0);
    d.q.Upload(q);
    d.pool.Upload(pool);
    new_slots.Resize(slots.size());
    new_slots.Upload(slots);
    d.args.new_slots = new_slots.get();
    d.args.new_k = d.q.get() + int64_t{pr.q_heads} * D;
    d.args.new_v = d.q.get() + int64_t{pr.q_heads + pr.kv_heads} * D;
  }
  int max_ctx = 0;
  for (int c : pr.ctx) max_ctx = std::max(max_ctx, c);
  const DecodeSplit split =
      forced ? *forced : ChooseDecodeSplit(int(pr.ctx.size()), pr.kv_heads, max_ctx, NumSms());
  DeviceBuffer<uint8_t> ws(std::max<size_t>(
      16, DecodeAttentionWorkspaceBytes(int(pr.ctx.size()), pr.q_heads, pr.head_dim, split)));
  ws.Poison();
  d.out.Poison();
  std::printf("  split %d x %d blocks\n", split.num_splits, split.blocks_per_split);
  ASSERT_TRUE(
      LaunchPagedDecodeAttention(d.args, int(pr.ctx.size()), split, ws.get(), nullptr).ok());
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ExpectMatches(f, d.out.Download());
  if (fused) {
    // Every poisoned row now holds its K or V again; nothing else changed.
    const std::vector<Bf16> pool = d.pool.Download();
    int64_t differ = 0;
    for (size_t i = 0; i < pool.size(); ++i) differ += pool[i].bits != f.pool[i].bits;
    EXPECT_EQ(differ, 0) << "of " << poisoned_rows << " rows written";
  }
}

void RunPrefill(const Problem& pr) {
  const Fixture f = Build(pr);
  if (pr.views) {
    ASSERT_GT(f.view_entries, 0);
  }
  DeviceInputs d;
  Upload(f, d);
  d.out.Poison();
  const int max_q = *std::max_element(pr.q_len.begin(), pr.q_len.end());
  ASSERT_TRUE(
      LaunchPagedPrefillAttention(d.args, int(pr.ctx.size()), d.cu_q.get(), max_q, nullptr).ok());
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ExpectMatches(f, d.out.Download());
}

Problem Ragged(int head_dim, int q_heads, int kv_heads, uint32_t seed) {
  Problem p;
  p.head_dim = head_dim;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.seed = seed;
  // 0 is a padding sequence.
  p.ctx = {1, 15, 16, 17, 100, 0, 700, 2000, 33, 4100};
  return p;
}

TEST(PagedDecodeAttentionTest, SevenBShapeAutoSplit) { RunDecode(Ragged(128, 28, 4, 1)); }

TEST(PagedDecodeAttentionTest, SevenBShapeNoSplit) {
  const DecodeSplit one{1, 1 << 20};
  RunDecode(Ragged(128, 28, 4, 2), &one);
}

TEST(PagedDecodeAttentionTest, ManySmallSplits) {
  const DecodeSplit many{300, 1};
  RunDecode(Ragged(128, 28, 4, 3), &many);
}

// The step's K/V written by the attention kernel itself (the CUDA backend's
// decode steps): one CTA per (sequence, KV head), many small splits (the
// last block in a late split), and head_dim 64 with its own chunk count.
TEST(PagedDecodeAttentionTest, FusedKvWriteNoSplit) {
  const DecodeSplit one{1, 1 << 20};
  RunDecode(Ragged(128, 28, 4, 21), &one, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, FusedKvWriteAutoSplit) {
  RunDecode(Ragged(128, 28, 4, 22), nullptr, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, FusedKvWriteManySmallSplits) {
  const DecodeSplit many{300, 1};
  RunDecode(Ragged(128, 28, 4, 23), &many, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, FusedKvWriteHeadDim64) {
  const DecodeSplit s{3, 20};
  RunDecode(Ragged(64, 8, 2, 24), &s, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, FusedKvWriteIsDecodeOnly) {
  const Fixture f = Build(Ragged(128, 28, 4, 25));
  DeviceInputs d;
  Upload(f, d);
  DeviceBuffer<int32_t> slots(std::vector<int32_t>(f.pr.ctx.size(), 0));
  d.args.new_slots = slots.get();
  d.args.new_k = d.q.get();
  d.args.new_v = d.q.get();
  EXPECT_EQ(LaunchPagedPrefillAttention(d.args, int(f.pr.ctx.size()), d.cu_q.get(), 1, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  d.args.new_v = d.q.get() + 1;  // misaligned
  EXPECT_EQ(LaunchPagedDecodeAttention(d.args, int(f.pr.ctx.size()), {1, 1 << 20}, nullptr,
                                       nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PagedDecodeAttentionTest, HeadDim64Mha) {
  Problem p = Ragged(64, 8, 8, 4);
  p.llama3 = true;
  RunDecode(p);
}

TEST(PagedDecodeAttentionTest, SixteenHeadsPerKvHead) {
  const DecodeSplit s{4, 40};
  RunDecode(Ragged(128, 32, 2, 5), &s);
}

TEST(PagedDecodeAttentionTest, HeadDim64GroupFourLlama3) {
  Problem p = Ragged(64, 16, 4, 6);
  p.llama3 = true;
  p.layers = 1;
  p.layer = 0;
  RunDecode(p);
}

Problem WithViews(Problem p) {
  p.views = true;
  return p;
}

TEST(PagedDecodeAttentionTest, ShiftedViewsAutoSplit) {
  RunDecode(WithViews(Ragged(128, 28, 4, 21)));
}

TEST(PagedDecodeAttentionTest, ShiftedViewsNoSplit) {
  const DecodeSplit one{1, 1 << 20};
  RunDecode(WithViews(Ragged(128, 28, 4, 22)), &one);
}

TEST(PagedDecodeAttentionTest, ShiftedViewsManySmallSplits) {
  const DecodeSplit many{300, 1};
  RunDecode(WithViews(Ragged(128, 28, 4, 23)), &many);
}

TEST(PagedDecodeAttentionTest, ShiftedViewsHeadDim64SixteenHeadsPerKvHead) {
  Problem p = WithViews(Ragged(64, 32, 2, 24));
  p.llama3 = true;
  RunDecode(p);
}

// Blocks of 8 tokens (two per tile of the kernel): plain, with the fused
// K/V write, with shifted views (shifts 1..7), split and not; head_dim 64
// with the tiny reasoner's 4 query and 2 KV heads.
Problem Block8(Problem p) {
  p.block = 8;
  return p;
}

TEST(PagedDecodeAttentionTest, Block8AutoSplit) { RunDecode(Block8(Ragged(128, 28, 4, 41))); }

TEST(PagedDecodeAttentionTest, Block8ManySmallSplits) {
  const DecodeSplit many{300, 1};
  RunDecode(Block8(Ragged(128, 28, 4, 42)), &many);
}

TEST(PagedDecodeAttentionTest, Block8FusedKvWrite) {
  RunDecode(Block8(Ragged(128, 28, 4, 43)), nullptr, /*fused=*/true);
  const DecodeSplit many{300, 1};
  RunDecode(Block8(Ragged(64, 4, 2, 44)), &many, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, Block8ShiftedViews) {
  RunDecode(Block8(WithViews(Ragged(128, 28, 4, 45))));
  const DecodeSplit one{1, 1 << 20};
  RunDecode(Block8(WithViews(Ragged(64, 4, 2, 46))), &one);
  const DecodeSplit many{300, 1};
  RunDecode(Block8(WithViews(Ragged(64, 32, 2, 47))), &many, /*fused=*/true);
}

TEST(PagedDecodeAttentionTest, RejectsHalfTheViewArrays) {
  PagedAttentionArgs a;
  a.shape = {1, 4, 16, 128};
  a.num_q_heads = 28;
  a.q_row_stride = 36 * 128;
  a.block_table_stride = 1;
  a.softmax_scale = 1.f;
  int32_t dummy = 0;
  a.block_shifts = &dummy;  // without block_tables_hi
  const absl::Status d = LaunchPagedDecodeAttention(a, 1, {1, 1}, nullptr, nullptr);
  EXPECT_EQ(d.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.message().find("block_tables_hi"), absl::string_view::npos) << d;
  a.block_shifts = nullptr;
  a.block_tables_hi = &dummy;
  EXPECT_EQ(LaunchPagedPrefillAttention(a, 1, nullptr, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PagedDecodeAttentionTest, RejectsUnsupportedShapes) {
  PagedAttentionArgs a;
  a.shape = {1, 4, 16, 96};
  a.num_q_heads = 28;
  EXPECT_EQ(LaunchPagedDecodeAttention(a, 1, {1, 1}, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  a.shape = {1, 4, 32, 128};
  EXPECT_EQ(LaunchPagedDecodeAttention(a, 1, {1, 1}, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  a.shape = {1, 4, 4, 128};
  EXPECT_EQ(LaunchPagedPrefillAttention(a, 1, nullptr, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  a.shape = {1, 4, 16, 128};
  a.num_q_heads = 30;  // not a multiple of kv_heads
  EXPECT_EQ(LaunchPagedPrefillAttention(a, 1, nullptr, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

Problem Chunks(int head_dim, int q_heads, int kv_heads, uint32_t seed) {
  Problem p;
  p.head_dim = head_dim;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.seed = seed;
  // (keys, query tokens): whole prompts, chunks after a cached prefix, a
  // decode-like single token, an empty chunk, a padding sequence.
  p.ctx = {37, 100, 300, 17, 1000, 5, 0, 129};
  p.q_len = {37, 1, 64, 5, 200, 0, 0, 129};
  return p;
}

TEST(PagedPrefillAttentionTest, SevenBShape) { RunPrefill(Chunks(128, 28, 4, 11)); }

TEST(PagedPrefillAttentionTest, HeadDim64Llama3) {
  Problem p = Chunks(64, 32, 8, 12);
  p.llama3 = true;
  RunPrefill(p);
}

TEST(PagedPrefillAttentionTest, ShiftedViews) { RunPrefill(WithViews(Chunks(128, 28, 4, 31))); }

TEST(PagedPrefillAttentionTest, ShiftedViewsHeadDim64WideGroups) {
  Problem p = WithViews(Chunks(64, 16, 1, 32));
  p.llama3 = true;
  RunPrefill(p);
}

TEST(PagedPrefillAttentionTest, Block8) {
  RunPrefill(Block8(Chunks(128, 28, 4, 51)));
  RunPrefill(Block8(WithViews(Chunks(128, 28, 4, 52))));
  RunPrefill(Block8(WithViews(Chunks(64, 4, 2, 53))));
}

TEST(PagedPrefillAttentionTest, MhaAndWideGroups) {
  RunPrefill(Chunks(128, 4, 4, 13));
  RunPrefill(Chunks(64, 16, 1, 14));
}

// The generic kernel on the same fixtures (decode: one query row per
// sequence; prefill: the chunks), at the head sizes of the golden test
// checkpoints, with and without shifted views.
void RunGeneric(const Problem& pr) {
  const Fixture f = Build(pr);
  if (pr.views) {
    ASSERT_GT(f.view_entries, 0);
  }
  DeviceInputs d;
  Upload(f, d);
  d.out.Poison();
  const int max_q = pr.q_len.empty() ? 1 : *std::max_element(pr.q_len.begin(), pr.q_len.end());
  ASSERT_TRUE(
      LaunchPagedAttentionGeneric(d.args, int(pr.ctx.size()), d.cu_q.get(), max_q, nullptr).ok());
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ExpectMatches(f, d.out.Download());
}

TEST(GenericAttentionTest, DecodeHeadDim16) { RunGeneric(Ragged(16, 4, 2, 41)); }

TEST(GenericAttentionTest, ShiftedViewsDecodeHeadDim16) {
  RunGeneric(WithViews(Ragged(16, 4, 2, 42)));
}

TEST(GenericAttentionTest, ShiftedViewsDecodeHeadDim32OneKvHead) {
  RunGeneric(WithViews(Ragged(32, 4, 1, 43)));
}

TEST(GenericAttentionTest, ShiftedViewsPrefillHeadDim16) {
  RunGeneric(WithViews(Chunks(16, 4, 2, 44)));
}

TEST(GenericAttentionTest, ShiftedViewsPrefillHeadDim32Mha) {
  Problem p = WithViews(Chunks(32, 4, 4, 45));
  p.llama3 = true;
  RunGeneric(p);
}

TEST(GenericAttentionTest, RejectsHalfTheViewArrays) {
  PagedAttentionArgs a;
  a.shape = {1, 2, 16, 16};
  a.num_q_heads = 4;
  a.q_row_stride = 8 * 16;
  a.block_table_stride = 1;
  a.softmax_scale = 1.f;
  int32_t dummy = 0;
  a.block_shifts = &dummy;  // without block_tables_hi
  const absl::Status st = LaunchPagedAttentionGeneric(a, 1, nullptr, 1, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("block_tables_hi"), absl::string_view::npos) << st;
}

}  // namespace
}  // namespace memshare::kernels
