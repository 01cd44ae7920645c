#include "kvmanager/kv_manager.h"

#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvmanager/testing/fake_block_distance.h"

namespace memshare::kvmanager {
namespace {

using testing::FakeBlockDistance;

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> Range(int32_t first, int32_t n) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

KvManager::Options SmallOptions(int32_t groups = 1, int32_t blocks = 32) {
  KvManager::Options o;
  o.num_layer_groups = groups;
  o.num_blocks = blocks;
  o.block_size = kBlockSize;
  o.block_bytes.assign(groups, 1024);
  o.segmenter.min_step_tokens = 4;
  o.dedup.tau_lex = 0.5f;
  o.dedup.tau_kv = 0.2f;  // < sqrt(1/4): the fake accepts identical blocks only
  o.dedup.min_tau_lex = 0.2f;
  o.dedup.max_tau_kv = 0.5f;
  // One pass that counts every agreeing slot: the tests below check its
  // decisions; the NearMatch tests cover the anchored measure and the delay.
  o.dedup.overlap_measure = OverlapMeasure::kAnySlots;
  o.dedup.near_match_delay_tokens = 0;
  return o;
}

// Plays scheduler and backend around a KvManager: appends, "writes" K/V into
// the fake's store, commits, reports sampled tokens.
class KvManagerTest : public ::testing::Test {
 protected:
  void Init(const KvManager::Options& o) {
    options_ = o;
    auto m = KvManager::Create(o);
    ASSERT_TRUE(m.ok()) << m.status();
    kv_ = std::make_unique<FakeBlockDistance>(o.num_layer_groups, o.num_blocks, o.block_size);
    manager_ = *std::move(m);
  }

  // Runs the copies, writes every uncommitted position of `seqs`, commits.
  void Forward(const std::vector<uint64_t>& seqs) {
    kv_->RunCopies(manager_->TakePendingCopies());
    for (uint64_t id : seqs) {
      const KvManager::SequenceInfo info = *manager_->GetSequenceInfo(id);
      for (int32_t g = 0; g < options_.num_layer_groups; ++g) {
        const auto table = *manager_->GetBlockTable(id, g);
        for (int32_t p = info.num_computed_tokens; p < info.num_tokens; ++p) {
          kv_->Write(g, table[p / kBlockSize], p % kBlockSize, tokens_[id][p]);
        }
      }
    }
    ASSERT_TRUE(manager_->CommitStep().ok());
  }

  void Admit(uint64_t id, const std::vector<int32_t>& prompt, absl::string_view salt = "",
             DedupParams params = {}) {
    KvManager::SequenceSpec spec;
    spec.seq_id = id;
    spec.prompt_token_ids = prompt;
    spec.cache_salt = salt;
    spec.memshare = params;
    absl::StatusOr<KvManager::Admission> a =
        manager_->AddSequence(spec, static_cast<int32_t>(prompt.size()));
    ASSERT_TRUE(a.ok()) << a.status();
    tokens_[id] = prompt;
    Forward({id});
  }

  // Generates `tokens` one decode step each: piece reported, token appended,
  // written, committed.
  void Generate(uint64_t id, const std::vector<int32_t>& tokens) {
    for (int32_t t : tokens) {
      const std::string piece = Piece(t);
      const absl::string_view pieces[] = {piece};
      ASSERT_TRUE(manager_->OnTokensGenerated(id, pieces).ok());
      ASSERT_TRUE(manager_->AppendTokens(id, {t}).ok());
      tokens_[id].push_back(t);
      Forward({id});
    }
  }

  static std::string Piece(int32_t t) { return t == 0 ? "\n\n" : " w" + std::to_string(t); }

  // Every written position reads back its token through the block tables
  // (through the window of a shifted view).
  void ExpectContentIntact(uint64_t id) {
    const KvManager::SequenceInfo info = *manager_->GetSequenceInfo(id);
    for (int32_t g = 0; g < options_.num_layer_groups; ++g) {
      const KvManager::BlockTableSpans t = *manager_->GetBlockTableSpans(id, g);
      for (int32_t p = 0; p < info.num_computed_tokens; ++p) {
        const int32_t i = p / kBlockSize;
        const int32_t slot = p % kBlockSize + (t.shifts.empty() ? 0 : t.shifts[i]);
        const int32_t block = slot < kBlockSize ? t.blocks[i] : t.blocks_hi[i];
        ASSERT_EQ(kv_->Read(g, block, slot % kBlockSize), tokens_[id][p])
            << "seq " << id << " group " << g << " position " << p;
      }
    }
  }

  KvManager::Options options_;
  std::unique_ptr<KvManager> manager_;
  std::unique_ptr<FakeBlockDistance> kv_;
  std::map<uint64_t, std::vector<int32_t>> tokens_;
};

// A step of 8 tokens ending with a blank line (two 4-token blocks).
const std::vector<int32_t> kStep = {11, 12, 13, 14, 15, 16, 17, 0};

TEST_F(KvManagerTest, RejectsBadOptions) {
  KvManager::Options o = SmallOptions();
  o.num_blocks = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(KvManager::Create(o).status()));
  o = SmallOptions();
  o.block_size = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(KvManager::Create(o).status()));
  o = SmallOptions();
  o.block_bytes = {1, 2};
  EXPECT_TRUE(absl::IsInvalidArgument(KvManager::Create(o).status()));
  o = SmallOptions();
  o.min_hash.num_hashes = 32;  // != 32 bands x 2 rows
  EXPECT_TRUE(absl::IsInvalidArgument(KvManager::Create(o).status()));
  o = SmallOptions();
  o.dedup.layer_groups = {1};
  EXPECT_TRUE(absl::IsInvalidArgument(KvManager::Create(o).status()));
}

TEST_F(KvManagerTest, PrefixCacheServesFullPromptBlocksButNeverTheLastToken) {
  Init(SmallOptions());
  Admit(1, Range(100, 12));  // 3 full blocks
  EXPECT_EQ(manager_->prefix_cache()->num_entries(), 3);

  // Same prompt: the last token must be recomputed, so 2 blocks are served.
  KvManager::PrefixProbe probe = manager_->ProbePrefix(Range(100, 12), "", 12);
  EXPECT_EQ(probe.cached_tokens, 8);
  EXPECT_TRUE(probe.fits);
  KvManager::SequenceSpec spec;
  spec.seq_id = 2;
  const std::vector<int32_t> prompt = Range(100, 12);
  spec.prompt_token_ids = prompt;
  absl::StatusOr<KvManager::Admission> a = manager_->AddSequence(spec, 100);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->cached_tokens, 8);
  EXPECT_EQ(a->scheduled_tokens, 4);
  const auto t1 = *manager_->GetBlockTable(1, 0);
  const auto t2 = *manager_->GetBlockTable(2, 0);
  EXPECT_EQ(t1[0], t2[0]);
  EXPECT_EQ(t1[1], t2[1]);
  EXPECT_NE(t1[2], t2[2]);
  EXPECT_EQ(manager_->pool(0).ref_count(t1[0]), 2);
  tokens_[2] = prompt;
  Forward({2});
  ExpectContentIntact(2);

  // A longer prompt with the same start, and a different tenant.
  probe = manager_->ProbePrefix(Range(100, 20), "", 20);
  EXPECT_EQ(probe.cached_tokens, 12);
  probe = manager_->ProbePrefix(Range(100, 20), "other-tenant", 20);
  EXPECT_EQ(probe.cached_tokens, 0);

  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.prefix_cache_queries, 2 + 2);  // (12 - 1) / 4 per admission
  EXPECT_EQ(s.prefix_cache_hits, 2);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

// A pipelined step's token is appended with a placeholder id before the
// step that samples it returns: CommitStep keeps it uncommitted, SetToken
// fixes its id (only there), and the next commit hashes the fixed id into
// the prefix cache.
TEST_F(KvManagerTest, PipelinedTokenStaysUncommittedUntilItsStep) {
  Init(SmallOptions());
  Admit(1, Range(100, 6));
  ASSERT_TRUE(manager_->AppendTokens(1, {7}).ok());  // the step in flight's token
  ASSERT_TRUE(manager_->AppendTokens(1, {0}).ok());  // the next step's, not sampled yet
  ASSERT_TRUE(manager_->CommitStep({1}).ok());
  KvManager::SequenceInfo info = *manager_->GetSequenceInfo(1);
  EXPECT_EQ(info.num_computed_tokens, 7);
  EXPECT_EQ(info.num_tokens, 8);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  for (const int32_t pos : {3, 6, 8}) {  // prompt, committed, not appended
    EXPECT_EQ(manager_->SetToken(1, pos, 42).code(), absl::StatusCode::kInvalidArgument) << pos;
  }
  EXPECT_EQ(manager_->SetToken(9, 7, 42).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(manager_->SetToken(1, 7, 42).ok());
  ASSERT_TRUE(manager_->CommitStep().ok());
  info = *manager_->GetSequenceInfo(1);
  EXPECT_EQ(info.num_computed_tokens, 8);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  std::vector<int32_t> next = Range(100, 6);
  next.insert(next.end(), {7, 42, 9});
  EXPECT_EQ(manager_->ProbePrefix(next, "", 9).cached_tokens, 8);
  next[7] = 0;  // the placeholder's id was never hashed
  EXPECT_EQ(manager_->ProbePrefix(next, "", 9).cached_tokens, 4);
}

TEST_F(KvManagerTest, CanAppendAllCountsEverySequencesBlocks) {
  Init(SmallOptions(/*groups=*/2, /*blocks=*/4));
  Admit(1, Range(100, 4));
  Admit(2, Range(200, 4));
  EXPECT_TRUE(manager_->CanAppendAll({1, 2}, 1));
  EXPECT_TRUE(manager_->CanAppend(1, 5));  // two blocks each, but not both
  EXPECT_FALSE(manager_->CanAppendAll({1, 2}, 5));
  EXPECT_FALSE(manager_->CanAppendAll({1, 9}, 1));
}

TEST_F(KvManagerTest, FreedPromptsStayCachedUntilTheirBlocksAreNeeded) {
  Init(SmallOptions(/*groups=*/2, /*blocks=*/6));
  Admit(1, Range(100, 16));  // 4 blocks per group
  ASSERT_TRUE(manager_->Free(1).ok());
  EXPECT_EQ(manager_->Stats().groups[0].cached_blocks, 4);
  EXPECT_EQ(manager_->Stats().groups[0].physical_blocks, 0);
  // Re-admission (preemption by recompute) hits the cache.
  Admit(2, Range(100, 16));
  EXPECT_EQ(manager_->GetSequenceInfo(2)->cached_tokens, 12);
  ExpectContentIntact(2);
  ASSERT_TRUE(manager_->Free(2).ok());
  // A different prompt needs 5 blocks: 2 free, then 3 evictions.
  Admit(3, Range(500, 20));
  const KvStatsSnapshot s = manager_->Stats();
  // Group 0 allocates first and evicts 3 entries; their group-1 blocks
  // become free, so group 1 evicts nothing itself.
  EXPECT_EQ(s.prefix_cache_evictions, 3);
  EXPECT_EQ(s.groups[0].evictions, 3);
  EXPECT_EQ(s.groups[1].evictions, 0);
  ExpectContentIntact(3);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, ReferencedCachedBlocksAreNeverEvicted) {
  Init(SmallOptions(1, 4));
  Admit(1, Range(100, 16));  // every block referenced and cached
  KvManager::SequenceSpec spec;
  spec.seq_id = 2;
  const std::vector<int32_t> other = Range(500, 4);
  spec.prompt_token_ids = other;
  EXPECT_FALSE(manager_->ProbePrefix(other, "", 4).fits);
  EXPECT_TRUE(absl::IsResourceExhausted(manager_->AddSequence(spec, 4).status()));
  EXPECT_EQ(manager_->num_sequences(), 1);
  EXPECT_EQ(manager_->prefix_cache()->num_entries(), 4);
  EXPECT_EQ(manager_->Stats().prefix_cache_evictions, 0);
  ExpectContentIntact(1);
  // Once freed, the same admission evicts and succeeds.
  ASSERT_TRUE(manager_->Free(1).ok());
  EXPECT_TRUE(manager_->AddSequence(spec, 4).ok());
  EXPECT_EQ(manager_->Stats().prefix_cache_evictions, 1);
}

TEST_F(KvManagerTest, PoolExhaustionIsAStatusWithoutSideEffects) {
  Init(SmallOptions(2, 4));
  Admit(1, Range(100, 14));  // 4 blocks: last one has 2 free slots
  ASSERT_TRUE(manager_->AppendTokens(1, {1, 2}).ok());
  EXPECT_FALSE(manager_->CanAppend(1, 1));
  const auto table = std::vector<int32_t>(manager_->GetBlockTable(1, 1)->begin(),
                                          manager_->GetBlockTable(1, 1)->end());
  absl::Status s = manager_->AppendTokens(1, {3});
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_EQ(manager_->GetSequenceInfo(1)->num_tokens, 16);
  EXPECT_EQ(std::vector<int32_t>(manager_->GetBlockTable(1, 1)->begin(),
                                 manager_->GetBlockTable(1, 1)->end()),
            table);
  // Preempt: free, and the pool takes new work.
  ASSERT_TRUE(manager_->Free(1).ok());
  EXPECT_EQ(manager_->NumAvailableBlocks(), 4);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, ForkThenWriteCopiesTheSharedLastBlock) {
  Init(SmallOptions(2, 16));
  Admit(1, Range(100, 6));  // blocks: full, partial(2)
  ASSERT_TRUE(manager_->Fork(1, 2).ok());
  tokens_[2] = tokens_[1];
  const auto parent = *manager_->GetBlockTable(1, 1);
  const int32_t shared_partial = parent[1];
  EXPECT_EQ(manager_->pool(1).ref_count(shared_partial), 2);
  EXPECT_EQ(manager_->Stats().groups[1].shared_blocks, 2);

  // The two samples differ: each appends its own token.
  ASSERT_TRUE(manager_->AppendTokens(2, {7}).ok());
  ASSERT_TRUE(manager_->AppendTokens(1, {8}).ok());
  tokens_[2].push_back(7);
  tokens_[1].push_back(8);
  std::vector<std::vector<BlockCopy>> copies = manager_->TakePendingCopies();
  ASSERT_EQ(copies.size(), 2u);
  for (int32_t g = 0; g < 2; ++g) {
    ASSERT_EQ(copies[g].size(), 1u) << g;  // only the child copies
    EXPECT_EQ(copies[g][0].first, (*manager_->GetBlockTable(1, g))[1]);
    EXPECT_EQ(copies[g][0].second, (*manager_->GetBlockTable(2, g))[1]);
  }
  EXPECT_EQ((*manager_->GetBlockTable(1, 1))[1], shared_partial);  // parent writes in place
  EXPECT_TRUE(manager_->TakePendingCopies()[0].empty());
  kv_->RunCopies(copies);
  Forward({1, 2});
  ExpectContentIntact(1);
  ExpectContentIntact(2);
  EXPECT_EQ(manager_->Stats().cow_copies, 2);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, ForkNeedsCommittedTokens) {
  Init(SmallOptions());
  Admit(1, Range(100, 6));
  ASSERT_TRUE(manager_->AppendTokens(1, {5}).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(manager_->Fork(1, 2)));
  EXPECT_FALSE(manager_->Contains(2));
  tokens_[1].push_back(5);
  Forward({1});
  EXPECT_TRUE(manager_->Fork(1, 2).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(manager_->Fork(1, 2)));
  EXPECT_TRUE(absl::IsNotFound(manager_->Fork(9, 10)));
}

TEST_F(KvManagerTest, RejectsBadRequests) {
  Init(SmallOptions());
  KvManager::SequenceSpec spec;
  spec.seq_id = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(manager_->AddSequence(spec, 1).status()));  // empty
  const std::vector<int32_t> prompt = Range(100, 6);
  spec.prompt_token_ids = prompt;
  EXPECT_TRUE(absl::IsInvalidArgument(manager_->AddSequence(spec, -1).status()));
  spec.memshare.tau_kv = 0.9f;
  absl::Status s = manager_->AddSequence(spec, 1).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("memshare.tau_kv"), std::string::npos);
  spec.memshare = {};
  for (const int32_t bad : {0, -2, static_cast<int32_t>(prompt.size()) + 1}) {
    spec.output_begin = bad;
    s = manager_->AddSequence(spec, 1).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << bad;
    EXPECT_NE(s.message().find("output_begin"), std::string::npos) << s;
  }
  spec.output_begin = -1;
  ASSERT_TRUE(manager_->AddSequence(spec, 2).ok());  // prefill in chunks
  EXPECT_TRUE(absl::IsAlreadyExists(manager_->AddSequence(spec, 2).status()));
  // A chunk with a token that is not the prompt's.
  EXPECT_TRUE(absl::IsInvalidArgument(manager_->AppendTokens(1, {102, 999})));
  EXPECT_EQ(manager_->GetSequenceInfo(1)->num_tokens, 2);
  // Sampled pieces before the prompt is in.
  const absl::string_view pieces[] = {"x"};
  EXPECT_TRUE(absl::IsFailedPrecondition(manager_->OnTokensGenerated(1, pieces)));
  EXPECT_TRUE(manager_->AppendTokens(1, {102, 103, 104, 105}).ok());
  EXPECT_TRUE(manager_->OnTokensGenerated(1, pieces).ok());
  EXPECT_TRUE(absl::IsNotFound(manager_->AppendTokens(42, {1})));
  EXPECT_TRUE(absl::IsNotFound(manager_->Free(42)));
  EXPECT_TRUE(absl::IsNotFound(manager_->GetBlockTable(42, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(manager_->GetBlockTable(1, 3).status()));
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, MemShareRemapsARepeatedStep) {
  Init(SmallOptions(1, 32));
  Admit(1, Range(100, 8));                   // generation starts block-aligned at 8
  Generate(1, kStep);                        // step 0: positions 8..15, blocks 2, 3
  EXPECT_TRUE(manager_->HasPendingDedup());  // a blank line ends a step at once
  Generate(1, kStep);                        // step 1: positions 16..23, blocks 4, 5
  ASSERT_TRUE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  const auto table = *manager_->GetBlockTable(1, 0);
  // Step 0 had no earlier step; step 1's blocks now share step 0's.
  EXPECT_EQ(table[4], table[2]);
  EXPECT_EQ(table[5], table[3]);
  EXPECT_EQ(manager_->pool(0).ref_count(table[2]), 2);
  ExpectContentIntact(1);
  // One distance call (one group) with both pairs.
  ASSERT_EQ(kv_->call_log().size(), 1u);
  EXPECT_EQ(kv_->call_log()[0], std::make_pair(0, size_t{2}));

  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.dedup_steps, 2);
  EXPECT_EQ(s.dedup_candidate_steps, 1);
  EXPECT_EQ(s.dedup_candidates, 2);
  EXPECT_EQ(s.dedup_verified, 2);
  EXPECT_EQ(s.dedup_rejected, 0);
  EXPECT_EQ(s.dedup_remapped, 2);
  EXPECT_EQ(s.LogicalBlocks() - s.PhysicalBlocks(), 2);
  EXPECT_EQ(s.BytesSaved(), 2 * 1024);
  EXPECT_EQ(manager_->GetSequenceInfo(1)->remapped_blocks, 2);
  EXPECT_FALSE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->CheckInvariants().ok());

  // Generation continues over the shared blocks.
  Generate(1, {21, 22, 23});
  ExpectContentIntact(1);
}

TEST_F(KvManagerTest, AStepWaitsUntilItsLastTokenIsWritten) {
  Init(SmallOptions(1, 32));
  Admit(1, Range(100, 8));
  Generate(1, {11, 12, 13, 14, 15, 16, 17});
  // The blank line is sampled: the step is finished, but the K/V of its
  // last token is written only by the next forward step.
  const absl::string_view pieces[] = {"\n\n"};
  ASSERT_TRUE(manager_->OnTokensGenerated(1, pieces).ok());
  ASSERT_TRUE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_steps, 0);
  EXPECT_TRUE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->AppendTokens(1, {0}).ok());
  tokens_[1].push_back(0);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());  // appended, not committed
  EXPECT_EQ(manager_->Stats().dedup_steps, 0);
  Forward({1});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_steps, 1);
  EXPECT_FALSE(manager_->HasPendingDedup());
}

TEST_F(KvManagerTest, DistanceRejectionsKeepBlocksApart) {
  Init(SmallOptions(1, 32));
  kv_->override_sums = [](int32_t, const BlockPair&) { return DistanceSums{1, 1, 0, 1}; };
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.dedup_candidates, 2);
  EXPECT_EQ(s.dedup_rejected, 2);
  EXPECT_EQ(s.dedup_remapped, 0);
  EXPECT_EQ(s.LogicalBlocks(), s.PhysicalBlocks());
}

TEST_F(KvManagerTest, DecisionsArePerLayerGroup) {
  Init(SmallOptions(/*groups=*/3, 32));
  // Group 1's blocks differ too much; groups 0 and 2 match.
  kv_->override_sums = [](int32_t g, const BlockPair&) {
    return g == 1 ? DistanceSums{1, 1, 1, 1} : DistanceSums{0, 1, 0, 1};
  };
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(kv_->call_log().size(), 3u);  // one call per group
  const auto g0 = *manager_->GetBlockTable(1, 0);
  const auto g1 = *manager_->GetBlockTable(1, 1);
  const auto g2 = *manager_->GetBlockTable(1, 2);
  EXPECT_EQ(g0[4], g0[2]);
  EXPECT_NE(g1[4], g1[2]);
  EXPECT_EQ(g2[5], g2[3]);
  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.dedup_candidates, 6);  // 2 block pairs x 3 groups
  EXPECT_EQ(s.dedup_verified, 6);
  EXPECT_EQ(s.dedup_rejected, 2);
  EXPECT_EQ(s.dedup_remapped, 4);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, PolicyLimitsRemapsToChosenGroups) {
  KvManager::Options o = SmallOptions(2, 32);
  o.dedup.layer_groups = {1};
  Init(o);
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  ASSERT_EQ(kv_->call_log().size(), 1u);
  EXPECT_EQ(kv_->call_log()[0].first, 1);
  EXPECT_NE((*manager_->GetBlockTable(1, 0))[4], (*manager_->GetBlockTable(1, 0))[2]);
  EXPECT_EQ((*manager_->GetBlockTable(1, 1))[4], (*manager_->GetBlockTable(1, 1))[2]);
}

TEST_F(KvManagerTest, AStepWithZeroFullBlocksAsksNothing) {
  KvManager::Options o = SmallOptions(1, 32);
  o.block_size = 8;
  Init(o);
  // Prompt of 10: generated steps of 4 tokens sit inside block 1/2.
  KvManager::SequenceSpec spec;
  spec.seq_id = 1;
  const std::vector<int32_t> prompt = Range(100, 10);
  spec.prompt_token_ids = prompt;
  ASSERT_TRUE(manager_->AddSequence(spec, 10).ok());
  ASSERT_TRUE(manager_->CommitStep().ok());
  for (int32_t t : {1, 2, 3, 0, 1, 2, 3, 0, 5}) {
    const std::string piece = Piece(t);
    const absl::string_view pieces[] = {piece};
    ASSERT_TRUE(manager_->OnTokensGenerated(1, pieces).ok());
    ASSERT_TRUE(manager_->AppendTokens(1, {t}).ok());
    ASSERT_TRUE(manager_->CommitStep().ok());
  }
  // Steps [10, 14) and [14, 18): the first owns no full block, the second
  // owns block 1 (positions 8..15) whose partner would have to be earlier.
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_steps, 2);
  EXPECT_EQ(kv_->calls(), 0);
  EXPECT_EQ(manager_->Stats().dedup_candidates, 0);
}

TEST_F(KvManagerTest, AbortOfASequenceSharingBlocksWithItselfReleasesEverything) {
  KvManager::Options o = SmallOptions(2, 32);
  o.enable_prefix_cache = false;
  Init(o);
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  Generate(1, kStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  const auto table = *manager_->GetBlockTable(1, 0);
  EXPECT_EQ(manager_->pool(0).ref_count(table[2]), 3);  // steps 1 and 2 both share it
  EXPECT_EQ(manager_->Stats().dedup_remapped, 8);
  ASSERT_TRUE(manager_->Free(1).ok());
  for (int32_t g = 0; g < 2; ++g) {
    EXPECT_EQ(manager_->pool(g).num_in_use(), 0);
    EXPECT_EQ(manager_->pool(g).total_refs(), 0);
    EXPECT_EQ(manager_->pool(g).num_free(), 32);
  }
  EXPECT_FALSE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, RemappedSequencesStopFeedingThePrefixCache) {
  Init(SmallOptions(1, 64));
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  const int32_t entries_before = manager_->prefix_cache()->num_entries();
  EXPECT_EQ(entries_before, 6);  // 2 prompt + 4 generated blocks, all exact
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  ASSERT_EQ(manager_->Stats().dedup_remapped, 2);
  Generate(1, {31, 32, 33, 34, 35, 36, 37, 38});
  // K/V after the remap was computed over the shared blocks: not exact.
  EXPECT_EQ(manager_->prefix_cache()->num_entries(), entries_before);
  // Other sequences still feed the cache.
  Admit(2, Range(300, 9));
  EXPECT_EQ(manager_->prefix_cache()->num_entries(), entries_before + 2);
}

TEST_F(KvManagerTest, DistanceErrorsRemapNothing) {
  Init(SmallOptions(1, 32));
  kv_->fail_with = absl::UnavailableError("device lost");
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kStep);
  EXPECT_TRUE(absl::IsUnavailable(manager_->RunDedup(*kv_)));
  EXPECT_EQ(manager_->Stats().dedup_remapped, 0);
  EXPECT_FALSE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, MemShareOffPerRequestAndThresholdOverrides) {
  Init(SmallOptions(1, 64));
  DedupParams off;
  off.mode = DedupMode::kOff;
  Admit(1, Range(100, 8), "", off);
  Generate(1, kStep);
  Generate(1, kStep);
  Generate(1, {5});
  EXPECT_FALSE(manager_->HasPendingDedup());
  EXPECT_FALSE(manager_->GetSequenceInfo(1)->memshare);
  // A request that demands identical text (tau_lex 1) still shares an exact
  // repeat; one with tau_kv 0 still accepts identical blocks.
  DedupParams strict;
  strict.tau_lex = 1.0f;
  strict.tau_kv = 0.0f;
  Admit(2, Range(200, 8), "", strict);
  Generate(2, kStep);
  Generate(2, kStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_remapped, 2);
}

TEST_F(KvManagerTest, RunDedupForOneSequence) {
  Init(SmallOptions(1, 64));
  Admit(1, Range(100, 8));
  Admit(2, Range(200, 8));
  for (uint64_t id : {1, 2}) {
    Generate(id, kStep);
    Generate(id, kStep);
  }
  ASSERT_TRUE(manager_->RunDedupFor(2, *kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_remapped, 2);
  EXPECT_TRUE(manager_->HasPendingDedup());  // sequence 1 still waits
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_remapped, 4);
  EXPECT_FALSE(manager_->HasPendingDedup());
}

TEST_F(KvManagerTest, ForkCopiesDedupState) {
  Init(SmallOptions(1, 64));
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, {11});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  ASSERT_TRUE(manager_->Fork(1, 2).ok());
  tokens_[2] = tokens_[1];
  EXPECT_EQ(manager_->GetSequenceInfo(2)->dedup_steps, 1);
  // The child repeats the parent's step: it finds it in its copied index.
  Generate(2, {12, 13, 14, 15, 16, 17, 0, 5});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->GetSequenceInfo(2)->remapped_blocks, 2);
  EXPECT_EQ(manager_->GetSequenceInfo(1)->remapped_blocks, 0);
  ExpectContentIntact(1);
  ExpectContentIntact(2);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

// Near matches (DedupPolicy::near_match_delay_tokens): step 1 restates
// step 0 and then goes on, so its block 4 equals block 2 (a whole-window
// match, shared at once) and its block 5 agrees with block 3 in its first
// three slots (a near match, shared only once 8 more tokens are written
// after step 1). A child forked in between inherits the waiting pass.
TEST_F(KvManagerTest, NearMatchesWaitForTheDelay) {
  KvManager::Options o = SmallOptions(1, 64);
  o.dedup.overlap_measure = OverlapMeasure::kAnchoredRun;
  o.dedup.near_match_delay_tokens = 8;
  o.dedup.tau_kv = 0.6f;  // one differing slot of 4 (0.5) passes
  o.dedup.max_tau_kv = 0.6f;
  Init(o);
  Admit(1, Range(100, 8));                         // blocks 0, 1
  Generate(1, kStep);                              // step 0: blocks 2, 3
  Generate(1, {11, 12, 13, 14, 15, 16, 17, 9, 0});  // step 1: positions 16..24
  const std::vector<int32_t> before(manager_->GetBlockTable(1, 0)->begin(),
                                    manager_->GetBlockTable(1, 0)->end());
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  auto table = [&](uint64_t id) {
    const auto t = *manager_->GetBlockTable(id, 0);
    return std::vector<int32_t>(t.begin(), t.end());
  };
  EXPECT_EQ(table(1)[4], before[2]);  // shared at once
  EXPECT_EQ(table(1)[5], before[5]);  // waits
  EXPECT_EQ(manager_->Stats().dedup_verified, 1);
  EXPECT_TRUE(manager_->HasPendingDedup());
  ASSERT_TRUE(manager_->CheckInvariants().ok());

  ASSERT_TRUE(manager_->Fork(1, 2).ok());
  tokens_[2] = tokens_[1];
  // Step 1 ended at position 25: its near matches are due once 33 tokens
  // are written.
  for (uint64_t id : {1, 2}) {
    for (int32_t t = 21; t < 28; ++t) {
      Generate(id, {t});
      ASSERT_TRUE(manager_->RunDedupFor(id, *kv_).ok());
      EXPECT_EQ(table(id)[5], before[5]) << "seq " << id << " after " << t;
    }
    Generate(id, {28});  // the 33rd token
    ASSERT_TRUE(manager_->RunDedupFor(id, *kv_).ok());
    EXPECT_EQ(table(id)[5], before[3]) << "seq " << id;
    EXPECT_EQ(manager_->GetSequenceInfo(id)->remapped_blocks, id == 1 ? 2 : 1);
  }
  EXPECT_FALSE(manager_->HasPendingDedup());
  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.dedup_remapped, 3);
  EXPECT_EQ(s.dedup_rejected, 0);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

// DedupPolicy::keep_numbers: step 1's second block agrees with step 0's in
// three of four slots; where they disagree step 1 holds token 9, a "digit"
// token here. Shared without the option, refused with it; the whole-window
// match of the first blocks is shared either way.
TEST_F(KvManagerTest, KeepNumbersRefusesNearMatchesThatDisagreeOnADigit) {
  for (const bool keep : {false, true}) {
    SCOPED_TRACE(keep ? "keep_numbers" : "any");
    tokens_.clear();
    KvManager::Options o = SmallOptions(1, 64);
    o.dedup.overlap_measure = OverlapMeasure::kAnchoredRun;
    o.dedup.tau_kv = 0.6f;  // one differing slot of 4 (0.5) passes
    o.dedup.max_tau_kv = 0.6f;
    o.dedup.keep_numbers = keep;
    o.digit_tokens.assign(64, false);
    o.digit_tokens[9] = true;
    Init(o);
    Admit(1, Range(100, 8));                         // blocks 0, 1
    Generate(1, kStep);                              // step 0: blocks 2, 3 = 11..14, 15 16 17 0
    Generate(1, {11, 12, 13, 14, 15, 16, 17, 9, 0});  // step 1: blocks 4, 5 = 11..14, 15 16 17 9
    ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
    const auto table = *manager_->GetBlockTable(1, 0);
    EXPECT_EQ(table[4], table[2]);
    if (keep) {
      EXPECT_NE(table[5], table[3]);
      EXPECT_EQ(manager_->GetSequenceInfo(1)->remapped_blocks, 1);
      ExpectContentIntact(1);  // only exact matches were shared
    } else {
      EXPECT_EQ(table[5], table[3]);  // position 23 now reads step 0's token
      EXPECT_EQ(manager_->GetSequenceInfo(1)->remapped_blocks, 2);
    }
    ASSERT_TRUE(manager_->CheckInvariants().ok());
  }
}

// A near match whose block has meanwhile become the source of a shifted
// view (pinned) is left alone when its delay is over: no remap, no error.
TEST_F(KvManagerTest, NearPassSkipsPinnedBlocks) {
  KvManager::Options o = SmallOptions(1, 64);
  o.enable_prefix_cache = false;
  o.dedup.tau_lex = 0.3f;
  o.dedup.overlap_measure = OverlapMeasure::kAnchoredRun;
  o.dedup.near_match_delay_tokens = 16;
  o.dedup.tau_kv = 0.6f;
  o.dedup.max_tau_kv = 0.6f;
  Init(o);
  Admit(1, Range(100, 8));  // blocks 0, 1
  Generate(1, kStep);       // step 0, positions 8..15: blocks 2 [11 12 13 14], 3 [15 16 17 0]
  // Step 1, positions 16..27: block 4 [11 12 13 14] equals block 2; block 5
  // [15 16 17 9] is a near match of block 3 (due once 28 + 16 tokens are
  // written); block 6 [40 41 42 0].
  Generate(1, {11, 12, 13, 14, 15, 16, 17, 9, 40, 41, 42, 0});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  const std::vector<int32_t> before(manager_->GetBlockTable(1, 0)->begin(),
                                    manager_->GetBlockTable(1, 0)->end());
  EXPECT_EQ(before[4], before[2]);
  // Step 2, positions 28..36: block 8 [9 40 41 42] equals the window at
  // position 23 (blocks 5 and 6, shift 3): a view, made at once, that pins
  // block 5.
  Generate(1, {7, 15, 16, 17, 9, 40, 41, 42, 0});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  KvManager::BlockTableSpans t = *manager_->GetBlockTableSpans(1, 0);
  ASSERT_FALSE(t.shifts.empty());
  EXPECT_EQ(t.shifts[8], 3);
  EXPECT_EQ(t.blocks[8], before[5]);
  EXPECT_EQ(t.blocks_hi[8], before[6]);
  // Step 1's near pass comes due (44 tokens written) and skips block 5.
  for (int32_t tok = 60; tok < 68; ++tok) {
    Generate(1, {tok});
    ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  }
  t = *manager_->GetBlockTableSpans(1, 0);
  EXPECT_EQ(t.blocks[5], before[5]);
  EXPECT_EQ(t.shifts[5], 0);
  EXPECT_EQ(t.shifts[8], 3);
  EXPECT_EQ(manager_->Stats().dedup_remapped, 2);
  ExpectContentIntact(1);  // only whole-window matches were shared
  ASSERT_TRUE(manager_->CheckInvariants().ok()) << manager_->CheckInvariants();
}

// Step 1 restates step 0 after one extra token: its block 5 (positions
// 20..23) holds the tokens of positions 11..14, which straddle blocks 2 and
// 3. It becomes a view over them at shift 3.
const std::vector<int32_t> kShiftedStep = {9, 11, 12, 13, 14, 15, 16, 17, 0};

TEST_F(KvManagerTest, ShiftedRepeatBecomesAViewOverTwoBlocks) {
  KvManager::Options o = SmallOptions(1, 32);
  o.enable_prefix_cache = false;
  Init(o);
  Admit(1, Range(100, 8));    // blocks 0, 1
  Generate(1, kStep);         // step 0: positions 8..15, blocks 2, 3
  Generate(1, kShiftedStep);  // step 1: positions 16..24, blocks 4, 5 (+ partial 6)
  const std::vector<int32_t> before(manager_->GetBlockTable(1, 0)->begin(),
                                    manager_->GetBlockTable(1, 0)->end());
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());

  const KvManager::BlockTableSpans t = *manager_->GetBlockTableSpans(1, 0);
  ASSERT_EQ(t.shifts.size(), 7u);
  ASSERT_EQ(t.blocks_hi.size(), 7u);
  EXPECT_EQ(t.blocks[5], before[2]);
  EXPECT_EQ(t.blocks_hi[5], before[3]);
  EXPECT_EQ(t.shifts[5], 3);
  // Block 4 ([9 11 12 13]) agrees with positions 7..10 in 3 slots of 4:
  // verified, but the distance rejects it.
  EXPECT_EQ(t.blocks[4], before[4]);
  for (int32_t i : {0, 1, 2, 3, 4, 6}) {
    EXPECT_EQ(t.shifts[i], 0) << i;
    EXPECT_EQ(t.blocks_hi[i], t.blocks[i]) << i;
  }
  EXPECT_EQ(manager_->pool(0).ref_count(before[2]), 2);
  EXPECT_EQ(manager_->pool(0).ref_count(before[3]), 2);
  EXPECT_EQ(manager_->pool(0).state(before[5]), BlockState::kFree);
  ExpectContentIntact(1);

  const KvStatsSnapshot s = manager_->Stats();
  EXPECT_EQ(s.dedup_verified, 2);
  EXPECT_EQ(s.dedup_rejected, 1);
  EXPECT_EQ(s.dedup_remapped, 1);
  EXPECT_EQ(s.dedup_remapped_shifted, 1);
  EXPECT_EQ(s.groups[0].logical_blocks, 7);  // entries, not references (8)
  EXPECT_EQ(s.groups[0].physical_blocks, 6);
  EXPECT_EQ(s.BytesSaved(), 1024);
  EXPECT_EQ(manager_->GetSequenceInfo(1)->remapped_blocks, 1);
  EXPECT_EQ(manager_->GetSequenceInfo(1)->shifted_blocks, 1);
  ASSERT_TRUE(manager_->CheckInvariants().ok());

  // What a StepPlan carries.
  std::vector<std::vector<int32_t>> blocks, hi, shifts;
  ASSERT_TRUE(manager_->CopyBlockTables(1, &blocks, &hi, &shifts).ok());
  EXPECT_EQ(blocks[0], std::vector<int32_t>(t.blocks.begin(), t.blocks.end()));
  EXPECT_EQ(hi[0], std::vector<int32_t>(t.blocks_hi.begin(), t.blocks_hi.end()));
  EXPECT_EQ(shifts[0], (std::vector<int32_t>{0, 0, 0, 0, 0, 3, 0}));

  // Generation goes on after the view; everything is released at the end.
  Generate(1, {21, 22, 23, 24, 25});
  ExpectContentIntact(1);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  ASSERT_TRUE(manager_->Free(1).ok());
  EXPECT_EQ(manager_->pool(0).total_refs(), 0);
  EXPECT_EQ(manager_->pool(0).num_free(), 32);
  EXPECT_EQ(manager_->Stats().groups[0].logical_blocks, 0);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, ShiftedSharingCanBeTurnedOff) {
  KvManager::Options o = SmallOptions(1, 32);
  o.dedup.shifted_sharing = false;
  Init(o);
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kShiftedStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_remapped, 0);
  EXPECT_TRUE(manager_->GetBlockTableSpans(1, 0)->shifts.empty());
  std::vector<std::vector<int32_t>> blocks, hi = {{1}}, shifts = {{1}};
  ASSERT_TRUE(manager_->CopyBlockTables(1, &blocks, &hi, &shifts).ok());
  EXPECT_TRUE(hi.empty());
  EXPECT_TRUE(shifts.empty());
}

TEST_F(KvManagerTest, ViewsArePerLayerGroupAndSurviveForkAndFree) {
  Init(SmallOptions(/*groups=*/2, 48));
  // Group 1 rejects everything: only group 0 gets the view.
  kv_->override_sums = [this](int32_t g, const BlockPair& p) {
    if (g == 1) return DistanceSums{1, 1, 1, 1};
    double differ = 0;
    for (int32_t slot = 0; slot < kBlockSize; ++slot) {
      differ += kv_->Read(g, p.candidate, slot) != kv_->ReadReference(g, p, slot);
    }
    return DistanceSums{differ, kBlockSize, differ, kBlockSize};
  };
  Admit(1, Range(100, 8));
  Generate(1, kStep);
  Generate(1, kShiftedStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  EXPECT_EQ(manager_->Stats().dedup_remapped_shifted, 1);
  std::vector<std::vector<int32_t>> blocks, hi, shifts;
  ASSERT_TRUE(manager_->CopyBlockTables(1, &blocks, &hi, &shifts).ok());
  ASSERT_EQ(hi.size(), 2u);
  ASSERT_EQ(shifts.size(), 2u);
  EXPECT_EQ(shifts[0][5], 3);
  EXPECT_TRUE(hi[1].empty());  // no view in group 1
  EXPECT_TRUE(shifts[1].empty());

  // A fork holds its own references on the view's blocks.
  ASSERT_TRUE(manager_->Fork(1, 2).ok());
  tokens_[2] = tokens_[1];
  const int32_t lo = blocks[0][5], hi_block = hi[0][5];
  EXPECT_EQ(manager_->pool(0).ref_count(lo), 4);  // entries 2 and 5 of both tables
  EXPECT_EQ(manager_->pool(0).ref_count(hi_block), 4);
  EXPECT_EQ(manager_->Stats().groups[0].logical_blocks, 14);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  ASSERT_TRUE(manager_->Free(1).ok());
  EXPECT_EQ(manager_->pool(0).ref_count(lo), 2);
  Generate(2, {31, 32, 33});
  ExpectContentIntact(2);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
  ASSERT_TRUE(manager_->Free(2).ok());
  EXPECT_EQ(manager_->pool(0).total_refs(), 0);
  EXPECT_EQ(manager_->Stats().groups[0].logical_blocks, 0);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

// Views never chain: a window over a view is never a reference. Step 2's
// block 7 holds [12 13 14 15], which is both the window at shift 2 over
// blocks 4 and 5 (5 is a view: refused) and the window at shift 1 over step
// 0's primary blocks 2 and 3 (taken).
TEST_F(KvManagerTest, WindowsOverViewsAreNeverReferences) {
  KvManager::Options o = SmallOptions(1, 48);
  o.enable_prefix_cache = false;
  Init(o);
  DedupParams loose;
  loose.tau_lex = 0.2f;
  Admit(1, Range(100, 8), "", loose);
  Generate(1, kStep);
  Generate(1, kShiftedStep);
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  ASSERT_EQ(manager_->Stats().dedup_remapped_shifted, 1);
  // Positions 25..34: block 6 = [0 1 2 3], block 7 = [12 13 14 15].
  Generate(1, {1, 2, 3, 12, 13, 14, 15, 16, 17, 0});
  ASSERT_TRUE(manager_->RunDedup(*kv_).ok());
  const KvManager::BlockTableSpans t = *manager_->GetBlockTableSpans(1, 0);
  ASSERT_EQ(t.shifts.size(), 9u);
  EXPECT_EQ(t.shifts[5], 3);
  EXPECT_EQ(t.shifts[7], 1);
  EXPECT_EQ(t.blocks[7], t.blocks[2]);
  EXPECT_EQ(t.blocks_hi[7], t.blocks[3]);
  EXPECT_EQ(manager_->Stats().dedup_remapped_shifted, 2);
  ExpectContentIntact(1);
  ASSERT_TRUE(manager_->CheckInvariants().ok());
}

TEST_F(KvManagerTest, StatsMayBeReadFromAnotherThread) {
  Init(SmallOptions(1, 256));
  std::atomic<bool> done{false}, started{false};
  int64_t reads = 0;
  std::thread reader([&] {
    started = true;
    do {
      const KvStatsSnapshot s = manager_->Stats();
      reads += s.groups[0].physical_blocks >= 0;
    } while (!done.load());
  });
  while (!started.load()) std::this_thread::yield();
  for (uint64_t id = 1; id <= 20; ++id) Admit(id, Range(1000 * id, 30));
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_TRUE(manager_->Free(id).ok());
  done = true;
  reader.join();
  EXPECT_GT(reads, 0);
  EXPECT_EQ(manager_->Stats().sequences, 0);
  EXPECT_EQ(manager_->Stats().groups[0].physical_blocks, 0);
}

}  // namespace
}  // namespace memshare::kvmanager
