#include "kvmanager/block_table.h"

#include "absl/strings/str_cat.h"
#include "kvmanager/internal/status_macros.h"

namespace memshare::kvmanager {

BlockTable::BlockTable(BlockTable&& other) noexcept
    : pool_(other.pool_),
      block_size_(other.block_size_),
      num_tokens_(other.num_tokens_),
      blocks_(std::move(other.blocks_)),
      hi_(std::move(other.hi_)),
      shifts_(std::move(other.shifts_)),
      meta_(std::move(other.meta_)),
      num_views_(other.num_views_) {
  other.blocks_.clear();
  other.hi_.clear();
  other.shifts_.clear();
  other.meta_.clear();
  other.num_tokens_ = 0;
  other.num_views_ = 0;
}

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this != &other) {
    (void)Release();
    pool_ = other.pool_;
    block_size_ = other.block_size_;
    num_tokens_ = other.num_tokens_;
    blocks_ = std::move(other.blocks_);
    hi_ = std::move(other.hi_);
    shifts_ = std::move(other.shifts_);
    meta_ = std::move(other.meta_);
    num_views_ = other.num_views_;
    other.blocks_.clear();
    other.hi_.clear();
    other.shifts_.clear();
    other.meta_.clear();
    other.num_tokens_ = 0;
    other.num_views_ = 0;
  }
  return *this;
}

void BlockTable::ExtendExtras() {
  if (!hi_.empty()) {
    for (size_t i = hi_.size(); i < blocks_.size(); ++i) hi_.push_back(blocks_[i]);
    shifts_.resize(blocks_.size(), 0);
  }
  if (!meta_.empty()) meta_.resize(blocks_.size());
}

void BlockTable::EnsureMeta() {
  if (meta_.empty()) meta_.resize(blocks_.size());
}

void BlockTable::EnsureViewArrays() {
  if (hi_.empty()) {
    hi_ = blocks_;
    shifts_.assign(blocks_.size(), 0);
  }
}

int32_t BlockTable::BlocksNeeded(int32_t n) const {
  if (n <= 0) return 0;
  const int64_t total = int64_t{num_tokens_} + n;
  int64_t need = (total + block_size_ - 1) / block_size_ - num_blocks();
  if (num_tokens_ % block_size_ != 0 && pool_->ref_count(blocks_.back()) > 1) ++need;
  return static_cast<int32_t>(need);
}

absl::Status BlockTable::Append(int32_t n, std::vector<BlockCopy>* copies) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot append ", n, " tokens"));
  if (n == 0) return absl::OkStatus();
  const int32_t need = BlocksNeeded(n);
  if (need > pool_->num_available()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV block pool of layer group ", pool_->layer_group(), ": ", need,
                     " blocks needed, ", pool_->num_available(), " available"));
  }
  int32_t fresh = need;
  if (num_tokens_ % block_size_ != 0 && pool_->ref_count(blocks_.back()) > 1) {
    // Copy-on-write: the shared partial block is about to be written. The
    // new block is taken while the old one is still referenced, so the
    // source cannot be handed out (and overwritten) before the copy runs.
    // A partial block is never a view nor backs one: only its lo reference
    // changes.
    absl::StatusOr<int32_t> dst = pool_->Allocate();
    if (!dst.ok()) return dst.status();
    const int32_t src = blocks_.back();
    copies->emplace_back(src, *dst);
    blocks_.back() = *dst;
    if (!hi_.empty()) hi_.back() = *dst;
    KV_RETURN_IF_ERROR(pool_->Unref(src));
    --fresh;
  }
  KV_RETURN_IF_ERROR(pool_->Allocate(fresh, &blocks_));
  ExtendExtras();
  num_tokens_ += n;
  return absl::OkStatus();
}

absl::Status BlockTable::AppendFullBlock(int32_t block) {
  if (num_tokens_ % block_size_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot attach a full block after ",
                                                      num_tokens_, " tokens (block size ",
                                                      block_size_, ")"));
  }
  KV_RETURN_IF_ERROR(pool_->Ref(block));
  blocks_.push_back(block);
  ExtendExtras();
  num_tokens_ += block_size_;
  return absl::OkStatus();
}

absl::StatusOr<BlockTable> BlockTable::Fork() const {
  BlockTable child(pool_, block_size_);
  child.blocks_.reserve(blocks_.size());
  child.hi_.reserve(hi_.size());
  child.shifts_.reserve(shifts_.size());
  // Entries are pushed once their references are taken (a view's two
  // together): on failure the child's destructor releases exactly what it
  // took.
  for (size_t i = 0; i < blocks_.size(); ++i) {
    KV_RETURN_IF_ERROR(pool_->Ref(blocks_[i]));
    const bool view = !shifts_.empty() && shifts_[i] != 0;
    if (view) {
      if (absl::Status s = pool_->Ref(hi_[i]); !s.ok()) {
        (void)pool_->Unref(blocks_[i]);
        return s;
      }
    }
    child.blocks_.push_back(blocks_[i]);
    if (!hi_.empty()) {
      child.hi_.push_back(hi_[i]);
      child.shifts_.push_back(shifts_[i]);
      child.num_views_ += view ? 1 : 0;
    }
  }
  child.meta_ = meta_;
  child.num_tokens_ = num_tokens_;
  return child;
}

absl::Status BlockTable::ReleaseEntry(int32_t logical) {
  absl::Status status;
  if (kind(logical) == BlockEntryKind::kView) {
    const int32_t k = meta_[logical].view_of;
    --meta_[k].pins;
    --meta_[k + 1].pins;
    status.Update(pool_->Unref(hi_[logical]));
    hi_[logical] = blocks_[logical];
    shifts_[logical] = 0;
    meta_[logical].view_of = -1;
    --num_views_;
  }
  status.Update(pool_->Unref(blocks_[logical]));
  return status;
}

absl::Status BlockTable::Replace(int32_t logical, int32_t block) {
  if (logical < 0 || logical >= num_full_blocks()) {
    return absl::FailedPreconditionError(absl::StrCat("logical block ", logical,
                                                      " is not a full block (", num_tokens_,
                                                      " tokens, block size ", block_size_, ")"));
  }
  if (pins(logical) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "logical block ", logical, " backs ", pins(logical), " shifted view(s): not replaced"));
  }
  const BlockEntryKind old_kind = kind(logical);
  if (old_kind != BlockEntryKind::kView && blocks_[logical] == block) return absl::OkStatus();
  // Reference the new block before releasing the old: never a moment where
  // the entry names a block it holds no reference on.
  KV_RETURN_IF_ERROR(pool_->Ref(block));
  EnsureMeta();
  absl::Status status = ReleaseEntry(logical);
  blocks_[logical] = block;
  if (!hi_.empty()) hi_[logical] = block;
  meta_[logical].kind = BlockEntryKind::kRemapped;
  return status;
}

absl::Status BlockTable::MakeView(int32_t logical, int32_t reference_logical, int32_t shift) {
  const int32_t k = reference_logical;
  if (logical < 0 || logical >= num_full_blocks()) {
    return absl::FailedPreconditionError(absl::StrCat("logical block ", logical,
                                                      " is not a full block (", num_tokens_,
                                                      " tokens, block size ", block_size_, ")"));
  }
  if (shift < 1 || shift >= block_size_) {
    return absl::FailedPreconditionError(
        absl::StrCat("view shift ", shift, " outside [1, ", block_size_, ")"));
  }
  if (k < 0 || k + 1 >= logical) {
    return absl::FailedPreconditionError(absl::StrCat("view of logical block ", logical,
                                                      " over blocks ", k, ", ", k + 1,
                                                      " refused: both must be earlier blocks"));
  }
  if (!IsPrimary(k) || !IsPrimary(k + 1)) {
    return absl::FailedPreconditionError(absl::StrCat("view of logical block ", logical,
                                                      " over blocks ", k, ", ", k + 1,
                                                      " refused: both must be primary entries"));
  }
  if (pins(logical) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "logical block ", logical, " backs ", pins(logical), " shifted view(s): not a view"));
  }
  const int32_t lo = blocks_[k];
  const int32_t hi = blocks_[k + 1];
  KV_RETURN_IF_ERROR(pool_->Ref(lo));
  if (absl::Status s = pool_->Ref(hi); !s.ok()) {
    (void)pool_->Unref(lo);
    return s;
  }
  EnsureMeta();
  EnsureViewArrays();
  absl::Status status = ReleaseEntry(logical);
  blocks_[logical] = lo;
  hi_[logical] = hi;
  shifts_[logical] = shift;
  meta_[logical].kind = BlockEntryKind::kView;
  meta_[logical].view_of = k;
  ++meta_[k].pins;
  ++meta_[k + 1].pins;
  ++num_views_;
  return status;
}

absl::Status BlockTable::CheckEntries() const {
  const auto n = static_cast<size_t>(num_blocks());
  if (!hi_.empty() && (hi_.size() != n || shifts_.size() != n)) {
    return absl::InternalError(absl::StrCat("view arrays of ", hi_.size(), "/", shifts_.size(),
                                            " entries for ", n, " blocks"));
  }
  if (hi_.empty() && !shifts_.empty()) return absl::InternalError("shifts without hi blocks");
  if (!meta_.empty() && meta_.size() != n) {
    return absl::InternalError(absl::StrCat("entry meta of ", meta_.size(), " for ", n));
  }
  if (meta_.empty() && (num_views_ != 0 || !hi_.empty())) {
    return absl::InternalError("views without entry meta");
  }
  std::vector<int32_t> pins(n, 0);
  int32_t views = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto logical = static_cast<int32_t>(i);
    const int32_t s = shift(logical);
    if (kind(logical) != BlockEntryKind::kView) {
      if (s != 0 || block_hi(logical) != blocks_[i] || view_reference(logical) != -1) {
        return absl::InternalError(absl::StrCat("entry ", i, " is no view but has shift ", s,
                                                ", hi ", block_hi(logical), ", reference ",
                                                view_reference(logical)));
      }
      continue;
    }
    ++views;
    const int32_t k = meta_[i].view_of;
    if (s < 1 || s >= block_size_ || k < 0 || k + 1 >= logical || logical >= num_full_blocks()) {
      return absl::InternalError(absl::StrCat("view ", i, " over ", k, " at shift ", s, " with ",
                                              num_full_blocks(), " full blocks"));
    }
    if (!IsPrimary(k) || !IsPrimary(k + 1) || blocks_[i] != blocks_[k] ||
        hi_[i] != blocks_[k + 1]) {
      return absl::InternalError(
          absl::StrCat("view ", i, " reads ", blocks_[i], "/", hi_[i], " but entries ", k, ", ",
                       k + 1, " (kinds ", static_cast<int>(kind(k)), ", ",
                       static_cast<int>(kind(k + 1)), ") name ", blocks_[k], "/", blocks_[k + 1]));
    }
    ++pins[k];
    ++pins[k + 1];
  }
  if (views != num_views_) {
    return absl::InternalError(absl::StrCat(views, " views counted, ", num_views_, " recorded"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (pins[i] != this->pins(static_cast<int32_t>(i))) {
      return absl::InternalError(absl::StrCat("entry ", i, " pinned by ", pins[i],
                                              " views, recorded ",
                                              this->pins(static_cast<int32_t>(i))));
    }
  }
  return absl::OkStatus();
}

absl::Status BlockTable::Release() {
  absl::Status status;
  for (size_t i = blocks_.size(); i-- > 0;) {
    if (!shifts_.empty() && shifts_[i] != 0) status.Update(pool_->Unref(hi_[i]));
    status.Update(pool_->Unref(blocks_[i]));
  }
  blocks_.clear();
  hi_.clear();
  shifts_.clear();
  meta_.clear();
  num_views_ = 0;
  num_tokens_ = 0;
  return status;
}

}  // namespace memshare::kvmanager
