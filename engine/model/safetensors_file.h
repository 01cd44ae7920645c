// One memory-mapped .safetensors file: an 8-byte little-endian header length
// N, N bytes of JSON ({name: {"dtype", "shape", "data_offsets": [begin,
// end]}, "__metadata__": {...}}), then the tensor bytes; offsets are
// relative to the first byte after the header.
//
// Open() checks the whole header before anything reads a tensor: the header
// fits the file, every entry is well formed, every tensor's byte range lies
// inside the file (a truncated download is caught here) and, for the dtypes
// this project reads (F32, F16, BF16), holds exactly shape-product elements.
// Errors name the file and the tensor.
//
// Immutable after Open(): thread-safe. The mapping lives as long as the
// object; TensorView pointers into it must not outlive it.
#ifndef MEMSHARE_ENGINE_MODEL_SAFETENSORS_FILE_H_
#define MEMSHARE_ENGINE_MODEL_SAFETENSORS_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/bf16.h"

namespace memshare::engine::model {

enum class DType { kF32, kF16, kBF16, kOther };

// Bytes per element; 0 for kOther.
int DTypeSize(DType d);
absl::string_view DTypeName(DType d);

// A tensor inside a mapped file.
struct TensorView {
  absl::string_view name;
  DType dtype = DType::kOther;
  absl::string_view dtype_name;  // as written in the header ("BF16", "I8", ...)
  absl::Span<const int64_t> shape;
  const uint8_t* data = nullptr;  // not aligned in general
  size_t nbytes = 0;
  absl::string_view file;  // path of the file holding it

  int64_t NumElements() const;
};

// Converts elements [offset, offset + count) of `t` (row-major) to float32.
// INVALID_ARGUMENT for a dtype other than F32, F16, BF16 or a range outside
// the tensor.
absl::Status CopyToFloat(const TensorView& t, int64_t offset, int64_t count, float* out);

// The same into bf16 (F32 rounded to nearest even, BF16 copied, F16 through
// float32, exact where bf16 can hold the value): what a bf16 backend loads.
absl::Status CopyToBf16(const TensorView& t, int64_t offset, int64_t count, Bf16* out);

// IEEE binary16 to float (exact; subnormals, infinities and NaN kept).
float Fp16ToFloat(uint16_t h);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // NOT_FOUND naming the file and the tensor when it is absent.
  absl::StatusOr<TensorView> Find(absl::string_view name) const;
  bool Contains(absl::string_view name) const { return entries_.contains(name); }
  // Sorted.
  std::vector<std::string> TensorNames() const;

 private:
  struct Entry {
    std::string name;
    DType dtype = DType::kOther;
    std::string dtype_name;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // offsets into the data section
    uint64_t end = 0;
  };

  SafetensorsFile(std::string path, void* map, size_t size)
      : path_(std::move(path)), map_(map), size_(size) {}
  absl::Status ParseHeader();

  const std::string path_;
  void* const map_;  // whole file, read-only
  const size_t size_;
  const uint8_t* data_ = nullptr;  // start of the data section
  uint64_t data_size_ = 0;
  absl::flat_hash_map<std::string, Entry> entries_;
};

}  // namespace memshare::engine::model

#endif  // MEMSHARE_ENGINE_MODEL_SAFETENSORS_FILE_H_
