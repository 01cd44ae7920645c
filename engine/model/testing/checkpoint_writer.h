// Test helpers that write small safetensors files and Hugging Face model
// directories, well formed or deliberately broken, for the loader tests.
#ifndef MEMSHARE_ENGINE_MODEL_TESTING_CHECKPOINT_WRITER_H_
#define MEMSHARE_ENGINE_MODEL_TESTING_CHECKPOINT_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model_config.h"

namespace memshare::engine::model::testing {

struct RawTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", or anything else
  std::vector<int64_t> shape;
  std::string bytes;  // the data, as stored
};

// Little-endian storage of `v` in `dtype` (F32, F16 or BF16, rounded to
// nearest even).
std::string EncodeFloats(const std::vector<float>& v, const std::string& dtype);

// The bytes of a safetensors file holding `tensors`, in order.
std::string SerializeSafetensors(const std::vector<RawTensor>& tensors);

absl::Status WriteFile(const std::string& path, const std::string& content);

// A fresh empty directory under TEST_TMPDIR (or /tmp).
std::string MakeTempDir(const std::string& name);

// The config.json text of `c` (written the way transformers 5 writes it).
std::string ConfigJson(const ModelConfig& c);

struct CheckpointOptions {
  std::string dtype = "F32";
  uint64_t seed = 1;
  // Writes shards of at most this many tensors and an index; 0: one file.
  int tensors_per_shard = 0;
  std::string omit_tensor;         // leave this tensor out
  std::string wrong_shape_tensor;  // store this one with one extra row
};

// Writes config.json and the weights of `c` (values from the seed) into
// `dir`. The value of element i of tensor `name` is ValueAt(seed, name, i).
absl::Status WriteCheckpoint(const std::string& dir, const ModelConfig& c,
                             const CheckpointOptions& options);
float ValueAt(uint64_t seed, const std::string& name, int64_t i);

}  // namespace memshare::engine::model::testing

#endif  // MEMSHARE_ENGINE_MODEL_TESTING_CHECKPOINT_WRITER_H_
