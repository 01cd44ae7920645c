#include "engine/model/testing/checkpoint_writer.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "engine/model/weight_spec.h"
#include "nlohmann/json.hpp"

namespace memshare::engine::model::testing {
namespace {

using Json = nlohmann::json;

uint16_t FloatToFp16(float f) {
  // Round to nearest even through the float's bits; tests use values well
  // inside the normal fp16 range.
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

}  // namespace

std::string EncodeFloats(const std::vector<float>& v, const std::string& dtype) {
  std::string out;
  for (float f : v) {
    if (dtype == "F32") {
      char b[4];
      std::memcpy(b, &f, 4);
      out.append(b, 4);
    } else if (dtype == "BF16") {
      const uint16_t bits = FloatToBf16(f).bits;
      out.push_back(static_cast<char>(bits & 0xff));
      out.push_back(static_cast<char>(bits >> 8));
    } else {
      const uint16_t bits = FloatToFp16(f);
      out.push_back(static_cast<char>(bits & 0xff));
      out.push_back(static_cast<char>(bits >> 8));
    }
  }
  return out;
}

std::string SerializeSafetensors(const std::vector<RawTensor>& tensors) {
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + data;
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/", name);
  std::string cmd = absl::StrCat("rm -rf '", dir, "' && mkdir -p '", dir, "'");
  if (std::system(cmd.c_str()) != 0) return "";
  return dir;
}

std::string ConfigJson(const ModelConfig& c) {
  Json j;
  j["architectures"] = {c.architecture_name};
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  Json rope = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    rope["rope_type"] = "llama3";
    rope["factor"] = c.rope_scaling.factor;
    rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  j["rope_parameters"] = rope;
  return j.dump(2);
}

float ValueAt(uint64_t seed, const std::string& name, int64_t i) {
  // Small distinct values, exactly representable in bf16 and fp16.
  uint64_t h = seed * 1000003u;
  for (unsigned char ch : name) h = h * 131 + ch;
  const int64_t k = static_cast<int64_t>((h + static_cast<uint64_t>(i) * 7919u) % 255) - 127;
  return static_cast<float>(k) / 64.0f;
}

absl::Status WriteCheckpoint(const std::string& dir, const ModelConfig& c,
                             const CheckpointOptions& o) {
  absl::Status st = WriteFile(dir + "/config.json", ConfigJson(c));
  if (!st.ok()) return st;
  absl::StatusOr<std::vector<WeightSpec>> specs = ListWeights(c);
  if (!specs.ok()) return specs.status();
  std::vector<RawTensor> tensors;
  for (const WeightSpec& s : *specs) {
    if (s.name == o.omit_tensor) continue;
    RawTensor t;
    t.name = s.name;
    t.dtype = o.dtype;
    t.shape = s.shape;
    if (s.name == o.wrong_shape_tensor) t.shape[0] += 1;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = ValueAt(o.seed, s.name, i);
    t.bytes = EncodeFloats(v, o.dtype);
    tensors.push_back(std::move(t));
  }
  if (o.tensors_per_shard <= 0) {
    return WriteFile(dir + "/model.safetensors", SerializeSafetensors(tensors));
  }
  const int shards =
      static_cast<int>((tensors.size() + o.tensors_per_shard - 1) / o.tensors_per_shard);
  Json index;
  index["metadata"] = {{"total_size", 0}};
  index["weight_map"] = Json::object();
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<RawTensor> part;
    for (size_t i = s * o.tensors_per_shard;
         i < tensors.size() && i < static_cast<size_t>((s + 1) * o.tensors_per_shard); ++i) {
      part.push_back(tensors[i]);
      index["weight_map"][tensors[i].name] = name;
    }
    st = WriteFile(dir + "/" + name, SerializeSafetensors(part));
    if (!st.ok()) return st;
  }
  return WriteFile(dir + "/model.safetensors.index.json", index.dump(2));
}

}  // namespace memshare::engine::model::testing
