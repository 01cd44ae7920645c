#include "kvmanager/dedup_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace memshare::kvmanager {
namespace {

bool InUnit(float x) { return std::isfinite(x) && x >= 0.0f && x <= 1.0f; }
bool NonNegative(float x) { return std::isfinite(x) && x >= 0.0f; }

}  // namespace

absl::Status ValidateDedupPolicy(const DedupPolicy& policy, int32_t num_layer_groups) {
  if (!InUnit(policy.tau_lex)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dedup.tau_lex must be in [0, 1], got ", policy.tau_lex));
  }
  if (!InUnit(policy.min_tau_lex) || policy.min_tau_lex > policy.tau_lex) {
    return absl::InvalidArgumentError(
        absl::StrCat("dedup.min_tau_lex must be in [0, tau_lex], got ", policy.min_tau_lex));
  }
  if (!NonNegative(policy.tau_kv)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dedup.tau_kv must be >= 0, got ", policy.tau_kv));
  }
  if (!NonNegative(policy.max_tau_kv) || policy.max_tau_kv < policy.tau_kv) {
    return absl::InvalidArgumentError(
        absl::StrCat("dedup.max_tau_kv must be >= tau_kv, got ", policy.max_tau_kv));
  }
  if (policy.max_candidates_per_step < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dedup.max_candidates_per_step must be >= 1, got ", policy.max_candidates_per_step));
  }
  if (!(policy.min_block_token_overlap > 0.0f && policy.min_block_token_overlap <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dedup.min_block_token_overlap must be in (0, 1], got ", policy.min_block_token_overlap));
  }
  if (policy.overlap_measure != OverlapMeasure::kAnySlots &&
      policy.overlap_measure != OverlapMeasure::kAnchoredRun) {
    return absl::InvalidArgumentError("dedup.overlap_measure is not a known measure");
  }
  if (policy.near_match_delay_tokens < 0 || policy.near_match_delay_tokens > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dedup.near_match_delay_tokens must be in [0, 1048576], got ",
                     policy.near_match_delay_tokens));
  }
  for (int32_t g : policy.layer_groups) {
    if (g < 0 || g >= num_layer_groups) {
      return absl::InvalidArgumentError(
          absl::StrCat("dedup.layer_groups names group ", g, " of ", num_layer_groups));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ResolvedDedup> ResolveDedup(const DedupPolicy& policy, const DedupParams& params) {
  ResolvedDedup r;
  r.enabled = params.mode.value_or(policy.mode) == DedupMode::kMemShare;
  r.tau_lex = policy.tau_lex;
  r.tau_kv = policy.tau_kv;
  if (params.tau_lex.has_value()) {
    const float t = *params.tau_lex;
    if (!std::isfinite(t) || t < policy.min_tau_lex || t > 1.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("memshare.tau_lex must be in [", policy.min_tau_lex, ", 1], got ", t));
    }
    r.tau_lex = t;
  }
  if (params.tau_kv.has_value()) {
    const float t = *params.tau_kv;
    if (!std::isfinite(t) || t < 0.0f || t > policy.max_tau_kv) {
      return absl::InvalidArgumentError(
          absl::StrCat("memshare.tau_kv must be in [0, ", policy.max_tau_kv, "], got ", t));
    }
    r.tau_kv = t;
  }
  return r;
}

}  // namespace memshare::kvmanager
