// The tensors of a Hugging Face model directory: `model.safetensors`, or the
// shards that `model.safetensors.index.json` names ({"weight_map": {tensor:
// file}}), each memory-mapped (SafetensorsFile).
//
// OpenDir() opens every shard and checks that each tensor the index names is
// in the file it names, so a wrong or stale index fails at load time.
//
// Immutable after OpenDir(): thread-safe.
#ifndef MEMSHARE_ENGINE_MODEL_SAFETENSORS_READER_H_
#define MEMSHARE_ENGINE_MODEL_SAFETENSORS_READER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/safetensors_file.h"

namespace memshare::engine::model {

class SafetensorsReader {
 public:
  // NOT_FOUND when `dir` holds neither model.safetensors nor the index;
  // INVALID_ARGUMENT for a malformed index or shard (the message names it).
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> OpenDir(const std::string& dir);

  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  // NOT_FOUND naming the tensor and the directory.
  absl::StatusOr<TensorView> Find(absl::string_view name) const;
  bool Contains(absl::string_view name) const { return where_.contains(name); }
  // Paths of the opened files, in index order.
  std::vector<std::string> Files() const;

 private:
  explicit SafetensorsReader(std::string dir) : dir_(std::move(dir)) {}

  const std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, const SafetensorsFile*> where_;  // tensor -> its file
};

}  // namespace memshare::engine::model

#endif  // MEMSHARE_ENGINE_MODEL_SAFETENSORS_READER_H_
