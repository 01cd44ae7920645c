#include "kvmanager/block_pool.h"

#include <cassert>

#include "absl/strings/str_cat.h"
#include "kvmanager/internal/status_macros.h"

namespace memshare::kvmanager {

using internal::Misuse;

absl::StatusOr<std::unique_ptr<BlockPool>> BlockPool::Create(const Options& options) {
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_blocks must be > 0, got ", options.num_blocks));
  }
  if (options.layer_group < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer_group must be >= 0, got ", options.layer_group));
  }
  return std::unique_ptr<BlockPool>(new BlockPool(options));
}

BlockPool::BlockPool(const Options& options)
    : layer_group_(options.layer_group), meta_(options.num_blocks) {
  free_.reserve(options.num_blocks);
  // Stack: block 0 on top, so a fresh pool hands out 0, 1, 2, ...
  for (int32_t b = options.num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

BlockPool::~BlockPool() {
  // LevelDB's discipline: every reference taken was released.
  assert(total_refs_ == 0 && "BlockPool destroyed while blocks are referenced");
}

absl::Status BlockPool::OutOfRange(int32_t block) const {
  return Misuse(
      absl::FailedPreconditionError(absl::StrCat("block ", block, " outside pool of layer group ",
                                                 layer_group_, " (", num_blocks(), " blocks)")));
}

void BlockPool::LruPushBack(int32_t block) {
  Meta& m = meta_[block];
  m.lru_prev = lru_tail_;
  m.lru_next = -1;
  if (lru_tail_ >= 0) {
    meta_[lru_tail_].lru_next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++num_evictable_;
}

void BlockPool::LruRemove(int32_t block) {
  Meta& m = meta_[block];
  if (m.lru_prev >= 0) {
    meta_[m.lru_prev].lru_next = m.lru_next;
  } else {
    lru_head_ = m.lru_next;
  }
  if (m.lru_next >= 0) {
    meta_[m.lru_next].lru_prev = m.lru_prev;
  } else {
    lru_tail_ = m.lru_prev;
  }
  m.lru_prev = m.lru_next = -1;
  --num_evictable_;
}

int32_t BlockPool::TakeFresh() {
  int32_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else {
    block = lru_head_;
    LruRemove(block);
    meta_[block].cached = false;
    ++num_evictions_;
    if (listener_ != nullptr) listener_->OnBlockEvicted(layer_group_, block);
  }
  Meta& m = meta_[block];
  m.state = BlockState::kInUse;
  m.ref = 1;
  ++total_refs_;
  return block;
}

absl::StatusOr<int32_t> BlockPool::Allocate() {
  if (num_available() == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("KV block pool of layer group ", layer_group_,
                                                     " exhausted (", num_blocks(),
                                                     " blocks in use)"));
  }
  return TakeFresh();
}

absl::Status BlockPool::Allocate(int32_t n, std::vector<int32_t>* out) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " blocks"));
  }
  if (n > num_available()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV block pool of layer group ", layer_group_,
                                                     ": ", n, " blocks needed, ", num_available(),
                                                     " available"));
  }
  out->reserve(out->size() + n);
  for (int32_t i = 0; i < n; ++i) out->push_back(TakeFresh());
  return absl::OkStatus();
}

absl::Status BlockPool::Ref(int32_t block) {
  if (!IsValid(block)) return OutOfRange(block);
  Meta& m = meta_[block];
  switch (m.state) {
    case BlockState::kFree:
      return Misuse(absl::FailedPreconditionError(absl::StrCat("reference to free block ", block,
                                                               " of layer group ", layer_group_,
                                                               " (use after free)")));
    case BlockState::kEvictable:
      LruRemove(block);
      m.state = BlockState::kInUse;
      break;
    case BlockState::kInUse:
      break;
  }
  if (++m.ref == 2) ++num_shared_;
  ++total_refs_;
  return absl::OkStatus();
}

absl::Status BlockPool::Unref(int32_t block) {
  if (!IsValid(block)) return OutOfRange(block);
  Meta& m = meta_[block];
  if (m.state != BlockState::kInUse) {
    return Misuse(absl::FailedPreconditionError(absl::StrCat("release of unreferenced block ",
                                                             block, " of layer group ",
                                                             layer_group_, " (double release)")));
  }
  --total_refs_;
  const int32_t ref = --m.ref;
  if (ref == 1) --num_shared_;
  if (ref > 0) return absl::OkStatus();
  if (m.cached) {
    m.state = BlockState::kEvictable;
    LruPushBack(block);
  } else {
    m.state = BlockState::kFree;
    free_.push_back(block);
  }
  return absl::OkStatus();
}

absl::Status BlockPool::SetCached(int32_t block) {
  if (!IsValid(block)) return OutOfRange(block);
  if (meta_[block].state != BlockState::kInUse) {
    return Misuse(absl::FailedPreconditionError(
        absl::StrCat("cannot cache unreferenced block ", block, " of layer group ", layer_group_)));
  }
  meta_[block].cached = true;
  return absl::OkStatus();
}

absl::Status BlockPool::ClearCached(int32_t block) {
  if (!IsValid(block)) return OutOfRange(block);
  Meta& m = meta_[block];
  if (!m.cached) return absl::OkStatus();
  m.cached = false;
  if (m.state == BlockState::kEvictable) {
    LruRemove(block);
    m.state = BlockState::kFree;
    free_.push_back(block);
  }
  return absl::OkStatus();
}

absl::Status BlockPool::CheckInvariants() const {
  auto fail = [this](auto&&... args) {
    return absl::InternalError(absl::StrCat("pool of layer group ", layer_group_, ": ", args...));
  };
  const int32_t n = num_blocks();
  std::vector<uint8_t> on_free(n, 0);
  for (int32_t b : free_) {
    if (!IsValid(b)) return fail("free list holds id ", b);
    if (on_free[b]++) return fail("block ", b, " twice on the free list");
    if (meta_[b].state != BlockState::kFree) return fail("block ", b, " on free list not free");
  }
  std::vector<uint8_t> on_lru(n, 0);
  int32_t lru_count = 0;
  int32_t prev = -1;
  for (int32_t b = lru_head_; b >= 0; b = meta_[b].lru_next) {
    if (!IsValid(b)) return fail("LRU holds id ", b);
    if (on_lru[b]++) return fail("LRU has a cycle at block ", b);
    if (meta_[b].lru_prev != prev) return fail("LRU back link broken at block ", b);
    if (meta_[b].state != BlockState::kEvictable) return fail("block ", b, " on LRU not evictable");
    prev = b;
    ++lru_count;
  }
  if (prev != lru_tail_) return fail("LRU tail is ", lru_tail_, ", list ends at ", prev);
  if (lru_count != num_evictable_) {
    return fail("LRU holds ", lru_count, " blocks, counter says ", num_evictable_);
  }
  int64_t refs = 0;
  int32_t shared = 0;
  for (int32_t b = 0; b < n; ++b) {
    const Meta& m = meta_[b];
    switch (m.state) {
      case BlockState::kFree:
        if (m.ref != 0 || m.cached || !on_free[b]) {
          return fail("free block ", b, " ref=", m.ref, " cached=", int{m.cached},
                      " listed=", int{on_free[b]});
        }
        break;
      case BlockState::kEvictable:
        if (m.ref != 0 || !m.cached || !on_lru[b]) {
          return fail("evictable block ", b, " ref=", m.ref, " cached=", int{m.cached});
        }
        break;
      case BlockState::kInUse:
        if (m.ref <= 0 || on_free[b] || on_lru[b]) {
          return fail("in-use block ", b, " ref=", m.ref, " listed");
        }
        break;
    }
    refs += m.ref;
    if (m.ref >= 2) ++shared;
  }
  if (refs != total_refs_) return fail("Σ ref = ", refs, ", counter says ", total_refs_);
  if (shared != num_shared_) return fail(shared, " shared blocks, counter says ", num_shared_);
  return absl::OkStatus();
}

}  // namespace memshare::kvmanager
