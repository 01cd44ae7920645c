#include "engine/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cpu/kernels.h"
#include "engine/model/safetensors_reader.h"
#include "engine/plan_validation.h"

namespace memshare::engine::cpu {
namespace {

int64_t PhysicalMemoryBytes() {
  return static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
}

absl::StatusOr<std::shared_ptr<const model::ModelWeights>> LoadWeights(
    const CpuBackend::Options& o) {
  if (o.load_format == model::LoadFormat::kDummy) {
    model::ModelConfig config;
    if (o.config.has_value()) {
      config = *o.config;
    } else if (!o.model_dir.empty()) {
      absl::StatusOr<model::ModelConfig> c = model::ModelConfig::FromModelDir(o.model_dir);
      if (!c.ok()) return c.status();
      config = *c;
    } else {
      return absl::InvalidArgumentError("dummy weights need a config or a model_dir");
    }
    absl::StatusOr<std::unique_ptr<model::ModelWeights>> w =
        model::ModelWeights::Dummy(config, o.dummy);
    if (!w.ok()) return w.status();
    return std::shared_ptr<const model::ModelWeights>(*std::move(w));
  }
  if (o.model_dir.empty()) return absl::InvalidArgumentError("model_dir is empty");
  absl::StatusOr<model::ModelConfig> c = model::ModelConfig::FromModelDir(o.model_dir);
  if (!c.ok()) return c.status();
  absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> r =
      model::SafetensorsReader::OpenDir(o.model_dir);
  if (!r.ok()) return r.status();
  absl::StatusOr<std::unique_ptr<model::ModelWeights>> w = model::ModelWeights::Load(*c, **r);
  if (!w.ok()) return w.status();
  return std::shared_ptr<const model::ModelWeights>(*std::move(w));
}

}  // namespace

// Scratch of one Forward call.
struct CpuBackend::Step {
  struct Seq {
    const SequenceChunk* chunk = nullptr;
    int64_t row0 = 0;   // first row of its tokens in the batch
    int64_t n = 0;      // tokens in this step
    int64_t start = 0;  // position of the first
    int64_t end() const { return start + n; }
    int64_t kv_offset = 0;  // into keys/values: [kv_heads][end()][head_dim]
  };
  std::vector<Seq> seqs;
  int64_t rows = 0;
  std::vector<int32_t> row_seq;  // index into seqs
  std::vector<int64_t> row_pos;  // position of the row's token
  // Activations, one row per token.
  std::vector<float> x;     // [rows][hidden] residual stream
  std::vector<float> h;     // [rows][hidden] normed
  std::vector<float> qkv;   // [rows][q_local + 2 kv_local]
  std::vector<float> attn;  // [rows][q_local]
  std::vector<float> tmp;   // [rows][hidden]
  std::vector<float> gu;    // [rows][2 inter]
  std::vector<float> act;   // [rows][inter]
  // Keys (rotated for their positions) and values of the whole context of
  // every sequence, read back from the pool for the current layer.
  std::vector<float> keys;
  std::vector<float> values;
};

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const Options& options) {
  absl::StatusOr<std::shared_ptr<const model::ModelWeights>> w = LoadWeights(options);
  if (!w.ok()) return w.status();
  return Create(*std::move(w), options);
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(
    std::shared_ptr<const model::ModelWeights> weights, const Options& o) {
  if (weights == nullptr) return absl::InvalidArgumentError("no weights");
  const model::ModelConfig& c = weights->config();
  if (weights->tp().size != 1) {
    return absl::UnimplementedError("the CPU backend runs tensor parallel size 1 only");
  }
  if (o.num_blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_blocks = ", o.num_blocks, ": must be >= 1"));
  }
  if (o.block_size < 1 || o.block_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size = ", o.block_size, ": must be 1 .. 4096"));
  }
  if (o.num_layer_groups < 1 || o.num_layer_groups > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("num_layer_groups = ", o.num_layer_groups,
                                                   ": must be 1 .. num_layers (", c.num_layers,
                                                   ")"));
  }
  if (o.num_threads < 1 || o.num_threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads = ", o.num_threads, ": must be 1 .. 1024"));
  }
  KvCacheSpec spec;
  spec.num_layer_groups = o.num_layer_groups;
  spec.group_layer_begin = SplitLayers(static_cast<int32_t>(c.num_layers), o.num_layer_groups);
  spec.num_blocks = o.num_blocks;
  spec.block_size = o.block_size;
  spec.kv_heads_local = static_cast<int32_t>(weights->kv_heads_local());
  spec.head_dim = static_cast<int32_t>(c.head_dim);
  double pool_bytes = 0;  // in double: no overflow for any option values
  for (int g = 0; g < spec.num_layer_groups; ++g) {
    pool_bytes += static_cast<double>(spec.BlockBytes(g)) * o.num_blocks;
  }
  if (pool_bytes > static_cast<double>(PhysicalMemoryBytes()) / 2) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV pools of ", o.num_blocks, " blocks need ", static_cast<int64_t>(pool_bytes / (1 << 20)),
        " MiB, more than half of this machine's memory"));
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(std::move(weights), o, std::move(spec)));
}

CpuBackend::CpuBackend(std::shared_ptr<const model::ModelWeights> weights, const Options& options,
                       KvCacheSpec spec)
    : weights_(std::move(weights)), spec_(std::move(spec)), pool_(options.num_threads) {
  for (int g = 0; g < spec_.num_layer_groups; ++g) {
    for (int32_t l = spec_.group_layer_begin[g]; l < spec_.group_layer_begin[g + 1]; ++l) {
      group_of_layer_.push_back(g);
    }
    pools_.emplace_back(static_cast<size_t>(spec_.BlockBytes(g) / 2) * spec_.num_blocks);
  }
  inv_freq_ = config().RopeInvFreq();
}

int64_t CpuBackend::SlabOffset(int group, int64_t block, int64_t layer_in_group, int kv,
                               int64_t head) const {
  const int64_t layers = spec_.LayersInGroup(group);
  const int64_t heads = spec_.kv_heads_local;
  return (((block * layers + layer_in_group) * 2 + kv) * heads + head) * spec_.block_size *
         spec_.head_dim;
}

void CpuBackend::EnsureRope(int64_t positions) {
  if (positions <= rope_positions_) return;
  const int64_t half = config().head_dim / 2;
  rope_cos_.resize(positions * half);
  rope_sin_.resize(positions * half);
  for (int64_t p = rope_positions_; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // float32 angle, as transformers computes it.
      const float angle = static_cast<float>(p) * inv_freq_[i];
      rope_cos_[p * half + i] = std::cos(angle);
      rope_sin_[p * half + i] = std::sin(angle);
    }
  }
  rope_positions_ = positions;
}

absl::Status CpuBackend::Validate(const StepPlan& plan) const {
  const model::ModelConfig& c = config();
  PlanLimits limits;
  limits.vocab_size = c.vocab_size;
  limits.max_positions = c.max_position_embeddings;
  limits.max_positions_name = "max_position_embeddings";
  limits.sliding_window = c.sliding_window;
  limits.backend_name = "the CPU backend";
  return ValidatePlan(plan, spec_, limits);
}

absl::Status CpuBackend::Forward(const StepPlan& plan, StepOutput* output) {
  absl::Status valid = Validate(plan);
  if (!valid.ok()) return valid;
  const model::ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  const int64_t V = c.vocab_size;

  Step step;
  int64_t kv_floats = 0;
  int64_t max_end = 0;
  for (const SequenceChunk& s : plan.sequences) {
    Step::Seq q;
    q.chunk = &s;
    q.row0 = step.rows;
    q.n = static_cast<int64_t>(s.token_ids.size());
    q.start = s.start_pos;
    q.kv_offset = kv_floats;
    kv_floats += spec_.kv_heads_local * q.end() * c.head_dim;
    max_end = std::max(max_end, q.end());
    for (int64_t t = 0; t < q.n; ++t) {
      step.row_seq.push_back(static_cast<int32_t>(step.seqs.size()));
      step.row_pos.push_back(q.start + t);
    }
    step.rows += q.n;
    step.seqs.push_back(q);
  }
  output->Clear();
  output->vocab_size = static_cast<int32_t>(V);
  if (step.rows == 0) return absl::OkStatus();

  EnsureRope(max_end);
  const int64_t T = step.rows;
  const int64_t q_local = weights_->heads_local() * c.head_dim;
  const int64_t kv_local = weights_->kv_heads_local() * c.head_dim;
  const int64_t inter = weights_->intermediate_local();
  step.x.resize(T * H);
  step.h.resize(T * H);
  step.qkv.resize(T * (q_local + 2 * kv_local));
  step.attn.resize(T * q_local);
  step.tmp.resize(T * H);
  step.gu.resize(T * 2 * inter);
  step.act.resize(T * inter);
  step.keys.resize(kv_floats);
  step.values.resize(kv_floats);

  const std::vector<float>& emb = weights_->embedding();
  for (int64_t r = 0; r < T; ++r) {
    const Step::Seq& s = step.seqs[step.row_seq[r]];
    const int32_t token = s.chunk->token_ids[r - s.row0];
    std::memcpy(&step.x[r * H], &emb[token * H], H * sizeof(float));
  }
  for (int64_t l = 0; l < c.num_layers; ++l) RunLayer(l, step);

  // Final norm and LM head, only for the rows asked for.
  std::vector<int64_t> last_rows;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    if (!step.seqs[i].chunk->compute_logits) continue;
    output->rows.push_back(static_cast<int32_t>(i));
    last_rows.push_back(step.seqs[i].row0 + step.seqs[i].n - 1);
  }
  const int64_t R = static_cast<int64_t>(last_rows.size());
  if (R == 0) return absl::OkStatus();
  std::vector<float> normed(R * H);
  for (int64_t i = 0; i < R; ++i) {
    RmsNorm(&step.x[last_rows[i] * H], weights_->final_norm().data(), H,
            static_cast<float>(c.rms_norm_eps), &normed[i * H]);
  }
  output->logits.resize(R * V);
  MatMulTransposed(normed.data(), R, H, weights_->lm_head().data(), V, output->logits.data(),
                   &pool_);
  return absl::OkStatus();
}

void CpuBackend::RunLayer(int64_t l, Step& step) {
  const model::ModelConfig& c = config();
  const model::LayerWeights& L = weights_->layer(l);
  const int64_t T = step.rows;
  const int64_t H = c.hidden_size;
  const int64_t d = c.head_dim;
  const int64_t heads = weights_->heads_local();
  const int64_t kv_heads = weights_->kv_heads_local();
  const int64_t q_local = heads * d;
  const int64_t kv_local = kv_heads * d;
  const int64_t qkv_cols = q_local + 2 * kv_local;
  const int64_t inter = weights_->intermediate_local();
  const float eps = static_cast<float>(c.rms_norm_eps);

  for (int64_t r = 0; r < T; ++r) {
    RmsNorm(&step.x[r * H], L.input_norm.data(), H, eps, &step.h[r * H]);
  }
  MatMulTransposed(step.h.data(), T, H, L.qkv.data(), qkv_cols, step.qkv.data(), &pool_);
  for (int64_t r = 0; r < T; ++r) {
    float* row = &step.qkv[r * qkv_cols];
    if (!L.qkv_bias.empty()) {
      for (int64_t j = 0; j < qkv_cols; ++j) row[j] += L.qkv_bias[j];
    }
    if (!L.q_norm.empty()) {
      for (int64_t hh = 0; hh < heads; ++hh) {
        RmsNorm(row + hh * d, L.q_norm.data(), d, eps, row + hh * d);
      }
      for (int64_t kh = 0; kh < kv_heads; ++kh) {
        RmsNorm(row + q_local + kh * d, L.k_norm.data(), d, eps, row + q_local + kh * d);
      }
    }
  }

  // K (before RoPE) and V of every token into its slot.
  const int g = group_of_layer_[l];
  const int64_t li = l - spec_.group_layer_begin[g];
  const int64_t bs = spec_.block_size;
  Bf16* pool = pools_[g].data();
  for (int64_t r = 0; r < T; ++r) {
    const Step::Seq& s = step.seqs[step.row_seq[r]];
    const int64_t p = step.row_pos[r];
    const int64_t block = s.chunk->block_tables[g][p / bs];
    const float* row = &step.qkv[r * qkv_cols];
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      Bf16* k = pool + SlabOffset(g, block, li, 0, kh) + (p % bs) * d;
      Bf16* v = pool + SlabOffset(g, block, li, 1, kh) + (p % bs) * d;
      for (int64_t i = 0; i < d; ++i) {
        k[i] = FloatToBf16(row[q_local + kh * d + i]);
        v[i] = FloatToBf16(row[q_local + kv_local + kh * d + i]);
      }
    }
  }

  Attention(l, step);

  MatMulTransposed(step.attn.data(), T, q_local, L.o_proj.data(), H, step.tmp.data(), &pool_);
  for (int64_t i = 0; i < T * H; ++i) step.x[i] += step.tmp[i];
  for (int64_t r = 0; r < T; ++r) {
    RmsNorm(&step.x[r * H], L.post_attention_norm.data(), H, eps, &step.h[r * H]);
  }
  MatMulTransposed(step.h.data(), T, H, L.gate_up.data(), 2 * inter, step.gu.data(), &pool_);
  for (int64_t r = 0; r < T; ++r) {
    SiluMul(&step.gu[r * 2 * inter], &step.gu[r * 2 * inter + inter], inter, &step.act[r * inter]);
  }
  MatMulTransposed(step.act.data(), T, inter, L.down.data(), H, step.tmp.data(), &pool_);
  for (int64_t i = 0; i < T * H; ++i) step.x[i] += step.tmp[i];
}

void CpuBackend::Attention(int64_t l, Step& step) {
  const model::ModelConfig& c = config();
  const int64_t d = c.head_dim;
  const int64_t half = d / 2;
  const int64_t heads = weights_->heads_local();
  const int64_t kv_heads = weights_->kv_heads_local();
  const int64_t group = heads / kv_heads;
  const int64_t q_local = heads * d;
  const int64_t qkv_cols = q_local + 2 * kv_heads * d;
  const int g = group_of_layer_[l];
  const int64_t li = l - spec_.group_layer_begin[g];
  const int64_t bs = spec_.block_size;
  const Bf16* pool = pools_[g].data();

  // Below this many float operations a phase runs on the caller alone:
  // waking the workers costs more (tens of microseconds on a busy machine).
  constexpr int64_t kParallelWork = int64_t{1} << 18;
  int64_t context = 0;  // Σ context length over sequences
  int64_t pairs = 0;    // Σ (query, key) pairs over rows
  for (const Step::Seq& s : step.seqs) context += s.end();
  for (int64_t r = 0; r < step.rows; ++r) pairs += step.row_pos[r] + 1;
  const int64_t tasks = static_cast<int64_t>(step.seqs.size()) * kv_heads;
  const bool gather_inline = context * kv_heads * d * 4 < kParallelWork;

  // 1. Every sequence's keys and values, read through its block table;
  //    keys rotated for their logical positions.
  pool_.ParallelFor(tasks, gather_inline ? tasks : 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const Step::Seq& s = step.seqs[t / kv_heads];
      const int64_t kh = t % kv_heads;
      const int64_t len = s.end();
      float* keys = &step.keys[s.kv_offset + kh * len * d];
      float* values = &step.values[s.kv_offset + kh * len * d];
      const std::vector<int32_t>& table = s.chunk->block_tables[g];
      // Shifted views (step_plan.h): slot j of a view reads its window.
      const int32_t* hi = nullptr;
      const int32_t* shifts = nullptr;
      if (!s.chunk->block_shifts.empty() && !s.chunk->block_shifts[g].empty()) {
        hi = s.chunk->block_tables_hi[g].data();
        shifts = s.chunk->block_shifts[g].data();
      }
      for (int64_t j = 0; j < len; ++j) {
        int64_t block = table[j / bs];
        int64_t slot = j % bs;
        if (shifts != nullptr && shifts[j / bs] != 0) {
          slot += shifts[j / bs];
          if (slot >= bs) {
            slot -= bs;
            block = hi[j / bs];
          }
        }
        const Bf16* k = pool + SlabOffset(g, block, li, 0, kh) + slot * d;
        const Bf16* v = pool + SlabOffset(g, block, li, 1, kh) + slot * d;
        for (int64_t i = 0; i < d; ++i) {
          keys[j * d + i] = Bf16ToFloat(k[i]);
          values[j * d + i] = Bf16ToFloat(v[i]);
        }
        ApplyRope(keys + j * d, d, &rope_cos_[j * half], &rope_sin_[j * half]);
      }
    }
  });

  // 2. Causal attention of every (token, head).
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t items = step.rows * heads;
  const bool attend_inline = pairs * heads * d * 4 < kParallelWork;
  const int64_t grain =
      attend_inline ? items : std::max<int64_t>(1, items / (8 * pool_.num_threads()));
  pool_.ParallelFor(items, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> q(d);
    std::vector<float> probs;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t r = it / heads;
      const int64_t hh = it % heads;
      const int64_t kh = hh / group;
      const Step::Seq& s = step.seqs[step.row_seq[r]];
      const int64_t p = step.row_pos[r];
      const int64_t len = s.end();
      const float* keys = &step.keys[s.kv_offset + kh * len * d];
      const float* values = &step.values[s.kv_offset + kh * len * d];
      std::memcpy(q.data(), &step.qkv[r * qkv_cols + hh * d], d * sizeof(float));
      ApplyRope(q.data(), d, &rope_cos_[p * half], &rope_sin_[p * half]);
      probs.resize(p + 1);
      float max_score = -INFINITY;
      for (int64_t j = 0; j <= p; ++j) {
        probs[j] = Dot(q.data(), keys + j * d, d) * scale;
        max_score = std::max(max_score, probs[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j <= p; ++j) {
        probs[j] = std::exp(probs[j] - max_score);
        sum += probs[j];
      }
      float* out = &step.attn[r * q_local + hh * d];
      std::fill(out, out + d, 0.0f);
      for (int64_t j = 0; j <= p; ++j) {
        const float w = probs[j] / sum;
        const float* v = values + j * d;
        for (int64_t i = 0; i < d; ++i) out[i] += w * v[i];
      }
    }
  });
}

absl::Status CpuBackend::CopyBlocks(int layer_group,
                                    absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  if (layer_group < 0 || layer_group >= spec_.num_layer_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer group ", layer_group, " of ", spec_.num_layer_groups));
  }
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= spec_.num_blocks || dst < 0 || dst >= spec_.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy ", src, " -> ", dst, ": block outside the pool [0, ", spec_.num_blocks, ")"));
    }
  }
  const int64_t block_elems = spec_.BlockBytes(layer_group) / 2;
  Bf16* pool = pools_[layer_group].data();
  for (const auto& [src, dst] : src_dst) {
    if (src == dst) continue;
    std::memcpy(pool + dst * block_elems, pool + src * block_elems, block_elems * sizeof(Bf16));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::ComputeDistanceSums(int layer_group,
                                             absl::Span<const kvmanager::BlockPair> pairs,
                                             absl::Span<kvmanager::DistanceSums> out) {
  if (absl::Status s = ValidateDistancePairs(spec_, layer_group, pairs, out.size()); !s.ok()) {
    return s;
  }
  const int64_t layers = spec_.LayersInGroup(layer_group);
  const int64_t bs = spec_.block_size;
  const int64_t d = spec_.head_dim;
  const int64_t slab = int64_t{spec_.kv_heads_local} * bs * d;
  const Bf16* pool = pools_[layer_group].data();
  for (size_t i = 0; i < pairs.size(); ++i) {
    const kvmanager::BlockPair& pair = pairs[i];
    kvmanager::DistanceSums sums;
    for (int64_t li = 0; li < layers; ++li) {
      for (int kv = 0; kv < 2; ++kv) {
        const Bf16* a = pool + SlabOffset(layer_group, pair.candidate, li, kv, 0);
        const Bf16* b = pool + SlabOffset(layer_group, pair.reference, li, kv, 0);
        // A shifted reference (block_distance.h): row (head, slot) of the
        // window is row (head, slot + shift) of `reference`, or of
        // `reference_next` past its end. Same summation order either way.
        const Bf16* b_next =
            pair.shift > 0 ? pool + SlabOffset(layer_group, pair.reference_next, li, kv, 0) : b;
        double diff = 0, norm = 0;
        for (int64_t e = 0; e < slab; ++e) {
          const double x = Bf16ToFloat(a[e]);
          double y;
          if (pair.shift == 0) {
            y = Bf16ToFloat(b[e]);
          } else {
            const int64_t row = e / d;  // head * bs + slot
            const int64_t slot = row % bs + pair.shift;
            const int64_t src = (row - row % bs) * d + (slot % bs) * d + e % d;
            y = Bf16ToFloat(slot < bs ? b[src] : b_next[src]);
          }
          diff += (x - y) * (x - y);
          norm += y * y;
        }
        (kv == 0 ? sums.k_diff_sq : sums.v_diff_sq) += diff;
        (kv == 0 ? sums.k_norm_sq : sums.v_norm_sq) += norm;
      }
    }
    out[i] = sums;
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine::cpu
