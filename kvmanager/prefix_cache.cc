#include "kvmanager/prefix_cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvmanager/internal/status_macros.h"
#include "xxhash.h"

namespace memshare::kvmanager {
namespace {

// Seed of the root hash, so that no salt and an empty salt agree and differ
// from a chain of any other origin.
constexpr uint64_t kRootSeed = 0x6d656d7368617265ULL;  // "memshare"

}  // namespace

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(const Options& options,
                                                                 std::vector<BlockPool*> pools) {
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be > 0, got ", options.block_size));
  }
  if (pools.empty()) return absl::InvalidArgumentError("prefix cache needs at least one pool");
  for (size_t g = 0; g < pools.size(); ++g) {
    if (pools[g] == nullptr) return absl::InvalidArgumentError(absl::StrCat("pool ", g, " null"));
    if (pools[g]->num_blocks() != pools[0]->num_blocks()) {
      return absl::InvalidArgumentError("every layer group's pool must have the same size");
    }
  }
  return std::unique_ptr<PrefixCache>(new PrefixCache(options, std::move(pools)));
}

PrefixCache::PrefixCache(const Options& options, std::vector<BlockPool*> pools)
    : block_size_(options.block_size), pools_(std::move(pools)) {
  const int32_t num_blocks = pools_[0]->num_blocks();
  const size_t groups = pools_.size();
  entries_.resize(num_blocks);
  entry_tokens_.resize(size_t{1} * num_blocks * block_size_);
  entry_blocks_.resize(size_t{1} * num_blocks * groups);
  free_entries_.reserve(num_blocks);
  for (int32_t e = num_blocks - 1; e >= 0; --e) free_entries_.push_back(e);
  index_.reserve(num_blocks);
  entry_of_.assign(groups, std::vector<int32_t>(num_blocks, -1));
  for (BlockPool* pool : pools_) pool->SetEvictionListener(this);
}

PrefixCache::~PrefixCache() {
  Clear();
  for (BlockPool* pool : pools_) pool->SetEvictionListener(nullptr);
}

uint64_t PrefixCache::RootHash(absl::string_view salt) {
  return XXH3_64bits_withSeed(salt.data(), salt.size(), kRootSeed);
}

uint64_t PrefixCache::ChainHash(uint64_t parent, absl::Span<const int32_t> block_tokens) {
  return XXH3_64bits_withSeed(block_tokens.data(), block_tokens.size() * sizeof(int32_t), parent);
}

void PrefixCache::Lookup(absl::Span<const int32_t> tokens, uint64_t root, int32_t max_blocks,
                         Match* out) const {
  out->num_blocks = 0;
  out->hashes.clear();
  out->blocks.clear();
  const size_t groups = pools_.size();
  const int32_t limit =
      std::min<int64_t>(max_blocks, static_cast<int64_t>(tokens.size()) / block_size_);
  uint64_t parent = root;
  for (int32_t i = 0; i < limit; ++i) {
    const absl::Span<const int32_t> block_tokens =
        tokens.subspan(size_t{1} * i * block_size_, block_size_);
    const uint64_t hash = ChainHash(parent, block_tokens);
    const auto it = index_.find(hash);
    if (it == index_.end()) break;
    const int32_t e = it->second;
    if (entries_[e].parent != parent ||
        std::memcmp(&entry_tokens_[size_t{1} * e * block_size_], block_tokens.data(),
                    sizeof(int32_t) * block_size_) != 0) {
      break;  // a 64-bit collision: not our prefix
    }
    out->hashes.push_back(hash);
    for (size_t g = 0; g < groups; ++g) out->blocks.push_back(entry_blocks_[e * groups + g]);
    ++out->num_blocks;
    parent = hash;
  }
}

absl::StatusOr<bool> PrefixCache::Insert(uint64_t parent, uint64_t hash,
                                         absl::Span<const int32_t> block_tokens,
                                         absl::Span<const int32_t> blocks) {
  const size_t groups = pools_.size();
  if (block_tokens.size() != static_cast<size_t>(block_size_) || blocks.size() != groups) {
    return absl::InvalidArgumentError(absl::StrCat("prefix cache insert of ", block_tokens.size(),
                                                   " tokens in ", blocks.size(), " groups; want ",
                                                   block_size_, " tokens in ", groups, " groups"));
  }
  if (index_.contains(hash)) return false;
  for (size_t g = 0; g < groups; ++g) {
    if (!pools_[g]->IsValid(blocks[g]) || pools_[g]->state(blocks[g]) != BlockState::kInUse) {
      return internal::Misuse(absl::FailedPreconditionError(absl::StrCat(
          "prefix cache insert of unreferenced block ", blocks[g], " in layer group ", g)));
    }
    if (entry_of_[g][blocks[g]] >= 0) return false;
  }
  // Entries <= blocks per pool, since each names a distinct block of group 0.
  assert(!free_entries_.empty());
  const int32_t e = free_entries_.back();
  free_entries_.pop_back();
  entries_[e] = Entry{hash, parent, true};
  std::memcpy(&entry_tokens_[size_t{1} * e * block_size_], block_tokens.data(),
              sizeof(int32_t) * block_size_);
  for (size_t g = 0; g < groups; ++g) {
    entry_blocks_[e * groups + g] = blocks[g];
    entry_of_[g][blocks[g]] = e;
    KV_RETURN_IF_ERROR(pools_[g]->SetCached(blocks[g]));
  }
  index_.emplace(hash, e);
  return true;
}

void PrefixCache::RemoveEntry(int32_t e, int32_t skip_group) {
  const size_t groups = pools_.size();
  for (size_t g = 0; g < groups; ++g) {
    const int32_t block = entry_blocks_[e * groups + g];
    entry_of_[g][block] = -1;
    if (static_cast<int32_t>(g) != skip_group) (void)pools_[g]->ClearCached(block);
  }
  index_.erase(entries_[e].hash);
  entries_[e].live = false;
  free_entries_.push_back(e);
}

void PrefixCache::OnBlockEvicted(int32_t layer_group, int32_t block) {
  const int32_t e = entry_of_[layer_group][block];
  // The pool caches only what Insert marked, and Insert registers it here.
  assert(e >= 0);
  if (e < 0) return;
  ++num_evicted_entries_;
  RemoveEntry(e, layer_group);
}

int32_t PrefixCache::Clear() {
  int32_t dropped = 0;
  for (int32_t e = 0; e < static_cast<int32_t>(entries_.size()); ++e) {
    if (!entries_[e].live) continue;
    RemoveEntry(e, /*skip_group=*/-1);
    ++dropped;
  }
  return dropped;
}

absl::Status PrefixCache::CheckInvariants() const {
  const size_t groups = pools_.size();
  int32_t live = 0;
  for (int32_t e = 0; e < static_cast<int32_t>(entries_.size()); ++e) {
    if (!entries_[e].live) continue;
    ++live;
    const auto it = index_.find(entries_[e].hash);
    if (it == index_.end() || it->second != e) {
      return absl::InternalError(absl::StrCat("prefix entry ", e, " not indexed by its hash"));
    }
    const absl::Span<const int32_t> tokens(&entry_tokens_[size_t{1} * e * block_size_],
                                           block_size_);
    if (ChainHash(entries_[e].parent, tokens) != entries_[e].hash) {
      return absl::InternalError(absl::StrCat("prefix entry ", e, " hash does not match tokens"));
    }
    for (size_t g = 0; g < groups; ++g) {
      const int32_t b = entry_blocks_[e * groups + g];
      if (entry_of_[g][b] != e) {
        return absl::InternalError(
            absl::StrCat("block ", b, " of group ", g, " not mapped back to entry ", e));
      }
      if (!pools_[g]->cached(b) || pools_[g]->state(b) == BlockState::kFree) {
        return absl::InternalError(
            absl::StrCat("cached block ", b, " of group ", g, " is free or not marked cached"));
      }
    }
  }
  if (live != num_entries()) {
    return absl::InternalError(absl::StrCat(live, " live entries, ", num_entries(), " indexed"));
  }
  for (size_t g = 0; g < groups; ++g) {
    for (int32_t b = 0; b < pools_[g]->num_blocks(); ++b) {
      const bool named = entry_of_[g][b] >= 0;
      if (named != pools_[g]->cached(b)) {
        return absl::InternalError(absl::StrCat("block ", b, " of group ", g, " cached=",
                                                int{pools_[g]->cached(b)}, " named=", int{named}));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace memshare::kvmanager
