#include "engine/model/safetensors_reader.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace memshare::engine::model {
namespace {

using Json = nlohmann::json;

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::OpenDir(
    const std::string& dir) {
  std::unique_ptr<SafetensorsReader> r(new SafetensorsReader(dir));
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  if (IsFile(index_path)) {
    std::ifstream in(index_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) return absl::DataLossError(absl::StrCat(index_path, ": read error"));
    const std::string text = ss.str();
    Json j = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j.at("weight_map").is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": expected a JSON object with a 'weight_map' object"));
    }
    absl::flat_hash_map<std::string, const SafetensorsFile*> by_file;
    for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry '", it.key(), "' is not a file name"));
      }
      const std::string file = it.value().get<std::string>();
      // Shards sit beside the index; a path elsewhere is not a checkpoint
      // this reader opens.
      if (file.empty() || absl::StrContains(file, "/") || file == "." || file == "..") {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry '", it.key(), "' names file \"", file,
                         "\", which is not a file name in this directory"));
      }
      auto fit = by_file.find(file);
      if (fit == by_file.end()) {
        absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
            SafetensorsFile::Open(dir + "/" + file);
        if (!f.ok()) {
          return absl::Status(
              f.status().code(),
              absl::StrCat(f.status().message(), " (shard named by ", index_path, ")"));
        }
        fit = by_file.emplace(file, f->get()).first;
        r->files_.push_back(*std::move(f));
      }
      if (!fit->second->Contains(it.key())) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", it.key(),
                                                       "' is mapped to ", file,
                                                       ", which does not contain it"));
      }
      r->where_.emplace(it.key(), fit->second);
    }
    return r;
  }
  if (IsFile(single_path)) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(single_path);
    if (!f.ok()) return f.status();
    for (const std::string& name : (*f)->TensorNames()) r->where_.emplace(name, f->get());
    r->files_.push_back(*std::move(f));
    return r;
  }
  return absl::NotFoundError(absl::StrCat(
      dir, ": no model.safetensors or model.safetensors.index.json in this directory"));
}

absl::StatusOr<TensorView> SafetensorsReader::Find(absl::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": tensor '", name, "' is missing from the checkpoint"));
  }
  return it->second->Find(name);
}

std::vector<std::string> SafetensorsReader::Files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

}  // namespace memshare::engine::model
