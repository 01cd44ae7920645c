// Drives a KvManager with operations decoded from bytes, as a scheduler and a
// backend would, and checks every invariant after each operation. Shared by
// the property test (random bytes) and the libFuzzer target (fuzzer bytes).
//
// Operation alphabet (one opcode byte, then argument bytes; a missing byte
// reads as 0, so every input is valid):
//   add      admit a sequence (prompts from shared templates, so prefixes
//            hit the cache; optional tenant salt; MemShare on or off)
//   append   next prefill chunk or the token sampled last step
//   forward  a scheduler step: append for every sequence (prefill chunk or
//            sampled token), run pending copies, "write" the K/V of appended
//            tokens into the simulated store, CommitStep, sample tokens whose
//            pieces repeat phrases and delimiters (so MemShare finds steps),
//            sometimes after filler tokens (so repeats fall off the block
//            grid and share as shifted views)
//   fork     n > 1 sampling / beam search
//   free     finish, abort or preemption
//   dedup    RunDedup (or RunDedupFor one sequence)
//   reset    drop the prefix cache
//   flood    admit a long random prompt (pool pressure, LRU evictions)
//   misuse   calls that must be refused without side effects
//
// Invariants checked after every operation (independently of the
// manager's own CheckInvariants, which is also called):
//  - per group, every block's ref count == the number of block-table
//    entries naming it plus the shifted views reading it as their second
//    block (Σ refs == entries + views; the cache holds no references);
//  - every shifted view reads two earlier consecutive entries of its table
//    that are no views, full and written, at a shift in [1, block_size),
//    and its block arrays are dense; the block being written is no view;
//  - no block is both free/evictable and named by a table; every free block
//    is uncached;
//  - Stats(): logical == entries, and logical − physical == Σ over blocks
//    of (refs − 1) − views == blocks saved by sharing, bytes saved == that ×
//    block bytes;
//  - every written position of every sequence reads back its own token from
//    the simulated store through its block table (through the window of a
//    shifted view), in every group (catches a missing copy-on-write, a
//    block freed while named, a wrong prefix hit, a remap onto different
//    content or a view at the wrong shift);
//  - a refused operation (RESOURCE_EXHAUSTED and the misuse cases) changed
//    nothing.
//
// Thread-compatible.
#ifndef MEMSHARE_KVMANAGER_TESTING_KV_OP_HARNESS_H_
#define MEMSHARE_KVMANAGER_TESTING_KV_OP_HARNESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kvmanager/kv_manager.h"
#include "kvmanager/testing/fake_block_distance.h"

namespace memshare::kvmanager::testing {

class KvOpHarness {
 public:
  struct Config {
    int32_t num_layer_groups = 1;
    int32_t num_blocks = 48;
    int32_t block_size = 4;
    bool prefix_cache = true;
    // DedupPolicy::near_match_delay_tokens (near matches are verified, and
    // rejected: the harness accepts identical content only).
    int32_t near_match_delay_tokens = 0;
  };

  // Counts of what the operations reached, to show the alphabet covers the
  // awkward cases.
  struct Coverage {
    int64_t ops = 0;
    int64_t exhausted = 0;  // refused with RESOURCE_EXHAUSTED
    int64_t forks = 0;
    int64_t frees = 0;
    int64_t cow_copies = 0;
    int64_t prefix_hits = 0;
    int64_t evictions = 0;
    int64_t remaps = 0;
    int64_t dedup_steps = 0;             // finished steps indexed
    int64_t dedup_candidates = 0;        // block pairs verified
    int64_t frees_with_self_shared = 0;  // freed while its own remaps shared a block
    int64_t shifted_remaps = 0;          // blocks made shifted views
    int64_t frees_with_views = 0;        // freed while holding shifted views
    Coverage& operator+=(const Coverage& o);
  };

  // A configuration from one byte (groups 1-3, block size 2/4/8, cache on
  // or off, 24/64/104 blocks), for the fuzzer.
  static Config ConfigFromByte(uint8_t b);

  static absl::StatusOr<std::unique_ptr<KvOpHarness>> Create(const Config& config);

  KvOpHarness(const KvOpHarness&) = delete;
  KvOpHarness& operator=(const KvOpHarness&) = delete;
  ~KvOpHarness();

  // Applies the operations encoded in `data` until it is used up, checking
  // the invariants after each. Returns the first violation (INTERNAL, with
  // the operation index) or unexpected status.
  absl::Status Run(absl::Span<const uint8_t> data);

  const Coverage& coverage() const { return coverage_; }
  KvManager& manager() { return *manager_; }

 private:
  struct Seq;
  class Reader;

  KvOpHarness(const Config& config, std::unique_ptr<KvManager> manager);

  absl::Status Apply(Reader& in);
  absl::Status OpAdd(Reader& in, bool flood);
  absl::Status OpAppend(Reader& in);
  absl::Status OpForward(Reader& in);
  // Appends the next prefill chunk (at most max_chunk tokens) or the sampled
  // token; a refusal for exhaustion is checked and counted, not an error.
  absl::Status AppendNext(Seq* s, int32_t max_chunk);
  absl::Status OpFork(Reader& in);
  absl::Status OpFree(Reader& in);
  absl::Status OpDedup(Reader& in);
  absl::Status OpMisuse(Reader& in);
  absl::Status CheckAll() const;
  void TakeCopies();
  // Pool counters and table sizes, to prove a refused call changed nothing.
  std::string Fingerprint() const;
  Seq* Pick(Reader& in);

  Config config_;
  std::unique_ptr<KvManager> manager_;
  FakeBlockDistance kv_;
  std::vector<std::unique_ptr<Seq>> seqs_;
  // Copies taken from the manager and not yet run (they run at "forward").
  std::vector<std::vector<BlockCopy>> pending_copies_;
  uint64_t next_id_ = 1;
  Coverage coverage_;
};

}  // namespace memshare::kvmanager::testing

#endif  // MEMSHARE_KVMANAGER_TESTING_KV_OP_HARNESS_H_
