#include "kvmanager/block_table.h"

#include "absl/strings/str_cat.h"
#include "kvmanager/internal/status_macros.h"

namespace memshare::kvmanager {

BlockTable::BlockTable(BlockTable&& other) noexcept
    : pool_(other.pool_),
      block_size_(other.block_size_),
      num_tokens_(other.num_tokens_),
      blocks_(std::move(other.blocks_)) {
  other.blocks_.clear();
  other.num_tokens_ = 0;
}

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this != &other) {
    (void)Release();
    pool_ = other.pool_;
    block_size_ = other.block_size_;
    num_tokens_ = other.num_tokens_;
    blocks_ = std::move(other.blocks_);
    other.blocks_.clear();
    other.num_tokens_ = 0;
  }
  return *this;
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
    absl::StatusOr<int32_t> dst = pool_->Allocate();
    if (!dst.ok()) return dst.status();
    const int32_t src = blocks_.back();
    copies->emplace_back(src, *dst);
    blocks_.back() = *dst;
    KV_RETURN_IF_ERROR(pool_->Unref(src));
    --fresh;
  }
  KV_RETURN_IF_ERROR(pool_->Allocate(fresh, &blocks_));
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
  num_tokens_ += block_size_;
  return absl::OkStatus();
}

absl::StatusOr<BlockTable> BlockTable::Fork() const {
  BlockTable child(pool_, block_size_);
  child.blocks_.reserve(blocks_.size());
  for (int32_t b : blocks_) {
    // On failure the child's destructor releases what it took.
    KV_RETURN_IF_ERROR(pool_->Ref(b));
    child.blocks_.push_back(b);
  }
  child.num_tokens_ = num_tokens_;
  return child;
}

absl::Status BlockTable::Replace(int32_t logical, int32_t block) {
  if (logical < 0 || logical >= num_full_blocks()) {
    return absl::FailedPreconditionError(absl::StrCat("logical block ", logical,
                                                      " is not a full block (", num_tokens_,
                                                      " tokens, block size ", block_size_, ")"));
  }
  const int32_t old = blocks_[logical];
  if (old == block) return absl::OkStatus();
  // Reference the new block before releasing the old: never a moment where
  // the entry names a block it holds no reference on.
  KV_RETURN_IF_ERROR(pool_->Ref(block));
  blocks_[logical] = block;
  return pool_->Unref(old);
}

absl::Status BlockTable::Release() {
  absl::Status status;
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) status.Update(pool_->Unref(*it));
  blocks_.clear();
  num_tokens_ = 0;
  return status;
}

}  // namespace memshare::kvmanager
