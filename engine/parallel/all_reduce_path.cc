#include "engine/parallel/all_reduce_path.h"

#include "absl/strings/ascii.h"

namespace memshare::engine {

bool ParseAllReduceMode(absl::string_view text, AllReduceMode fallback, AllReduceMode* mode) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t.empty()) {
    *mode = fallback;
  } else if (t == "nccl") {
    *mode = AllReduceMode::kNccl;
  } else if (t == "oneshot") {
    *mode = AllReduceMode::kOneShot;
  } else if (t == "fused") {
    *mode = AllReduceMode::kFused;
  } else {
    return false;
  }
  return true;
}

const char* AllReduceModeName(AllReduceMode mode) {
  switch (mode) {
    case AllReduceMode::kNccl:
      return "nccl";
    case AllReduceMode::kOneShot:
      return "oneshot";
    case AllReduceMode::kFused:
      return "fused";
  }
  return "unknown";
}

bool UseOneShotAllReduce(bool ready, AllReduceMode mode, int64_t count, uintptr_t data) {
  return ready && mode != AllReduceMode::kNccl && count > 0 && count % 8 == 0 &&
         static_cast<uint64_t>(count) * 2 <= one_shot::kMaxBytes && data % 16 == 0;
}

bool UseFusedAddRmsNorm(bool ready, AllReduceMode mode, int rows, int hidden, uintptr_t x,
                        uintptr_t residual, uintptr_t weight, uintptr_t out) {
  return ready && mode == AllReduceMode::kFused && rows > 0 && rows <= one_shot::kSlots &&
         hidden > 0 && hidden % 8 == 0 && static_cast<size_t>(hidden) * 2 <= one_shot::kSlotBytes &&
         x % 16 == 0 && residual % 16 == 0 && weight % 16 == 0 && out % 16 == 0;
}

bool UseOneShotMaxU64(bool ready, AllReduceMode mode, int64_t count, uintptr_t data) {
  return ready && mode != AllReduceMode::kNccl && count > 0 &&
         static_cast<uint64_t>(count) <= one_shot::kMaxU64Count && data % 8 == 0;
}

}  // namespace memshare::engine
