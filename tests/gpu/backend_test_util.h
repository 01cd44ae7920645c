// Helpers of the CUDA backend tests: golden files, plans, greedy runs over
// any engine::Backend.
#ifndef MEMSHARE_TESTS_GPU_BACKEND_TEST_UTIL_H_
#define MEMSHARE_TESTS_GPU_BACKEND_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memshare::testing {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

// tests/data/golden, or $MEMSHARE_GOLDEN_DIR.
inline std::string GoldenDir() { return EnvOr("MEMSHARE_GOLDEN_DIR", "tests/data/golden"); }

struct GoldenStep {
  std::vector<int> ids;        // top-8 of the fp32 run
  std::vector<double> fp32;    // transformers fp32 logits at ids
  std::vector<double> bf16kv;  // transformers fp32 with bf16 K/V at ids
  std::vector<double> bf16;    // transformers in bf16 at ids (bf16 reference file)
  double lse_fp32 = 0;
  double lse_bf16kv = 0;
  double lse_bf16 = 0;
};

struct GoldenPrompt {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // greedy tokens of the fp32 run
  std::vector<GoldenStep> steps;
};

struct Golden {
  std::string dir;
  double max_abs_diff_bf16kv_vs_fp32 = 0;  // D
  double max_abs_diff_bf16_vs_fp32 = -1;   // D16; -1 without a bf16 reference
  std::vector<GoldenPrompt> prompts;
};

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
}

// golden.json of a checkpoint, plus its bf16 reference: golden_bf16.json
// beside it (tools/golden/make_bf16_reference.py, run on the GPU machine),
// or $MEMSHARE_BF16_REF_DIR/<name>.json when that variable is set.
inline Golden ReadGolden(const std::string& name) {
  Golden g;
  g.dir = GoldenDir() + "/" + name;
  const nlohmann::json j = ReadJson(g.dir + "/golden.json");
  if (j.is_discarded()) return g;
  g.max_abs_diff_bf16kv_vs_fp32 = j.at("max_abs_diff_bf16kv_vs_fp32").get<double>();
  for (const auto& p : j.at("prompts")) {
    GoldenPrompt gp;
    gp.prompt = p.at("prompt").get<std::vector<int32_t>>();
    gp.tokens = p.at("tokens").get<std::vector<int32_t>>();
    for (const auto& s : p.at("steps")) {
      GoldenStep st;
      st.ids = s.at("ids").get<std::vector<int>>();
      st.fp32 = s.at("fp32").get<std::vector<double>>();
      st.bf16kv = s.at("bf16kv").get<std::vector<double>>();
      st.lse_fp32 = s.at("lse_fp32").get<double>();
      st.lse_bf16kv = s.at("lse_bf16kv").get<double>();
      gp.steps.push_back(std::move(st));
    }
    g.prompts.push_back(std::move(gp));
  }
  const std::string ref_dir = EnvOr("MEMSHARE_BF16_REF_DIR", "");
  const nlohmann::json r =
      ReadJson(ref_dir.empty() ? g.dir + "/golden_bf16.json" : ref_dir + "/" + name + ".json");
  if (r.is_discarded()) return g;
  g.max_abs_diff_bf16_vs_fp32 = r.at("max_abs_diff_bf16_vs_fp32").get<double>();
  const auto& rp = r.at("prompts");
  for (size_t p = 0; p < g.prompts.size() && p < rp.size(); ++p) {
    const auto& rs = rp[p].at("steps");
    for (size_t s = 0; s < g.prompts[p].steps.size() && s < rs.size(); ++s) {
      g.prompts[p].steps[s].bf16 = rs[s].at("bf16").get<std::vector<double>>();
      g.prompts[p].steps[s].lse_bf16 = rs[s].at("lse_bf16").get<double>();
    }
  }
  return g;
}

inline int Argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;
  }
  return best;
}

inline double LogSumExp(const float* v, int n) {
  double m = v[0];
  for (int i = 1; i < n; ++i) m = std::max(m, double{v[i]});
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(v[i] - m);
  return m + std::log(s);
}

// Gap between the largest and second largest of `v`.
inline double Top2Gap(const std::vector<double>& v) {
  std::vector<double> s = v;
  std::sort(s.rbegin(), s.rend());
  return s.size() < 2 ? INFINITY : s[0] - s[1];
}

// Block tables of one sequence: logical block b -> first_block + b, in every
// layer group, shifted by 16 per group (so groups really differ).
inline std::vector<std::vector<int32_t>> Tables(int groups, int first_block, int blocks) {
  std::vector<std::vector<int32_t>> t(groups);
  for (int g = 0; g < groups; ++g) {
    for (int b = 0; b < blocks; ++b) t[g].push_back(first_block + 16 * g + b);
  }
  return t;
}

inline engine::SequenceChunk Chunk(uint64_t id, int start, std::vector<int32_t> tokens,
                                   std::vector<std::vector<int32_t>> tables, bool logits = true) {
  engine::SequenceChunk c;
  c.seq_id = id;
  c.start_pos = start;
  c.token_ids = std::move(tokens);
  c.block_tables = std::move(tables);
  c.compute_logits = logits;
  return c;
}

// Makes logical block `b` of layer group `g` of `c` a MemShare shifted view
// over physical blocks `lo` and `hi` at `shift` (step_plan.h): slot j reads
// lo's slot j + shift, or hi's slot j + shift - block_size. Fills the dense
// hi / shift tables of every group on first use (hi = own block, shift 0).
inline void SetView(engine::SequenceChunk& c, int g, int b, int32_t lo, int32_t hi, int32_t shift) {
  if (c.block_shifts.empty()) {
    c.block_tables_hi = c.block_tables;
    c.block_shifts.resize(c.block_tables.size());
    for (size_t k = 0; k < c.block_tables.size(); ++k) {
      c.block_shifts[k].assign(c.block_tables[k].size(), 0);
    }
  }
  c.block_tables[g][b] = lo;
  c.block_tables_hi[g][b] = hi;
  c.block_shifts[g][b] = shift;
}

// A chunk of sequence `id` with the block tables (and views) of `layout`.
inline engine::SequenceChunk ChunkLike(const engine::SequenceChunk& layout, uint64_t id, int start,
                                       std::vector<int32_t> tokens, bool logits = true) {
  engine::SequenceChunk c = layout;
  c.seq_id = id;
  c.start_pos = start;
  c.token_ids = std::move(tokens);
  c.compute_logits = logits;
  return c;
}

// The same chunk with its views read as plain blocks (each view's lo block,
// unshifted): the negative control of the view tests.
inline engine::SequenceChunk WithoutViews(engine::SequenceChunk c) {
  c.block_tables_hi.clear();
  c.block_shifts.clear();
  return c;
}

// Runs `prompt` (in prefill chunks of `chunk` tokens; 0: at once), then
// `steps - 1` decode steps feeding `feed[s]` when given (teacher forcing),
// else the argmax of the previous logits. Returns the logits of each step.
inline std::vector<std::vector<float>> Generate(engine::Backend& b,
                                                const std::vector<int32_t>& prompt, int steps,
                                                const std::vector<int32_t>* feed = nullptr,
                                                int chunk = 0, int groups = 1, int first_block = 0,
                                                int block_size = 16) {
  const int V = b.vocab_size();
  const int total = static_cast<int>(prompt.size()) + steps;
  const auto tables = Tables(groups, first_block, (total + block_size - 1) / block_size);
  std::vector<std::vector<float>> out;
  int pos = 0;
  const int n = static_cast<int>(prompt.size());
  const int size = chunk > 0 ? chunk : n;
  engine::StepOutput o;
  while (pos < n) {
    const int len = std::min(size, n - pos);
    engine::StepPlan plan;
    plan.sequences.push_back(
        Chunk(1, pos, {prompt.begin() + pos, prompt.begin() + pos + len}, tables, pos + len == n));
    const absl::Status st = b.Forward(plan, &o);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    pos += len;
  }
  EXPECT_EQ(o.rows.size(), 1u);
  out.emplace_back(o.logits.begin(), o.logits.end());
  for (int s = 1; s < steps; ++s) {
    const int32_t token = feed != nullptr ? (*feed)[s - 1] : Argmax(out.back().data(), V);
    engine::StepPlan plan;
    plan.sequences.push_back(Chunk(1, pos, {token}, tables));
    const absl::Status st = b.Forward(plan, &o);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    ++pos;
    out.emplace_back(o.logits.begin(), o.logits.end());
  }
  return out;
}

}  // namespace memshare::testing

#endif  // MEMSHARE_TESTS_GPU_BACKEND_TEST_UTIL_H_
