#include "engine/plan_validation.h"

#include <algorithm>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace memshare::engine {

std::string PlanSequenceName(size_t i, const SequenceChunk& s) {
  return absl::StrCat("sequence ", i, " (seq_id ", s.seq_id, ")");
}

absl::Status ValidatePlan(const StepPlan& plan, const KvCacheSpec& spec, const PlanLimits& limits) {
  const int64_t bs = spec.block_size;
  const int groups = spec.num_layer_groups;
  // Slots written by the step, per (group, block): a bit per offset when a
  // block has at most 64 slots (one lookup per block a chunk touches), else
  // one entry per slot.
  absl::flat_hash_map<int64_t, uint64_t> written;
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const SequenceChunk& s = plan.sequences[i];
    const auto name = [&] { return PlanSequenceName(i, s); };
    const int64_t n = static_cast<int64_t>(s.token_ids.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(name(), ": no tokens"));
    if (s.start_pos < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name(), ": start_pos ", s.start_pos, " < 0"));
    }
    const int64_t end = int64_t{s.start_pos} + n;
    if (end > limits.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(name(), ": positions up to ", end - 1,
                                                     " exceed ", limits.max_positions_name, " (",
                                                     limits.max_positions, ")"));
    }
    if (limits.sliding_window > 0 && end > limits.sliding_window) {
      return absl::InvalidArgumentError(absl::StrCat(
          name(), ": ", end, " tokens exceed the model's sliding_window (", limits.sliding_window,
          "), which ", limits.backend_name, " does not implement"));
    }
    if (s.fed_row >= 0) {
      const std::vector<bool>* rows = limits.feedable_rows;
      if (rows == nullptr || rows->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name(), ": fed_row ", s.fed_row, " but ", limits.backend_name,
                         " has no previous step whose tokens it can feed"));
      }
      if (n != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(name(), ": fed_row ", s.fed_row, " with ", n, " tokens (one only)"));
      }
      if (s.fed_row >= static_cast<int64_t>(rows->size()) || !(*rows)[s.fed_row]) {
        return absl::InvalidArgumentError(absl::StrCat(
            name(), ": fed_row ", s.fed_row, " is not a row the previous step sampled on the ",
            "device (it had ", rows->size(), " rows)"));
      }
    }
    if (s.fed_row < 0 && s.sampling.has_value() && s.sampling->count_fed_token) {
      return absl::InvalidArgumentError(
          absl::StrCat(name(), ": sampling.count_fed_token without fed_row"));
    }
    for (size_t t = 0; t < s.token_ids.size() && s.fed_row < 0; ++t) {
      if (s.token_ids[t] < 0 || s.token_ids[t] >= limits.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(name(), ": token_ids[", t, "] = ", s.token_ids[t],
                         " outside the vocabulary [0, ", limits.vocab_size, ")"));
      }
    }
    if (static_cast<int>(s.block_tables.size()) != groups) {
      return absl::InvalidArgumentError(absl::StrCat(
          name(), ": ", s.block_tables.size(), " block tables for ", groups, " layer groups"));
    }
    const int64_t need = (end + bs - 1) / bs;
    const bool views = !s.block_tables_hi.empty() || !s.block_shifts.empty();
    if (views && (static_cast<int>(s.block_tables_hi.size()) != groups ||
                  static_cast<int>(s.block_shifts.size()) != groups)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name(), ": block_tables_hi / block_shifts have ", s.block_tables_hi.size(),
                       " / ", s.block_shifts.size(), " entries for ", groups, " layer groups"));
    }
    for (int g = 0; g < groups; ++g) {
      const std::vector<int32_t>& table = s.block_tables[g];
      if (static_cast<int64_t>(table.size()) < need) {
        return absl::InvalidArgumentError(
            absl::StrCat(name(), ": block table of layer group ", g, " has ", table.size(),
                         " blocks; positions up to ", end - 1, " need ", need));
      }
      for (int64_t b = 0; b < need; ++b) {
        if (table[b] < 0 || table[b] >= spec.num_blocks) {
          return absl::InvalidArgumentError(absl::StrCat(name(), ": block_tables[", g, "][", b,
                                                         "] = ", table[b], " outside the pool [0, ",
                                                         spec.num_blocks, ")"));
        }
      }
      if (views && !(s.block_tables_hi[g].empty() && s.block_shifts[g].empty())) {
        const std::vector<int32_t>& hi = s.block_tables_hi[g];
        const std::vector<int32_t>& shifts = s.block_shifts[g];
        if (hi.size() != table.size() || shifts.size() != table.size()) {
          return absl::InvalidArgumentError(absl::StrCat(
              name(), ": block_tables_hi[", g, "] / block_shifts[", g, "] have ", hi.size(), " / ",
              shifts.size(), " entries, block_tables[", g, "] ", table.size()));
        }
        for (int64_t b = 0; b < need; ++b) {
          if (shifts[b] < 0 || shifts[b] >= bs) {
            return absl::InvalidArgumentError(absl::StrCat(name(), ": block_shifts[", g, "][", b,
                                                           "] = ", shifts[b], " outside [0, ", bs,
                                                           ")"));
          }
          if (shifts[b] > 0 && (hi[b] < 0 || hi[b] >= spec.num_blocks)) {
            return absl::InvalidArgumentError(absl::StrCat(name(), ": block_tables_hi[", g, "][", b,
                                                           "] = ", hi[b], " outside the pool [0, ",
                                                           spec.num_blocks, ")"));
          }
        }
        for (int64_t b = s.start_pos / bs; b < need; ++b) {
          if (shifts[b] != 0) {
            return absl::InvalidArgumentError(
                absl::StrCat(name(), ": logical block ", b, " of layer group ", g,
                             " is a shifted view but the step writes into it"));
          }
        }
      }
      for (int64_t p = s.start_pos; p < end;) {
        const int64_t block = table[p / bs];
        const int64_t first = p % bs;
        const int64_t last = std::min<int64_t>(bs - 1, first + (end - p) - 1);
        int64_t key;
        uint64_t mask;
        if (bs <= 64) {
          key = int64_t{g} * spec.num_blocks + block;
          const int64_t width = last - first + 1;
          mask = (width == 64 ? ~uint64_t{0} : ((uint64_t{1} << width) - 1)) << first;
        } else {  // one entry per slot
          key = ((int64_t{g} * spec.num_blocks + block) * bs + first) | (int64_t{1} << 62);
          mask = 1;
        }
        uint64_t& bits = written[key];
        if ((bits & mask) != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(name(), ": positions from ", p, " would write slots of block ", block,
                           " (layer group ", g, ") that another token of the step writes"));
        }
        bits |= mask;
        p += bs <= 64 ? last - first + 1 : 1;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDistancePairs(const KvCacheSpec& spec, int layer_group,
                                   absl::Span<const kvmanager::BlockPair> pairs, size_t results) {
  if (layer_group < 0 || layer_group >= spec.num_layer_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer group ", layer_group, " of ", spec.num_layer_groups));
  }
  if (results != pairs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(pairs.size(), " pairs but room for ", results, " results"));
  }
  for (const kvmanager::BlockPair& p : pairs) {
    if (p.candidate < 0 || p.candidate >= spec.num_blocks || p.reference < 0 ||
        p.reference >= spec.num_blocks ||
        (p.shift > 0 && (p.reference_next < 0 || p.reference_next >= spec.num_blocks))) {
      return absl::InvalidArgumentError(
          absl::StrCat("pair (", p.candidate, ", ", p.reference, ", ", p.reference_next,
                       "): block outside the pool [0, ", spec.num_blocks, ")"));
    }
    if (p.shift < 0 || p.shift >= spec.block_size) {
      return absl::InvalidArgumentError(absl::StrCat("pair (", p.candidate, ", ", p.reference,
                                                     "): shift ", p.shift, " outside [0, ",
                                                     spec.block_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine
