#include "kvmanager/testing/kv_op_harness.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace memshare::kvmanager::testing {
namespace {

// Generated-token vocabulary: 0 is a blank line, 1 " Wait", the rest words.
constexpr int32_t kBlankLine = 0;
constexpr int32_t kWait = 1;
constexpr int32_t kMaxSeqTokens = 96;
constexpr int32_t kFiller = 40;
constexpr int kMaxLiveSeqs = 6;

std::string PieceOf(int32_t token) {
  if (token == kBlankLine) return "\n\n";
  if (token == kWait) return " Wait";
  return absl::StrCat(" w", token);
}

// Phrases the "model" repeats; each is 8 tokens with its delimiter, so a
// repeat keeps block alignment for block sizes 2, 4 and 8, unless the
// sampler puts a few filler tokens before it (then runs of the same phrase
// repeat off the block grid: shifted sharing).
const std::vector<int32_t>& Phrase(int which) {
  static const std::vector<int32_t> kPhrases[] = {
      {2, 3, 4, 5, 6, 7, 8, kBlankLine},
      {kWait, 9, 10, 11, 12, 13, 14, 15},
  };
  return kPhrases[which];
}

#define HARNESS_CHECK(cond, ...)                                                         \
  do {                                                                                   \
    if (!(cond))                                                                         \
      return absl::InternalError(absl::StrCat("check failed: " #cond " ", __VA_ARGS__)); \
  } while (0)

}  // namespace

KvOpHarness::Coverage& KvOpHarness::Coverage::operator+=(const Coverage& o) {
  ops += o.ops;
  exhausted += o.exhausted;
  forks += o.forks;
  frees += o.frees;
  cow_copies += o.cow_copies;
  prefix_hits += o.prefix_hits;
  evictions += o.evictions;
  remaps += o.remaps;
  dedup_steps += o.dedup_steps;
  dedup_candidates += o.dedup_candidates;
  shifted_remaps += o.shifted_remaps;
  frees_with_views += o.frees_with_views;
  frees_with_self_shared += o.frees_with_self_shared;
  return *this;
}

// Bytes in order; 0 once used up.
class KvOpHarness::Reader {
 public:
  explicit Reader(absl::Span<const uint8_t> data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  uint8_t Byte() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  size_t pos() const { return pos_; }

 private:
  absl::Span<const uint8_t> data_;
  size_t pos_ = 0;
};

struct KvOpHarness::Seq {
  uint64_t id = 0;
  int32_t prompt_len = 0;
  // Prompt, then generated tokens as appended.
  std::vector<int32_t> tokens;
  int32_t appended = 0;
  int32_t computed = 0;
  std::optional<int32_t> pending;  // sampled, appended next step
  bool in_step = false;            // appended since the last forward
  bool memshare = false;
  // The phrase being generated and the position in it.
  std::vector<int32_t> phrase;
  size_t phrase_pos = 0;
};

KvOpHarness::Config KvOpHarness::ConfigFromByte(uint8_t b) {
  static constexpr int32_t kBlockSizes[] = {2, 4, 8};
  Config c;
  c.num_layer_groups = 1 + b % 3;
  c.block_size = kBlockSizes[(b / 3) % 3];
  c.prefix_cache = (b / 9) % 4 != 0;
  c.num_blocks = 24 + 40 * ((b / 36) % 3);
  c.near_match_delay_tokens = 6 * ((b / 108) % 2);
  return c;
}

absl::StatusOr<std::unique_ptr<KvOpHarness>> KvOpHarness::Create(const Config& config) {
  KvManager::Options o;
  o.num_layer_groups = config.num_layer_groups;
  o.num_blocks = config.num_blocks;
  o.block_size = config.block_size;
  o.block_bytes.assign(config.num_layer_groups, 1000);
  o.enable_prefix_cache = config.prefix_cache;
  o.dedup.tau_lex = 0.3f;
  o.dedup.min_tau_lex = 0.1f;
  o.dedup.tau_kv = 0.3f;  // < sqrt(1/8): the fake accepts identical content only
  o.dedup.max_tau_kv = 0.3f;
  o.dedup.max_candidates_per_step = 3;
  o.dedup.near_match_delay_tokens = config.near_match_delay_tokens;
  o.segmenter.min_step_tokens = 4;
  o.segmenter.max_step_tokens = 24;
  absl::StatusOr<std::unique_ptr<KvManager>> manager = KvManager::Create(o);
  if (!manager.ok()) return manager.status();
  return std::unique_ptr<KvOpHarness>(new KvOpHarness(config, *std::move(manager)));
}

KvOpHarness::KvOpHarness(const Config& config, std::unique_ptr<KvManager> manager)
    : config_(config),
      manager_(std::move(manager)),
      kv_(config.num_layer_groups, config.num_blocks, config.block_size),
      pending_copies_(config.num_layer_groups) {}

KvOpHarness::~KvOpHarness() = default;

KvOpHarness::Seq* KvOpHarness::Pick(Reader& in) {
  if (seqs_.empty()) return nullptr;
  return seqs_[in.Byte() % seqs_.size()].get();
}

absl::Status KvOpHarness::Run(absl::Span<const uint8_t> data) {
  Reader in(data);
  while (!in.done()) {
    const size_t at = in.pos();
    absl::Status s = Apply(in);
    TakeCopies();
    if (s.ok()) s = CheckAll();
    ++coverage_.ops;
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("operation ", coverage_.ops, " (byte ", at, "): ", s.message()));
    }
  }
  const KvStatsSnapshot stats = manager_->Stats();
  coverage_.prefix_hits = stats.prefix_cache_hits;
  coverage_.evictions = stats.prefix_cache_evictions;
  coverage_.remaps = stats.dedup_remapped;
  coverage_.dedup_steps = stats.dedup_steps;
  coverage_.dedup_candidates = stats.dedup_verified;
  coverage_.shifted_remaps = stats.dedup_remapped_shifted;
  return absl::OkStatus();
}

void KvOpHarness::TakeCopies() {
  // Copies are taken as soon as they exist; they run at "forward".
  std::vector<std::vector<BlockCopy>> copies = manager_->TakePendingCopies();
  for (size_t g = 0; g < copies.size(); ++g) {
    coverage_.cow_copies += static_cast<int64_t>(copies[g].size());
    pending_copies_[g].insert(pending_copies_[g].end(), copies[g].begin(), copies[g].end());
  }
}

absl::Status KvOpHarness::Apply(Reader& in) {
  switch (in.Byte() % 12) {
    case 0:
    case 1:
      return OpAdd(in, /*flood=*/false);
    case 2:
    case 3:
    case 4:
      return OpAppend(in);
    case 5:
    case 6:
      return OpForward(in);
    case 7:
      return OpFork(in);
    case 8:
      return OpFree(in);
    case 9:
      return OpDedup(in);
    case 10:
      if (in.Byte() % 4 == 0) {
        manager_->ResetPrefixCache();
        return absl::OkStatus();
      }
      return OpAdd(in, /*flood=*/true);
    default:
      return OpMisuse(in);
  }
}

absl::Status KvOpHarness::OpAdd(Reader& in, bool flood) {
  if (seqs_.size() >= kMaxLiveSeqs) return absl::OkStatus();
  std::vector<int32_t> prompt;
  const uint8_t shape = in.Byte();
  if (flood) {
    const int n = 20 + shape % 40;
    for (int i = 0; i < n; ++i) prompt.push_back(200 + in.Byte() % 56);
  } else {
    // Shared templates (prefix-cache hits), then a short random suffix.
    const int t = shape % 3;
    if (t == 2) {
      for (int i = 0; i < 10; ++i) prompt.push_back(120 + i);
    } else {
      for (int i = 0; i < (t == 0 ? 12 : 18); ++i) prompt.push_back(100 + i);
    }
    const int suffix = (shape / 3) % 5;
    for (int i = 0; i < suffix; ++i) prompt.push_back(130 + in.Byte() % 10);
  }
  const uint8_t flags = in.Byte();
  KvManager::SequenceSpec spec;
  spec.seq_id = next_id_++;
  spec.prompt_token_ids = prompt;
  spec.cache_salt = flags % 4 == 0 ? "tenant" : "";
  spec.memshare.mode = (flags & 4) ? DedupMode::kOff : DedupMode::kMemShare;
  if (flags & 8) spec.memshare.tau_lex = 0.2f;
  const int32_t chunk = flood ? static_cast<int32_t>(prompt.size()) : in.Byte() % 24;

  const std::string before = Fingerprint();
  const KvManager::PrefixProbe probe = manager_->ProbePrefix(prompt, spec.cache_salt, chunk);
  HARNESS_CHECK(Fingerprint() == before, "ProbePrefix had side effects");
  absl::StatusOr<KvManager::Admission> admission = manager_->AddSequence(spec, chunk);
  if (absl::IsResourceExhausted(admission.status())) {
    ++coverage_.exhausted;
    HARNESS_CHECK(!probe.fits, "probe said it fits");
    HARNESS_CHECK(Fingerprint() == before, "refused AddSequence changed state");
    return absl::OkStatus();
  }
  if (!admission.ok()) return admission.status();
  HARNESS_CHECK(probe.fits, "probe said it does not fit");
  HARNESS_CHECK(admission->cached_tokens == probe.cached_tokens, "probe disagrees on cache hit");
  HARNESS_CHECK(admission->cached_tokens % config_.block_size == 0 &&
                    admission->cached_tokens < static_cast<int32_t>(prompt.size()),
                admission->cached_tokens);
  auto seq = std::make_unique<Seq>();
  seq->id = spec.seq_id;
  seq->prompt_len = static_cast<int32_t>(prompt.size());
  seq->tokens = prompt;
  seq->computed = admission->cached_tokens;
  seq->appended = admission->cached_tokens + admission->scheduled_tokens;
  seq->in_step = admission->scheduled_tokens > 0;
  seq->memshare = !(flags & 4);
  seqs_.push_back(std::move(seq));
  return absl::OkStatus();
}

absl::Status KvOpHarness::OpAppend(Reader& in) {
  Seq* s = Pick(in);
  if (s == nullptr) return absl::OkStatus();
  return AppendNext(s, 1 + in.Byte() % 8);
}

absl::Status KvOpHarness::AppendNext(Seq* s, int32_t max_chunk) {
  std::vector<int32_t> ids;
  if (s->appended < s->prompt_len) {
    const int32_t n = std::min(max_chunk, s->prompt_len - s->appended);
    ids.assign(s->tokens.begin() + s->appended, s->tokens.begin() + s->appended + n);
  } else if (s->pending.has_value()) {
    ids.push_back(*s->pending);
  } else {
    return absl::OkStatus();
  }
  const std::string before = Fingerprint();
  const bool can = manager_->CanAppend(s->id, static_cast<int32_t>(ids.size()));
  const absl::Status status = manager_->AppendTokens(s->id, ids);
  if (absl::IsResourceExhausted(status)) {
    ++coverage_.exhausted;
    HARNESS_CHECK(!can, "CanAppend said yes");
    HARNESS_CHECK(Fingerprint() == before, "refused AppendTokens changed state");
    return absl::OkStatus();
  }
  if (!status.ok()) return status;
  HARNESS_CHECK(can, "CanAppend said no");
  if (s->appended >= s->prompt_len) {
    s->tokens.push_back(*s->pending);
    s->pending.reset();
  }
  s->appended += static_cast<int32_t>(ids.size());
  s->in_step = true;
  return absl::OkStatus();
}

absl::Status KvOpHarness::OpForward(Reader& in) {
  // A scheduler step: every sequence not yet in it gets its next prefill
  // chunk or its sampled token (those that do not fit wait).
  const int32_t chunk = 1 + in.Byte() % 8;
  for (const auto& s : seqs_) {
    if (s->in_step) continue;
    if (absl::Status st = AppendNext(s.get(), chunk); !st.ok()) return st;
  }
  // Copies first, in order, as Backend::CopyBlocks would.
  TakeCopies();
  kv_.RunCopies(pending_copies_);
  for (auto& c : pending_copies_) c.clear();
  // "Forward": write the K/V of every appended, unwritten position.
  const int32_t bs = config_.block_size;
  for (const auto& s : seqs_) {
    for (int32_t g = 0; g < config_.num_layer_groups; ++g) {
      absl::StatusOr<KvManager::BlockTableSpans> table = manager_->GetBlockTableSpans(s->id, g);
      if (!table.ok()) return table.status();
      for (int32_t p = s->computed; p < s->appended; ++p) {
        const int32_t block = table->blocks[p / bs];
        HARNESS_CHECK(table->shifts.empty() || table->shifts[p / bs] == 0, "writing into view ",
                      p / bs);
        HARNESS_CHECK(manager_->pool(g).ref_count(block) == 1, "writing shared block ", block);
        HARNESS_CHECK(!manager_->pool(g).cached(block), "writing cached block ", block);
        kv_.Write(g, block, p % bs, s->tokens[p]);
      }
    }
  }
  if (absl::Status st = manager_->CommitStep(); !st.ok()) return st;
  // Sample: every sequence that ran and has its whole prompt in the cache.
  for (const auto& s : seqs_) {
    s->computed = s->appended;
    if (!s->in_step) continue;
    s->in_step = false;
    if (s->appended < s->prompt_len || s->pending.has_value()) continue;
    if (static_cast<int32_t>(s->tokens.size()) >= kMaxSeqTokens) continue;  // finished
    if (s->phrase_pos >= s->phrase.size()) {
      const uint8_t pick = in.Byte();
      if (pick % 4 < 2) {
        s->phrase = Phrase(pick % 4);
      } else if (pick % 4 == 2) {
        // 1 to 3 fillers, then a phrase: its later repeats are off the grid.
        s->phrase.assign(1 + (pick / 4) % 3, kFiller);
        const std::vector<int32_t>& p = Phrase((pick / 16) % 2);
        s->phrase.insert(s->phrase.end(), p.begin(), p.end());
      } else {
        s->phrase.clear();
        for (int i = 0; i < 7; ++i) s->phrase.push_back(16 + in.Byte() % 16);
        s->phrase.push_back(kBlankLine);
      }
      s->phrase_pos = 0;
    }
    const int32_t token = s->phrase[s->phrase_pos++];
    s->pending = token;
    const std::string piece = PieceOf(token);
    const absl::string_view pieces[] = {piece};
    if (absl::Status st = manager_->OnTokensGenerated(s->id, pieces); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status KvOpHarness::OpFork(Reader& in) {
  Seq* parent = Pick(in);
  if (parent == nullptr || seqs_.size() >= kMaxLiveSeqs) return absl::OkStatus();
  const uint64_t child_id = next_id_++;
  const std::string before = Fingerprint();
  const absl::Status status = manager_->Fork(parent->id, child_id);
  if (parent->computed != parent->appended) {
    HARNESS_CHECK(absl::IsFailedPrecondition(status),
                  "fork with uncommitted tokens: ", status.ToString());
    HARNESS_CHECK(Fingerprint() == before, "refused Fork changed state");
    return absl::OkStatus();
  }
  if (!status.ok()) return status;
  auto child = std::make_unique<Seq>(*parent);
  child->id = child_id;
  seqs_.push_back(std::move(child));
  ++coverage_.forks;
  return absl::OkStatus();
}

absl::Status KvOpHarness::OpFree(Reader& in) {
  if (seqs_.empty()) return absl::OkStatus();
  const size_t i = in.Byte() % seqs_.size();
  const uint64_t id = seqs_[i]->id;
  // Does the sequence share a block with itself (its own remaps and
  // views)?
  bool self_shared = false, views = false;
  for (int32_t g = 0; g < config_.num_layer_groups; ++g) {
    absl::StatusOr<KvManager::BlockTableSpans> table = manager_->GetBlockTableSpans(id, g);
    if (!table.ok()) return table.status();
    std::vector<int32_t> blocks(table->blocks.begin(), table->blocks.end());
    std::sort(blocks.begin(), blocks.end());
    self_shared = self_shared || std::adjacent_find(blocks.begin(), blocks.end()) != blocks.end();
    for (int32_t shift : table->shifts) views = views || shift != 0;
  }
  coverage_.frees_with_self_shared += self_shared ? 1 : 0;
  coverage_.frees_with_views += views ? 1 : 0;
  if (absl::Status st = manager_->Free(id); !st.ok()) return st;
  seqs_.erase(seqs_.begin() + i);
  ++coverage_.frees;
  return absl::OkStatus();
}

absl::Status KvOpHarness::OpDedup(Reader& in) {
  const uint8_t b = in.Byte();
  if (b % 4 == 0 && !seqs_.empty()) {
    return manager_->RunDedupFor(seqs_[b / 4 % seqs_.size()]->id, kv_);
  }
  return manager_->RunDedup(kv_);
}

absl::Status KvOpHarness::OpMisuse(Reader& in) {
  const std::string before = Fingerprint();
  const uint8_t what = in.Byte() % 6;
  absl::Status status;
  switch (what) {
    case 0: {
      const int32_t id = 7;
      status = manager_->AppendTokens(next_id_ + 1000, absl::MakeConstSpan(&id, 1));
      HARNESS_CHECK(absl::IsNotFound(status), status.ToString());
      HARNESS_CHECK(absl::IsNotFound(manager_->Free(next_id_ + 1000)), "free of unknown id");
      break;
    }
    case 1: {
      // A prefill chunk with a wrong token id.
      Seq* s = Pick(in);
      if (s == nullptr || s->appended >= s->prompt_len) return absl::OkStatus();
      const int32_t wrong = s->tokens[s->appended] + 1;
      status = manager_->AppendTokens(s->id, absl::MakeConstSpan(&wrong, 1));
      HARNESS_CHECK(absl::IsInvalidArgument(status), status.ToString());
      break;
    }
    case 2: {
      Seq* s = Pick(in);
      if (s == nullptr || seqs_.size() < 2) return absl::OkStatus();
      status = manager_->Fork(s->id, seqs_[0]->id == s->id ? seqs_[1]->id : seqs_[0]->id);
      HARNESS_CHECK(absl::IsAlreadyExists(status), status.ToString());
      break;
    }
    case 3: {
      Seq* s = Pick(in);
      if (s == nullptr) return absl::OkStatus();
      const int32_t tok = 100;
      KvManager::SequenceSpec spec;
      spec.seq_id = s->id;
      spec.prompt_token_ids = absl::MakeConstSpan(&tok, 1);
      status = manager_->AddSequence(spec, 1).status();
      HARNESS_CHECK(absl::IsAlreadyExists(status), status.ToString());
      break;
    }
    case 4: {
      Seq* s = Pick(in);
      if (s == nullptr || !s->memshare || s->appended >= s->prompt_len) return absl::OkStatus();
      const absl::string_view pieces[] = {"x"};
      status = manager_->OnTokensGenerated(s->id, pieces);
      HARNESS_CHECK(absl::IsFailedPrecondition(status), status.ToString());
      break;
    }
    default: {
      const int32_t tok = 100;
      KvManager::SequenceSpec spec;
      spec.seq_id = next_id_ + 2000;
      spec.prompt_token_ids = absl::MakeConstSpan(&tok, 1);
      spec.memshare.tau_kv = 0.9f;  // looser than the server allows
      status = manager_->AddSequence(spec, 1).status();
      HARNESS_CHECK(absl::IsInvalidArgument(status), status.ToString());
      spec.memshare.tau_kv.reset();
      spec.prompt_token_ids = {};
      status = manager_->AddSequence(spec, 1).status();
      HARNESS_CHECK(absl::IsInvalidArgument(status), status.ToString());
      break;
    }
  }
  HARNESS_CHECK(Fingerprint() == before, "refused call changed state");
  return absl::OkStatus();
}

std::string KvOpHarness::Fingerprint() const {
  std::string f;
  for (int32_t g = 0; g < config_.num_layer_groups; ++g) {
    const BlockPool& p = manager_->pool(g);
    absl::StrAppend(&f, "g", g, ":", p.num_free(), ",", p.num_evictable(), ",", p.num_in_use(), ",",
                    p.total_refs(), ",", p.num_shared(), ";");
  }
  if (manager_->prefix_cache() != nullptr) {
    absl::StrAppend(&f, "c", manager_->prefix_cache()->num_entries(), ";");
  }
  absl::StrAppend(&f, "n", manager_->num_sequences(), ";");
  for (const auto& s : seqs_) {
    for (int32_t g = 0; g < config_.num_layer_groups; ++g) {
      absl::StatusOr<KvManager::BlockTableSpans> t = manager_->GetBlockTableSpans(s->id, g);
      if (!t.ok()) return "missing sequence";
      absl::StrAppend(&f, s->id, "/", g, ":");
      for (int32_t b : t->blocks) absl::StrAppend(&f, b, ",");
      for (size_t i = 0; i < t->shifts.size(); ++i) {
        absl::StrAppend(&f, "v", t->blocks_hi[i], "+", t->shifts[i], ",");
      }
    }
  }
  return f;
}

absl::Status KvOpHarness::CheckAll() const {
  if (absl::Status s = manager_->CheckInvariants(); !s.ok()) return s;
  const int32_t groups = config_.num_layer_groups;
  const int32_t bs = config_.block_size;
  HARNESS_CHECK(manager_->num_sequences() == static_cast<int32_t>(seqs_.size()),
                manager_->num_sequences(), " vs ", seqs_.size());
  // Content as the next forward would see it: pending copies applied.
  FakeBlockDistance view = kv_;
  view.RunCopies(pending_copies_);
  const KvStatsSnapshot stats = manager_->Stats();
  int64_t total_logical = 0, total_physical = 0;
  for (int32_t g = 0; g < groups; ++g) {
    const BlockPool& pool = manager_->pool(g);
    // References each block should hold: table entries naming it plus
    // shifted views reading it as their second block.
    std::vector<int32_t> refs(config_.num_blocks, 0);
    int64_t entries = 0, views = 0;
    for (const auto& s : seqs_) {
      absl::StatusOr<KvManager::SequenceInfo> info = manager_->GetSequenceInfo(s->id);
      if (!info.ok()) return info.status();
      HARNESS_CHECK(info->num_tokens == s->appended && info->num_computed_tokens == s->computed,
                    "sequence ", s->id, " manager ", info->num_tokens, "/",
                    info->num_computed_tokens, " model ", s->appended, "/", s->computed);
      absl::StatusOr<KvManager::BlockTableSpans> table = manager_->GetBlockTableSpans(s->id, g);
      if (!table.ok()) return table.status();
      const auto n = static_cast<int32_t>(table->blocks.size());
      HARNESS_CHECK(n == (s->appended + bs - 1) / bs, "table size ", n, " for ", s->appended,
                    " tokens");
      HARNESS_CHECK(table->shifts.empty() || (static_cast<int32_t>(table->shifts.size()) == n &&
                                              static_cast<int32_t>(table->blocks_hi.size()) == n),
                    "view arrays not dense");
      entries += n;
      for (int32_t i = 0; i < n; ++i) {
        ++refs[table->blocks[i]];
        const int32_t shift = table->shifts.empty() ? 0 : table->shifts[i];
        if (shift == 0) {
          HARNESS_CHECK(table->blocks_hi.empty() || table->blocks_hi[i] == table->blocks[i],
                        "entry ", i, " is no view but its hi block differs");
          continue;
        }
        // A view: over two earlier consecutive entries that are no views
        // themselves, full and written; its second reference counted.
        ++views;
        ++refs[table->blocks_hi[i]];
        HARNESS_CHECK(shift > 0 && shift < bs, "shift ", shift);
        HARNESS_CHECK((i + 1) * bs <= s->computed, "view ", i, " not written");
        bool found = false;
        for (int32_t k = 0; k + 1 < i && !found; ++k) {
          found = table->blocks[k] == table->blocks[i] &&
                  table->blocks[k + 1] == table->blocks_hi[i] && table->shifts[k] == 0 &&
                  table->shifts[k + 1] == 0;
        }
        HARNESS_CHECK(found, "sequence ", s->id, " group ", g, " view ", i, " over ",
                      table->blocks[i], "/", table->blocks_hi[i],
                      " is not over two earlier consecutive entries");
      }
      for (int32_t p = 0; p < s->computed; ++p) {
        const int32_t i = p / bs;
        const int32_t shift = table->shifts.empty() ? 0 : table->shifts[i];
        const int32_t slot = p % bs + shift;
        const int32_t block = slot < bs ? table->blocks[i] : table->blocks_hi[i];
        const int32_t got = view.Read(g, block, slot % bs);
        HARNESS_CHECK(got == s->tokens[p], "sequence ", s->id, " group ", g, " position ", p,
                      " reads ", got, " from block ", block, " slot ", slot % bs, ", wrote ",
                      s->tokens[p]);
      }
    }
    const int64_t logical = entries;
    int64_t physical = 0, saved = -views;
    for (int32_t b = 0; b < config_.num_blocks; ++b) {
      HARNESS_CHECK(pool.ref_count(b) == refs[b], "group ", g, " block ", b, " ref ",
                    pool.ref_count(b), " references held ", refs[b]);
      if (refs[b] > 0) {
        HARNESS_CHECK(pool.state(b) == BlockState::kInUse, "named block ", b, " not in use");
        ++physical;
        saved += refs[b] - 1;
      } else {
        HARNESS_CHECK(pool.state(b) != BlockState::kInUse, "unnamed block ", b, " in use");
      }
      if (pool.state(b) == BlockState::kFree) {
        HARNESS_CHECK(!pool.cached(b), "free block ", b, " cached");
      }
    }
    const KvStatsSnapshot::Group& sg = stats.groups[g];
    HARNESS_CHECK(sg.logical_blocks == logical && sg.physical_blocks == physical,
                  "stats logical/physical ", sg.logical_blocks, "/", sg.physical_blocks,
                  " counted ", logical, "/", physical);
    HARNESS_CHECK(sg.logical_blocks - sg.physical_blocks == saved, "saved ", saved);
    HARNESS_CHECK(sg.free_blocks + sg.cached_blocks + sg.physical_blocks == sg.total_blocks,
                  "block states do not add up");
    total_logical += logical;
    total_physical += physical;
  }
  HARNESS_CHECK(stats.BytesSaved() == (total_logical - total_physical) * 1000, "bytes saved ",
                stats.BytesSaved());
  HARNESS_CHECK(stats.dedup_candidates >= stats.dedup_verified &&
                    stats.dedup_verified >= stats.dedup_rejected,
                "dedup funnel ", stats.dedup_candidates, " ", stats.dedup_verified, " ",
                stats.dedup_rejected);
  HARNESS_CHECK(stats.dedup_remapped <= stats.dedup_verified - stats.dedup_rejected,
                "more remaps than accepted pairs");
  HARNESS_CHECK(stats.dedup_remapped_shifted <= stats.dedup_remapped, "shifted remaps ",
                stats.dedup_remapped_shifted, " of ", stats.dedup_remapped);
  return absl::OkStatus();
}

}  // namespace memshare::kvmanager::testing
