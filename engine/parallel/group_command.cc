#include "engine/parallel/group_command.h"

#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memshare::engine {
namespace {

constexpr uint32_t kMagic = 0x4347534d;  // "MSGC"
// 2: shifted views and shifted reference windows; 3: fed tokens
// (SequenceChunk::fed_row, DeviceSampling::count_fed_token).
constexpr uint16_t kVersion = 3;

// The number of members of an aggregate: the most initializers its brace
// initialization takes.
struct AnyField {
  template <typename T>
  operator T() const;  // declared only: used unevaluated
};
template <typename T, size_t... I>
constexpr bool TakesFields(std::index_sequence<I...>) {
  return requires { T{(void(I), AnyField{})...}; };
}
template <typename T, size_t N = 0>
constexpr size_t FieldCount() {
  if constexpr (TakesFields<T>(std::make_index_sequence<N + 1>())) {
    return FieldCount<T, N + 1>();
  } else {
    return N;
  }
}

// When this fires, a field was added to (or removed from) SequenceChunk,
// DeviceSampling or kvmanager::BlockPair: list it in VisitChunk /
// VisitSampling / the BlockPair operators below (the plan and the distance
// pairs must reach the other ranks whole), then update the counts here.
// (The sizes alone missed two fields that fit in padding: fed_row and
// count_fed_token, encoded since version 3.)
static_assert(FieldCount<SequenceChunk>() == 9 && FieldCount<DeviceSampling>() == 13 &&
                  FieldCount<kvmanager::BlockPair>() == 4,
              "SequenceChunk, DeviceSampling or BlockPair changed: update the fields of the group "
              "command encoding (engine/parallel/group_command.cc)");

// The fields of each plan struct, once, for the writer and the reader.
template <typename A, typename D>
void VisitSampling(A& a, D& d) {
  a(d.temperature);
  a(d.top_k);
  a(d.top_p);
  a(d.min_p);
  a(d.repetition_penalty);
  a(d.presence_penalty);
  a(d.frequency_penalty);
  a(d.uniform);
  a(d.penalty_token_ids);
  a(d.penalty_counts);
  a(d.count_fed_token);
  a(d.return_logprob);
  a(d.return_logits);
}

template <typename A, typename S>
void VisitChunk(A& a, S& s) {
  a(s.seq_id);
  a(s.start_pos);
  a(s.token_ids);
  a(s.block_tables);
  a(s.block_tables_hi);
  a(s.block_shifts);
  a(s.fed_row);
  a(s.compute_logits);
  a(s.sampling);
}

template <typename T>
constexpr bool kRaw = std::is_arithmetic_v<T> || std::is_enum_v<T>;

class Writer {
 public:
  template <typename T>
  requires kRaw<T>
  void operator()(const T& v) { Append(&v, sizeof(T)); }
  template <typename T>
  void operator()(const std::vector<T>& v) {
    (*this)(static_cast<uint64_t>(v.size()));
    if constexpr (kRaw<T> && !std::is_same_v<T, bool>) {
      Append(v.data(), v.size() * sizeof(T));
    } else {
      for (const T& x : v) (*this)(x);
    }
  }
  template <typename T>
  void operator()(const std::optional<T>& v) {
    (*this)(static_cast<uint8_t>(v.has_value() ? 1 : 0));
    if (v.has_value()) (*this)(*v);
  }
  void operator()(const DeviceSampling& d) { VisitSampling(*this, d); }
  void operator()(const SequenceChunk& s) { VisitChunk(*this, s); }
  void operator()(const kvmanager::BlockPair& p) {
    (*this)(p.candidate);
    (*this)(p.reference);
    (*this)(p.reference_next);
    (*this)(p.shift);
  }
  void operator()(const std::pair<int32_t, int32_t>& p) {
    (*this)(p.first);
    (*this)(p.second);
  }

  std::string Take() { return std::move(out_); }

 private:
  void Append(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}

  template <typename T>
  requires kRaw<T>
  void operator()(T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t b = 0;
      Take(&b, 1);
      if (b > 1) Fail("a bool that is neither 0 nor 1");
      v = b == 1;
    } else {
      Take(&v, sizeof(T));
    }
  }
  template <typename T>
  void operator()(std::vector<T>& v) {
    uint64_t n = 0;
    (*this)(n);
    // Every element takes at least one byte (raw ones their size): a count
    // beyond what is left is corrupt, and must not size an allocation.
    const uint64_t unit = kRaw<T> ? sizeof(T) : 1;
    if (!ok_ || n > (in_.size() - at_) / unit) {
      Fail("a vector longer than the buffer");
      v.clear();
      return;
    }
    v.resize(n);
    if constexpr (kRaw<T> && !std::is_same_v<T, bool>) {
      Take(v.data(), n * sizeof(T));
    } else {
      for (T& x : v) {
        if (!ok_) return;
        (*this)(x);
      }
    }
  }
  template <typename T>
  void operator()(std::optional<T>& v) {
    uint8_t has = 0;
    (*this)(has);
    if (has > 1) Fail("an optional flag that is neither 0 nor 1");
    if (has == 1 && ok_) {
      v.emplace();
      (*this)(*v);
    } else {
      v.reset();
    }
  }
  void operator()(DeviceSampling& d) { VisitSampling(*this, d); }
  void operator()(SequenceChunk& s) { VisitChunk(*this, s); }
  void operator()(kvmanager::BlockPair& p) {
    (*this)(p.candidate);
    (*this)(p.reference);
    (*this)(p.reference_next);
    (*this)(p.shift);
  }
  void operator()(std::pair<int32_t, int32_t>& p) {
    (*this)(p.first);
    (*this)(p.second);
  }

  bool ok() const { return ok_; }
  bool at_end() const { return at_ == in_.size(); }
  const std::string& error() const { return error_; }
  void Fail(absl::string_view why) {
    if (ok_) error_ = absl::StrCat(why, " at byte ", at_, " of ", in_.size());
    ok_ = false;
  }

 private:
  void Take(void* p, size_t n) {
    if (!ok_) return;
    if (n > in_.size() - at_) {
      Fail("truncated");
      return;
    }
    std::memcpy(p, in_.data() + at_, n);
    at_ += n;
  }

  absl::string_view in_;
  size_t at_ = 0;
  bool ok_ = true;
  std::string error_;
};

template <typename A, typename C>
void VisitCommand(A& a, C& c) {
  a(c.sequence);
  a(c.step);
  switch (c.kind) {
    case GroupCommandKind::kForward:
      a(c.plan.sequences);
      break;
    case GroupCommandKind::kCopyBlocks:
      a(c.layer_group);
      a(c.copies);
      break;
    case GroupCommandKind::kDistance:
      a(c.layer_group);
      a(c.pairs);
      break;
    case GroupCommandKind::kCheck:
    case GroupCommandKind::kShutdown:
      break;
  }
}

}  // namespace

const char* GroupCommandKindName(GroupCommandKind kind) {
  switch (kind) {
    case GroupCommandKind::kForward:
      return "forward";
    case GroupCommandKind::kCopyBlocks:
      return "copy_blocks";
    case GroupCommandKind::kDistance:
      return "distance";
    case GroupCommandKind::kCheck:
      return "check";
    case GroupCommandKind::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

std::string EncodeGroupCommand(const GroupCommand& command) {
  Writer w;
  w(kMagic);
  w(kVersion);
  w(command.kind);
  VisitCommand(w, command);
  return w.Take();
}

std::string EncodeForwardCommand(uint64_t sequence, int64_t step, const StepPlan& plan) {
  Writer w;  // VisitCommand's order for kForward
  w(kMagic);
  w(kVersion);
  w(GroupCommandKind::kForward);
  w(sequence);
  w(step);
  w(plan.sequences);
  return w.Take();
}

absl::StatusOr<GroupCommand> DecodeGroupCommand(absl::string_view bytes) {
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0;
  uint8_t kind = 0;
  r(magic);
  r(version);
  r(kind);
  if (r.ok() && (magic != kMagic || version != kVersion)) {
    return absl::DataLossError(absl::StrCat("group command: magic ", magic, " version ", version,
                                            " (expected ", kMagic, " version ", kVersion, ")"));
  }
  if (r.ok() && (kind < static_cast<uint8_t>(GroupCommandKind::kForward) ||
                 kind > static_cast<uint8_t>(GroupCommandKind::kShutdown))) {
    return absl::DataLossError(absl::StrCat("group command: unknown kind ", kind));
  }
  GroupCommand c;
  c.kind = static_cast<GroupCommandKind>(kind);
  if (r.ok()) VisitCommand(r, c);
  if (r.ok() && !r.at_end()) r.Fail("trailing bytes");
  if (!r.ok()) return absl::DataLossError(absl::StrCat("group command: ", r.error()));
  return c;
}

}  // namespace memshare::engine
