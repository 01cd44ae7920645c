// libFuzzer target over KvManager: the first byte picks a configuration
// (layer groups, block size, prefix cache on/off, pool size), the rest is
// decoded by KvOpHarness into operations (admit, append, forward + commit,
// fork, free, dedup, prefix-cache reset, pool flood, refused calls), with
// every invariant checked after each. Any violation aborts with its
// description.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/types/span.h"
#include "kvmanager/testing/kv_op_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using memshare::kvmanager::testing::KvOpHarness;
  if (size == 0) return 0;
  auto harness = KvOpHarness::Create(KvOpHarness::ConfigFromByte(data[0]));
  if (!harness.ok()) {
    std::fprintf(stderr, "harness: %s\n", harness.status().ToString().c_str());
    std::abort();
  }
  const absl::Status status = (*harness)->Run(absl::MakeConstSpan(data + 1, size - 1));
  if (!status.ok()) {
    std::fprintf(stderr, "kvmanager invariant violated: %s\n", status.ToString().c_str());
    std::abort();
  }
  return 0;
}
