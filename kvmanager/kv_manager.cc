#include "kvmanager/kv_manager.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvmanager/internal/status_macros.h"
#include "kvmanager/remapper.h"

namespace memshare::kvmanager {

struct KvManager::Sequence {
  uint64_t id = 0;
  int32_t prompt_len = 0;
  // Position of the first generated token (SequenceSpec::output_begin).
  int32_t output_begin = 0;
  // Positions whose K/V are written: [0, num_computed).
  int32_t num_computed = 0;
  int32_t cached_tokens = 0;
  // Token ids by position: the whole prompt from admission, then each
  // appended generated token. size() == max(prompt_len, num_tokens()).
  std::vector<int32_t> tokens;
  // One per layer group; all hold the same num_tokens().
  std::vector<BlockTable> tables;

  // Prefix cache: chain hashes of blocks [0, block_hashes.size()), which
  // have all been offered to the cache.
  uint64_t root_hash = 0;
  std::vector<uint64_t> block_hashes;
  // Blocks at or past this index may hold K/V computed over remapped
  // (approximate) blocks: never offered to the exact prefix cache.
  int32_t cache_limit_block = std::numeric_limits<int32_t>::max();

  // MemShare.
  ResolvedDedup dedup;
  StepSegmenter::State segmenter;
  // Finished steps (token positions) not yet deduplicated, from pending_head.
  std::vector<DedupIndex::StepSpan> pending_steps;
  size_t pending_head = 0;
  // Deduplicated steps whose near matches wait for
  // DedupPolicy::near_match_delay_tokens more written tokens, from
  // near_head, with the index numbers of their candidate steps.
  struct NearPass {
    DedupIndex::StepSpan span;
    std::vector<int32_t> candidate_steps;
  };
  std::vector<NearPass> near_pending;
  size_t near_head = 0;
  std::optional<DedupIndex> index;  // set iff dedup.enabled
  int64_t remapped_blocks = 0;
  int64_t shifted_blocks = 0;

  bool in_commit_list = false;
  bool in_dedup_list = false;

  int32_t num_tokens() const { return tables[0].num_tokens(); }
  bool HasPendingSteps() const {
    return pending_head < pending_steps.size() || near_head < near_pending.size();
  }
};

absl::StatusOr<std::unique_ptr<KvManager>> KvManager::Create(const Options& options) {
  if (options.num_layer_groups < 1 || options.num_layer_groups > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layer_groups must be in [1, 1024], got ", options.num_layer_groups));
  }
  if (options.block_size <= 0 || options.block_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be in [1, 4096], got ", options.block_size));
  }
  if (!options.block_bytes.empty() &&
      static_cast<int32_t>(options.block_bytes.size()) != options.num_layer_groups) {
    return absl::InvalidArgumentError(absl::StrCat("block_bytes has ", options.block_bytes.size(),
                                                   " entries for ", options.num_layer_groups,
                                                   " layer groups"));
  }
  for (int64_t b : options.block_bytes) {
    if (b < 0) return absl::InvalidArgumentError("block_bytes must be >= 0");
  }
  KV_RETURN_IF_ERROR(ValidateDedupPolicy(options.dedup, options.num_layer_groups));
  KV_RETURN_IF_ERROR(DedupIndex::Validate(options.lsh));
  if (options.min_hash.num_hashes != options.lsh.num_bands * options.lsh.rows_per_band) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_hash.num_hashes (", options.min_hash.num_hashes, ") must equal lsh.num_bands * ",
        "lsh.rows_per_band (", options.lsh.num_bands * options.lsh.rows_per_band, ")"));
  }
  std::vector<std::unique_ptr<BlockPool>> pools;
  for (int32_t g = 0; g < options.num_layer_groups; ++g) {
    absl::StatusOr<std::unique_ptr<BlockPool>> pool =
        BlockPool::Create({.layer_group = g, .num_blocks = options.num_blocks});
    if (!pool.ok()) return pool.status();
    pools.push_back(*std::move(pool));
  }
  absl::StatusOr<std::unique_ptr<StepSegmenter>> segmenter =
      StepSegmenter::Create(options.segmenter);
  if (!segmenter.ok()) return segmenter.status();
  absl::StatusOr<std::unique_ptr<MinHasher>> hasher = MinHasher::Create(options.min_hash);
  if (!hasher.ok()) return hasher.status();
  auto manager = std::unique_ptr<KvManager>(
      new KvManager(options, std::move(pools), *std::move(segmenter), *std::move(hasher)));
  if (options.enable_prefix_cache) {
    std::vector<BlockPool*> raw;
    for (auto& p : manager->pools_) raw.push_back(p.get());
    absl::StatusOr<std::unique_ptr<PrefixCache>> cache =
        PrefixCache::Create({.block_size = options.block_size}, std::move(raw));
    if (!cache.ok()) return cache.status();
    manager->cache_ = *std::move(cache);
  }
  manager->PublishGauges();
  return manager;
}

namespace {

std::vector<int64_t> BlockBytesOrZero(const KvManager::Options& options) {
  if (!options.block_bytes.empty()) return options.block_bytes;
  return std::vector<int64_t>(options.num_layer_groups, 0);
}

}  // namespace

KvManager::KvManager(const Options& options, std::vector<std::unique_ptr<BlockPool>> pools,
                     std::unique_ptr<StepSegmenter> segmenter, std::unique_ptr<MinHasher> hasher)
    : options_(options),
      block_size_(options.block_size),
      pools_(std::move(pools)),
      segmenter_(std::move(segmenter)),
      hasher_(std::move(hasher)),
      stats_(BlockBytesOrZero(options)) {
  if (options.dedup.layer_groups.empty()) {
    for (int32_t g = 0; g < options.num_layer_groups; ++g) dedup_groups_.push_back(g);
  } else {
    dedup_groups_ = options.dedup.layer_groups;
    std::sort(dedup_groups_.begin(), dedup_groups_.end());
    dedup_groups_.erase(std::unique(dedup_groups_.begin(), dedup_groups_.end()),
                        dedup_groups_.end());
  }
  min_overlap_slots_ = std::max<int32_t>(
      1, static_cast<int32_t>(options.dedup.min_block_token_overlap * block_size_ + 0.999f));
  min_overlap_slots_ = std::min(min_overlap_slots_, block_size_);
  const size_t groups = options.num_layer_groups;
  view_refs_.assign(groups, 0);
  pending_copies_.resize(groups);
  pairs_.resize(groups);
  pair_meta_.resize(groups);
  sums_.resize(groups);
  group_blocks_.resize(groups);
  signature_.resize(hasher_->num_hashes());
}

KvManager::~KvManager() {
  // Sequences release their references while the pools and the cache live.
  commit_list_.clear();
  dedup_list_.clear();
  sequences_.clear();
}

KvManager::Sequence* KvManager::Find(uint64_t seq_id) const {
  const auto it = sequences_.find(seq_id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

absl::Status KvManager::NotFound(uint64_t seq_id) const {
  return absl::NotFoundError(absl::StrCat("no live sequence ", seq_id));
}

int32_t KvManager::NumAvailableBlocks() const {
  int32_t n = std::numeric_limits<int32_t>::max();
  for (const auto& p : pools_) n = std::min(n, p->num_available());
  return n;
}

void KvManager::PublishGauges() {
  for (size_t g = 0; g < pools_.size(); ++g) {
    const BlockPool& p = *pools_[g];
    KvStatsSnapshot::Group v;
    v.total_blocks = p.num_blocks();
    v.physical_blocks = p.num_in_use();
    v.logical_blocks = p.total_refs() - view_refs_[g];
    v.shared_blocks = p.num_shared();
    v.cached_blocks = p.num_evictable();
    v.free_blocks = p.num_free();
    v.evictions = p.num_evictions();
    stats_.SetGroup(static_cast<int32_t>(g), v);
  }
  stats_.SetSequences(static_cast<int64_t>(sequences_.size()));
  stats_.SetPrefixCache(cache_ ? cache_->num_entries() : 0,
                        cache_ ? cache_->num_evicted_entries() : 0);
}

void KvManager::RemoveFromList(std::vector<Sequence*>* list, Sequence* s) {
  const auto it = std::find(list->begin(), list->end(), s);
  if (it != list->end()) list->erase(it);
}

// --- Admission and lifetime ------------------------------------------------

bool KvManager::AdmissionFits(const PrefixCache::Match& match, int32_t n) const {
  const size_t groups = pools_.size();
  // Fresh blocks after the cached ones (cached_tokens is block-aligned).
  const int64_t fresh = (int64_t{n} + block_size_ - 1) / block_size_;
  for (size_t g = 0; g < groups; ++g) {
    int64_t revived = 0;  // matched blocks now evictable: attaching takes them off the LRU
    for (int32_t i = 0; i < match.num_blocks; ++i) {
      revived += pools_[g]->state(match.blocks[i * groups + g]) == BlockState::kEvictable;
    }
    if (fresh + revived > pools_[g]->num_available()) return false;
  }
  return true;
}

KvManager::PrefixProbe KvManager::ProbePrefix(absl::Span<const int32_t> prompt,
                                              absl::string_view salt,
                                              int32_t num_new_tokens) const {
  PrefixProbe probe;
  PrefixCache::Match match;
  if (cache_ && !prompt.empty()) {
    cache_->Lookup(prompt, PrefixCache::RootHash(salt),
                   (static_cast<int32_t>(prompt.size()) - 1) / block_size_, &match);
  }
  probe.cached_tokens = match.num_blocks * block_size_;
  const int32_t n = std::clamp<int64_t>(num_new_tokens, 0,
                                        static_cast<int64_t>(prompt.size()) - probe.cached_tokens);
  probe.fits = !prompt.empty() && AdmissionFits(match, n);
  return probe;
}

absl::StatusOr<KvManager::Admission> KvManager::AddSequence(const SequenceSpec& spec,
                                                            int32_t max_new_tokens) {
  const auto prompt_len = static_cast<int64_t>(spec.prompt_token_ids.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("prompt_token_ids is empty");
  if (prompt_len > std::numeric_limits<int32_t>::max() / 2) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_len, " tokens too long"));
  }
  if (max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", max_new_tokens));
  }
  if (spec.output_begin != -1 && (spec.output_begin < 1 || spec.output_begin > prompt_len)) {
    return absl::InvalidArgumentError(absl::StrCat("output_begin must be -1 or in [1, ",
                                                   prompt_len, "], got ", spec.output_begin));
  }
  if (sequences_.contains(spec.seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", spec.seq_id, " is live"));
  }
  absl::StatusOr<ResolvedDedup> dedup = ResolveDedup(options_.dedup, spec.memshare);
  if (!dedup.ok()) return dedup.status();

  const uint64_t root = cache_ ? PrefixCache::RootHash(spec.cache_salt) : 0;
  const auto max_cached_blocks = static_cast<int32_t>((prompt_len - 1) / block_size_);
  match_.num_blocks = 0;
  match_.hashes.clear();
  match_.blocks.clear();
  if (cache_) cache_->Lookup(spec.prompt_token_ids, root, max_cached_blocks, &match_);
  const int32_t cached = match_.num_blocks * block_size_;
  const auto n = static_cast<int32_t>(std::min<int64_t>(max_new_tokens, prompt_len - cached));
  if (!AdmissionFits(match_, n)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV pool cannot admit sequence ", spec.seq_id, ": ", n, " new tokens after ",
                     cached, " cached, ", NumAvailableBlocks(), " blocks available"));
  }

  auto s = std::make_unique<Sequence>();
  s->id = spec.seq_id;
  s->prompt_len = static_cast<int32_t>(prompt_len);
  s->output_begin = spec.output_begin == -1 ? s->prompt_len : spec.output_begin;
  s->tokens.assign(spec.prompt_token_ids.begin(), spec.prompt_token_ids.end());
  s->root_hash = root;
  s->block_hashes = match_.hashes;
  s->cached_tokens = cached;
  s->num_computed = cached;
  s->dedup = *dedup;
  if (s->dedup.enabled) s->index.emplace(options_.lsh);
  const size_t groups = pools_.size();
  s->tables.reserve(groups);
  for (size_t g = 0; g < groups; ++g) {
    s->tables.emplace_back(pools_[g].get(), block_size_);
    BlockTable& table = s->tables.back();
    for (int32_t i = 0; i < match_.num_blocks; ++i) {
      KV_RETURN_IF_ERROR(table.AppendFullBlock(match_.blocks[i * groups + g]));
    }
    const size_t copies_before = pending_copies_[g].size();
    KV_RETURN_IF_ERROR(table.Append(n, &pending_copies_[g]));
    stats_.Add(KvStats::kCowCopies, pending_copies_[g].size() - copies_before);
  }
  stats_.Add(KvStats::kPrefixCacheQueries, cache_ ? max_cached_blocks : 0);
  stats_.Add(KvStats::kPrefixCacheHits, match_.num_blocks);
  Sequence* raw = s.get();
  sequences_.emplace(spec.seq_id, std::move(s));
  if (n > 0) {
    raw->in_commit_list = true;
    commit_list_.push_back(raw);
  }
  PublishGauges();
  return Admission{cached, n};
}

absl::Status KvManager::Fork(uint64_t parent_id, uint64_t child_id) {
  Sequence* parent = Find(parent_id);
  if (parent == nullptr) return NotFound(parent_id);
  if (sequences_.contains(child_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", child_id, " is live"));
  }
  if (parent->num_computed != parent->num_tokens()) {
    return absl::FailedPreconditionError(
        absl::StrCat("fork of sequence ", parent_id, " with uncommitted tokens (",
                     parent->num_tokens(), " appended, ", parent->num_computed, " written)"));
  }
  auto child = std::make_unique<Sequence>();
  child->tables.reserve(parent->tables.size());
  for (const BlockTable& table : parent->tables) {
    absl::StatusOr<BlockTable> forked = table.Fork();
    if (!forked.ok()) return forked.status();
    child->tables.push_back(*std::move(forked));
  }
  for (size_t g = 0; g < child->tables.size(); ++g) view_refs_[g] += child->tables[g].num_views();
  child->id = child_id;
  child->prompt_len = parent->prompt_len;
  child->output_begin = parent->output_begin;
  child->num_computed = parent->num_computed;
  child->cached_tokens = parent->cached_tokens;
  child->tokens = parent->tokens;
  child->root_hash = parent->root_hash;
  child->block_hashes = parent->block_hashes;
  child->cache_limit_block = parent->cache_limit_block;
  child->dedup = parent->dedup;
  child->segmenter = parent->segmenter;
  child->pending_steps.assign(parent->pending_steps.begin() + parent->pending_head,
                              parent->pending_steps.end());
  child->near_pending.assign(parent->near_pending.begin() + parent->near_head,
                             parent->near_pending.end());
  child->index = parent->index;
  Sequence* raw = child.get();
  sequences_.emplace(child_id, std::move(child));
  if (raw->HasPendingSteps()) {
    raw->in_dedup_list = true;
    dedup_list_.push_back(raw);
  }
  PublishGauges();
  return absl::OkStatus();
}

absl::Status KvManager::Free(uint64_t seq_id) {
  const auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) return NotFound(seq_id);
  Sequence* s = it->second.get();
  if (s->in_commit_list) RemoveFromList(&commit_list_, s);
  if (s->in_dedup_list) RemoveFromList(&dedup_list_, s);
  absl::Status status;
  for (size_t g = 0; g < s->tables.size(); ++g) {
    view_refs_[g] -= s->tables[g].num_views();
    status.Update(s->tables[g].Release());
  }
  sequences_.erase(it);
  // A copy into a block that nobody holds any more is moot.
  for (size_t g = 0; g < pools_.size(); ++g) {
    auto& copies = pending_copies_[g];
    const BlockPool& pool = *pools_[g];
    copies.erase(std::remove_if(copies.begin(), copies.end(),
                                [&pool](const BlockCopy& c) {
                                  return pool.state(c.second) != BlockState::kInUse;
                                }),
                 copies.end());
  }
  PublishGauges();
  return status;
}

// --- Per step --------------------------------------------------------------

bool KvManager::CanAppend(uint64_t seq_id, int32_t n) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr || n < 0) return false;
  for (size_t g = 0; g < pools_.size(); ++g) {
    if (s->tables[g].BlocksNeeded(n) > pools_[g]->num_available()) return false;
  }
  return true;
}

bool KvManager::CanAppendAll(absl::Span<const uint64_t> seq_ids, int32_t n) const {
  if (n < 0) return false;
  for (size_t g = 0; g < pools_.size(); ++g) {
    int64_t need = 0;
    for (const uint64_t id : seq_ids) {
      const Sequence* s = Find(id);
      if (s == nullptr) return false;
      need += s->tables[g].BlocksNeeded(n);
    }
    if (need > pools_[g]->num_available()) return false;
  }
  return true;
}

absl::Status KvManager::SetToken(uint64_t seq_id, int32_t pos, int32_t token_id) {
  Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  if (pos < std::max(s->num_computed, s->prompt_len) || pos >= s->num_tokens()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetToken: position ", pos, " of sequence ", seq_id,
                     " is not an uncommitted generated ", "token (", s->num_computed,
                     " committed, prompt ", s->prompt_len, ", ", s->num_tokens(), " appended)"));
  }
  s->tokens[pos] = token_id;
  return absl::OkStatus();
}

absl::Status KvManager::AppendTokens(uint64_t seq_id, absl::Span<const int32_t> token_ids) {
  Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  if (token_ids.empty()) return absl::OkStatus();
  const int32_t pos = s->num_tokens();
  if (token_ids.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max() - pos)) {
    return absl::InvalidArgumentError("sequence too long");
  }
  const auto n = static_cast<int32_t>(token_ids.size());
  // Prompt positions must carry the prompt's ids.
  const int32_t prompt_part = std::clamp(s->prompt_len - pos, 0, n);
  for (int32_t k = 0; k < prompt_part; ++k) {
    if (token_ids[k] != s->tokens[pos + k]) {
      return absl::InvalidArgumentError(
          absl::StrCat("token_ids[", k, "] = ", token_ids[k], " but prompt position ", pos + k,
                       " holds ", s->tokens[pos + k], " (sequence ", seq_id, ")"));
    }
  }
  const size_t groups = pools_.size();
  for (size_t g = 0; g < groups; ++g) {
    const int32_t need = s->tables[g].BlocksNeeded(n);
    if (need > pools_[g]->num_available()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("KV pool of layer group ", g, ": sequence ", seq_id, " needs ", need,
                       " blocks for ", n, " tokens, ", pools_[g]->num_available(), " available"));
    }
  }
  for (size_t g = 0; g < groups; ++g) {
    const size_t copies_before = pending_copies_[g].size();
    KV_RETURN_IF_ERROR(s->tables[g].Append(n, &pending_copies_[g]));
    if (pending_copies_[g].size() != copies_before) {
      stats_.Add(KvStats::kCowCopies, pending_copies_[g].size() - copies_before);
    }
  }
  s->tokens.insert(s->tokens.end(), token_ids.begin() + prompt_part, token_ids.end());
  if (!s->in_commit_list) {
    s->in_commit_list = true;
    commit_list_.push_back(s);
  }
  PublishGauges();
  return absl::OkStatus();
}

std::vector<std::vector<BlockCopy>> KvManager::TakePendingCopies() {
  std::vector<std::vector<BlockCopy>> out(pools_.size());
  for (size_t g = 0; g < pools_.size(); ++g) out[g].swap(pending_copies_[g]);
  return out;
}

absl::StatusOr<absl::Span<const int32_t>> KvManager::GetBlockTable(uint64_t seq_id,
                                                                   int32_t group) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  if (group < 0 || group >= num_layer_groups()) {
    return absl::InvalidArgumentError(absl::StrCat("no layer group ", group));
  }
  return s->tables[group].blocks();
}

absl::Status KvManager::CopyBlockTables(uint64_t seq_id,
                                        std::vector<std::vector<int32_t>>* out) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  out->resize(s->tables.size());
  for (size_t g = 0; g < s->tables.size(); ++g) {
    const absl::Span<const int32_t> blocks = s->tables[g].blocks();
    (*out)[g].assign(blocks.begin(), blocks.end());
  }
  return absl::OkStatus();
}

absl::Status KvManager::CopyBlockTables(uint64_t seq_id, std::vector<std::vector<int32_t>>* blocks,
                                        std::vector<std::vector<int32_t>>* blocks_hi,
                                        std::vector<std::vector<int32_t>>* shifts) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  const size_t groups = s->tables.size();
  blocks->resize(groups);
  bool views = false;
  for (size_t g = 0; g < groups; ++g) {
    const absl::Span<const int32_t> b = s->tables[g].blocks();
    (*blocks)[g].assign(b.begin(), b.end());
    views = views || s->tables[g].num_views() > 0;
  }
  if (!views) {
    blocks_hi->clear();
    shifts->clear();
    return absl::OkStatus();
  }
  blocks_hi->resize(groups);
  shifts->resize(groups);
  for (size_t g = 0; g < groups; ++g) {
    const BlockTable& table = s->tables[g];
    if (table.num_views() == 0) {
      (*blocks_hi)[g].clear();
      (*shifts)[g].clear();
      continue;
    }
    (*blocks_hi)[g].assign(table.blocks_hi().begin(), table.blocks_hi().end());
    (*shifts)[g].assign(table.shifts().begin(), table.shifts().end());
  }
  return absl::OkStatus();
}

absl::StatusOr<KvManager::BlockTableSpans> KvManager::GetBlockTableSpans(uint64_t seq_id,
                                                                         int32_t group) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  if (group < 0 || group >= num_layer_groups()) {
    return absl::InvalidArgumentError(absl::StrCat("no layer group ", group));
  }
  const BlockTable& table = s->tables[group];
  return BlockTableSpans{table.blocks(), table.blocks_hi(), table.shifts()};
}

absl::Status KvManager::InsertIntoPrefixCache(Sequence* s) {
  const int32_t limit = std::min(s->num_computed / block_size_, s->cache_limit_block);
  const size_t groups = pools_.size();
  while (static_cast<int32_t>(s->block_hashes.size()) < limit) {
    const auto i = static_cast<int32_t>(s->block_hashes.size());
    const uint64_t parent = i == 0 ? s->root_hash : s->block_hashes[i - 1];
    const absl::Span<const int32_t> block_tokens(s->tokens.data() + size_t{1} * i * block_size_,
                                                 block_size_);
    const uint64_t hash = PrefixCache::ChainHash(parent, block_tokens);
    s->block_hashes.push_back(hash);
    for (size_t g = 0; g < groups; ++g) group_blocks_[g] = s->tables[g].block(i);
    absl::StatusOr<bool> inserted = cache_->Insert(parent, hash, block_tokens, group_blocks_);
    if (!inserted.ok()) return inserted.status();
  }
  return absl::OkStatus();
}

absl::Status KvManager::CommitStep(absl::Span<const uint64_t> keep_last) {
  absl::Status status;
  size_t kept = 0;  // sequences left with an uncommitted token, moved to the front
  for (Sequence* s : commit_list_) {
    const bool keep = std::find(keep_last.begin(), keep_last.end(), s->id) != keep_last.end();
    const int32_t end = s->num_tokens() - (keep ? 1 : 0);
    if (end > s->num_computed) {
      s->num_computed = end;
      if (cache_) status.Update(InsertIntoPrefixCache(s));
    }
    s->in_commit_list = s->num_computed < s->num_tokens();
    if (s->in_commit_list) commit_list_[kept++] = s;
  }
  commit_list_.resize(kept);
  PublishGauges();
  return status;
}

absl::Status KvManager::OnTokensGenerated(uint64_t seq_id,
                                          absl::Span<const absl::string_view> pieces) {
  Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  if (!s->dedup.enabled) return absl::OkStatus();
  // (A re-admitted sequence's output is part of its prompt: its pieces may
  // come before the prompt is appended; their steps wait to be written.)
  if (s->output_begin == s->prompt_len && s->num_tokens() < s->prompt_len) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", seq_id, " generated tokens before its prompt was appended (",
                     s->num_tokens(), " of ", s->prompt_len, ")"));
  }
  steps_.clear();
  for (const absl::string_view piece : pieces) segmenter_->Feed(&s->segmenter, piece, &steps_);
  for (const StepSegmenter::Step& step : steps_) {
    s->pending_steps.push_back({s->output_begin + step.begin, s->output_begin + step.end});
  }
  if (!steps_.empty() && !s->in_dedup_list) {
    s->in_dedup_list = true;
    dedup_list_.push_back(s);
  }
  return absl::OkStatus();
}

// --- MemShare --------------------------------------------------------------

void KvManager::CollectPairs(Sequence* s) {
  // A shifted window's blocks must be primary in every group that may
  // share (block_table.h: views never chain).
  auto primary = [this, s](int32_t logical) {
    for (const int32_t g : dedup_groups_) {
      if (!s->tables[g].IsPrimary(logical)) return false;
    }
    return true;
  };
  const OverlapMeasure measure = options_.dedup.overlap_measure;
  // Near matches wait (DedupPolicy::near_match_delay_tokens): the first
  // pass over a step then takes whole-window matches only.
  const bool two_pass =
      options_.dedup.near_match_delay_tokens > 0 && min_overlap_slots_ < block_size_;
  auto align = [&](DedupIndex::StepSpan span, DedupIndex::StepSpan candidate, int32_t min_overlap) {
    const absl::Span<const int32_t> written(s->tokens.data(), s->num_computed);
    if (options_.dedup.shifted_sharing) {
      BlockAligner::AlignShifted(written, block_size_, span, candidate, min_overlap, measure,
                                 primary, &matches_);
    } else {
      BlockAligner::Align(written, block_size_, span, candidate, min_overlap, measure, &matches_);
    }
  };

  // First the near matches of earlier steps that now lie far enough behind
  // the written frontier (blocks a first pass shared are left alone), then
  // the steps that finished: the pass's pairs of a sequence then come in
  // increasing logical order, so no decision pins a block (as a view's
  // source) that a later decision of the same pass would remap.
  while (s->near_head < s->near_pending.size()) {
    const Sequence::NearPass& near = s->near_pending[s->near_head];
    if (int64_t{near.span.end} + options_.dedup.near_match_delay_tokens > s->num_computed) break;
    matches_.clear();
    for (const int32_t step : near.candidate_steps) {
      align(near.span, s->index->span(step), min_overlap_slots_);
    }
    ++s->near_head;
    AddPairs(s, /*skip_shared=*/true);
  }
  while (s->pending_head < s->pending_steps.size()) {
    const DedupIndex::StepSpan span = s->pending_steps[s->pending_head];
    if (span.end > s->num_computed) break;  // its last tokens are not written yet
    ++s->pending_head;
    const absl::Span<const int32_t> step_tokens(s->tokens.data() + span.begin,
                                                span.end - span.begin);
    hasher_->Sign(step_tokens, signature_.data());
    s->index->Query(signature_.data(), s->dedup.tau_lex, options_.dedup.max_candidates_per_step,
                    &candidates_);
    stats_.Add(KvStats::kDedupSteps, 1);
    stats_.Add(KvStats::kDedupCandidateSteps, static_cast<int64_t>(candidates_.size()));
    matches_.clear();
    for (const DedupIndex::Candidate& c : candidates_) {
      align(span, s->index->span(c.step), two_pass ? block_size_ : min_overlap_slots_);
    }
    s->index->Insert(span, signature_.data());
    if (two_pass && !candidates_.empty()) {
      Sequence::NearPass near{span, {}};
      near.candidate_steps.reserve(candidates_.size());
      for (const DedupIndex::Candidate& c : candidates_) near.candidate_steps.push_back(c.step);
      s->near_pending.push_back(std::move(near));
    }
    AddPairs(s, /*skip_shared=*/false);
  }
}

bool KvManager::RefusedForNumbers(const Sequence& s, const BlockAligner::Match& m) const {
  if (!options_.dedup.keep_numbers || m.overlap >= block_size_) return false;
  const std::vector<bool>& digit = options_.digit_tokens;
  auto has_digit = [&digit](int32_t t) {
    return t >= 0 && static_cast<size_t>(t) < digit.size() && digit[t];
  };
  const int64_t block = int64_t{m.logical} * block_size_;
  const int64_t window = int64_t{m.reference} * block_size_ + m.shift;
  for (int32_t j = 0; j < block_size_; ++j) {
    const int32_t a = s.tokens[block + j];
    const int32_t b = s.tokens[window + j];
    if (a != b && (has_digit(a) || has_digit(b))) return true;
  }
  return false;
}

void KvManager::AddPairs(Sequence* s, bool skip_shared) {
  // Pairs of one logical block next to each other, candidates in order of
  // similarity, so that decisions can pick the best per block.
  std::stable_sort(matches_.begin(), matches_.end(),
                   [](const BlockAligner::Match& a, const BlockAligner::Match& b) {
                     return a.logical < b.logical;
                   });
  for (const BlockAligner::Match& m : matches_) {
    if (RefusedForNumbers(*s, m)) continue;
    for (const int32_t g : dedup_groups_) {
      const BlockTable& table = s->tables[g];
      // Shared in an earlier pass (or pinned under a view): leave it.
      if (skip_shared && (!table.IsPrimary(m.logical) || table.pins(m.logical) > 0)) continue;
      stats_.Add(KvStats::kDedupCandidates, 1);
      const int32_t candidate = table.block(m.logical);
      const int32_t reference = table.block(m.reference);
      if (m.shift == 0) {
        // A view entry's block holds other positions' K/V: no reference.
        if (table.kind(m.reference) == BlockEntryKind::kView) continue;
        if (candidate == reference) continue;  // already shared: nothing to verify
        pairs_[g].push_back(BlockPair{candidate, reference});
      } else {
        pairs_[g].push_back(BlockPair{candidate, reference, table.block(m.reference + 1), m.shift});
      }
      pair_meta_[g].push_back(PairMeta{s, m.logical, m.reference});
    }
  }
}

absl::Status KvManager::RunDedupOver(absl::Span<Sequence* const> seqs, BlockDistance& distance) {
  const size_t groups = pools_.size();
  for (size_t g = 0; g < groups; ++g) {
    pairs_[g].clear();
    pair_meta_[g].clear();
  }
  for (Sequence* s : seqs) {
    if (s->index.has_value()) CollectPairs(s);
  }
  // Verification: one call per group with every pair of the pass.
  for (size_t g = 0; g < groups; ++g) {
    if (pairs_[g].empty()) continue;
    sums_[g].assign(pairs_[g].size(), DistanceSums{});
    stats_.Add(KvStats::kDedupVerified, static_cast<int64_t>(pairs_[g].size()));
    KV_RETURN_IF_ERROR(
        distance.ComputeDistanceSums(static_cast<int32_t>(g), pairs_[g], absl::MakeSpan(sums_[g])));
  }
  // Decisions: per (sequence, logical block, group) the accepted pair with
  // the smallest distance; if it went stale in this pass (an earlier
  // decision moved its reference), the next accepted one.
  absl::Status status;
  for (size_t g = 0; g < groups; ++g) {
    const std::vector<BlockPair>& pairs = pairs_[g];
    const std::vector<PairMeta>& meta = pair_meta_[g];
    size_t i = 0;
    while (i < pairs.size()) {
      accepted_.clear();
      size_t j = i;
      for (; j < pairs.size() && meta[j].seq == meta[i].seq && meta[j].logical == meta[i].logical;
           ++j) {
        const DistanceSums& d = sums_[g][j];
        if (!AcceptPair(d, meta[j].seq->dedup.tau_kv)) {
          stats_.Add(KvStats::kDedupRejected, 1);
          continue;
        }
        accepted_.emplace_back(std::max(d.RelativeK(), d.RelativeV()), j);
      }
      std::stable_sort(accepted_.begin(), accepted_.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& [distance_unused, k] : accepted_) {
        Sequence* s = meta[k].seq;
        const RemapDecision decision{meta[k].logical, meta[k].reference_logical, pairs[k]};
        const int32_t views_before = s->tables[g].num_views();
        const absl::Status applied = Remapper::Apply(decision, s->num_computed, &s->tables[g]);
        view_refs_[g] += s->tables[g].num_views() - views_before;
        if (absl::IsAborted(applied)) continue;  // stale: try the next candidate
        if (!applied.ok()) {
          status.Update(applied);
          break;
        }
        stats_.Add(KvStats::kDedupRemapped, 1);
        ++s->remapped_blocks;
        if (pairs[k].shift > 0) {
          stats_.Add(KvStats::kDedupRemappedShifted, 1);
          ++s->shifted_blocks;
        }
        // Later K/V of this sequence is computed over the shared block.
        s->cache_limit_block = std::min(s->cache_limit_block, s->num_computed / block_size_);
        break;
      }
      i = j;
    }
  }
  return status;
}

absl::Status KvManager::RunDedup(BlockDistance& distance) {
  // The pass may not finish some steps (tokens not written yet): they stay.
  std::vector<Sequence*> seqs;
  seqs.swap(dedup_list_);
  absl::Status status = RunDedupOver(seqs, distance);
  for (Sequence* s : seqs) {
    s->in_dedup_list = s->HasPendingSteps();
    if (s->in_dedup_list) dedup_list_.push_back(s);
  }
  PublishGauges();
  return status;
}

absl::Status KvManager::RunDedupFor(uint64_t seq_id, BlockDistance& distance) {
  Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  Sequence* const one[] = {s};
  absl::Status status = RunDedupOver(one, distance);
  if (s->in_dedup_list && !s->HasPendingSteps()) {
    RemoveFromList(&dedup_list_, s);
    s->in_dedup_list = false;
  }
  PublishGauges();
  return status;
}

int32_t KvManager::ResetPrefixCache() {
  const int32_t dropped = cache_ ? cache_->Clear() : 0;
  PublishGauges();
  return dropped;
}

// --- Introspection ---------------------------------------------------------

absl::StatusOr<KvManager::SequenceInfo> KvManager::GetSequenceInfo(uint64_t seq_id) const {
  const Sequence* s = Find(seq_id);
  if (s == nullptr) return NotFound(seq_id);
  SequenceInfo info;
  info.prompt_tokens = s->prompt_len;
  info.num_tokens = s->num_tokens();
  info.num_computed_tokens = s->num_computed;
  info.cached_tokens = s->cached_tokens;
  info.logical_blocks = s->tables[0].num_blocks();
  info.remapped_blocks = s->remapped_blocks;
  info.shifted_blocks = s->shifted_blocks;
  info.generated_tokens = s->segmenter.num_tokens();
  info.dedup_steps = s->index.has_value() ? s->index->num_steps() : 0;
  info.memshare = s->dedup.enabled;
  return info;
}

absl::Status KvManager::CheckInvariants() const {
  const size_t groups = pools_.size();
  for (const auto& p : pools_) KV_RETURN_IF_ERROR(p->CheckInvariants());
  if (cache_) KV_RETURN_IF_ERROR(cache_->CheckInvariants());
  std::vector<std::vector<int32_t>> refs(groups, std::vector<int32_t>(num_blocks(), 0));
  std::vector<int64_t> views(groups, 0);
  for (const auto& [id, s] : sequences_) {
    if (s->tables.size() != groups) {
      return absl::InternalError(
          absl::StrCat("sequence ", id, " has ", s->tables.size(), " tables"));
    }
    const int32_t n = s->num_tokens();
    if (s->num_computed > n) {
      return absl::InternalError(
          absl::StrCat("sequence ", id, " computed ", s->num_computed, " of ", n));
    }
    if (static_cast<int32_t>(s->tokens.size()) != std::max(n, s->prompt_len)) {
      return absl::InternalError(
          absl::StrCat("sequence ", id, " records ", s->tokens.size(), " tokens, has ", n));
    }
    const bool listed =
        std::find(commit_list_.begin(), commit_list_.end(), s.get()) != commit_list_.end();
    if (listed != s->in_commit_list || (s->num_computed < n && !listed)) {
      return absl::InternalError(absl::StrCat("sequence ", id, " commit list membership wrong (",
                                              s->num_computed, " of ", n, " written)"));
    }
    const bool dedup_listed =
        std::find(dedup_list_.begin(), dedup_list_.end(), s.get()) != dedup_list_.end();
    if (dedup_listed != s->in_dedup_list || (s->HasPendingSteps() && !dedup_listed)) {
      return absl::InternalError(absl::StrCat("sequence ", id, " dedup list membership wrong"));
    }
    for (size_t g = 0; g < groups; ++g) {
      const BlockTable& table = s->tables[g];
      if (table.num_tokens() != n || table.num_blocks() != (n + block_size_ - 1) / block_size_) {
        return absl::InternalError(absl::StrCat("sequence ", id, " group ", g, ": ",
                                                table.num_blocks(), " blocks for ",
                                                table.num_tokens(), " tokens"));
      }
      if (absl::Status e = table.CheckEntries(); !e.ok()) {
        return absl::InternalError(absl::StrCat("sequence ", id, " group ", g, ": ", e.message()));
      }
      views[g] += table.num_views();
      for (int32_t i = 0; i < table.num_blocks(); ++i) {
        const bool view = table.kind(i) == BlockEntryKind::kView;
        for (const int32_t b : {table.block(i), table.block_hi(i)}) {
          if (!pools_[g]->IsValid(b) || pools_[g]->state(b) != BlockState::kInUse) {
            return absl::InternalError(absl::StrCat("sequence ", id, " group ", g, " names block ",
                                                    b, " that is not in use"));
          }
        }
        ++refs[g][table.block(i)];
        if (!view) continue;
        ++refs[g][table.block_hi(i)];
        // A view reads only blocks that are full, written and never written
        // again (CheckEntries: its two entries are earlier than it).
        if (i >= s->num_computed / block_size_) {
          return absl::InternalError(absl::StrCat("sequence ", id, " group ", g, " view ", i,
                                                  " past the written blocks (", s->num_computed,
                                                  " tokens written)"));
        }
      }
      // The blocks the next forward writes are this table's alone.
      for (int32_t i = s->num_computed / block_size_; i < table.num_blocks(); ++i) {
        if (s->num_computed == n) break;
        const int32_t b = table.block(i);
        if (pools_[g]->ref_count(b) != 1 || pools_[g]->cached(b)) {
          return absl::InternalError(absl::StrCat(
              "sequence ", id, " group ", g, " will write block ", b, " which has ref ",
              pools_[g]->ref_count(b), " cached ", int{pools_[g]->cached(b)}));
        }
      }
    }
  }
  for (size_t g = 0; g < groups; ++g) {
    if (views[g] != view_refs_[g]) {
      return absl::InternalError(
          absl::StrCat("group ", g, " has ", views[g], " shifted views, recorded ", view_refs_[g]));
    }
    for (int32_t b = 0; b < num_blocks(); ++b) {
      if (refs[g][b] != pools_[g]->ref_count(b)) {
        return absl::InternalError(absl::StrCat("group ", g, " block ", b, " has ref ",
                                                pools_[g]->ref_count(b), " but ", refs[g][b],
                                                " table references"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace memshare::kvmanager
