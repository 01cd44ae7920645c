#include "engine/model/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bf16.h"
#include "nlohmann/json.hpp"

namespace memshare::engine::model {
namespace {

using Json = nlohmann::json;

// The format's own limit on the header (100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

DType ParseDType(absl::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return DType::kOther;
}

bool NonNegativeInt(const Json& v, uint64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  const int64_t i = v.get<int64_t>();
  if (i < 0) return false;
  *out = static_cast<uint64_t>(i);
  return true;
}

}  // namespace

int DTypeSize(DType d) {
  switch (d) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kOther:
      return 0;
  }
  return 0;
}

absl::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kOther:
      return "other";
  }
  return "other";
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

float Fp16ToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {  // inf / NaN
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {  // zero
    bits = sign;
  } else {  // subnormal: renormalize
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

namespace {

absl::Status CheckRange(const TensorView& t, int64_t offset, int64_t count) {
  const int64_t n = t.NumElements();
  if (offset < 0 || count < 0 || offset > n || count > n - offset) {
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "': elements [",
                                                   offset, ", ", offset + count, ") outside its ",
                                                   n, " elements"));
  }
  return absl::OkStatus();
}

absl::Status UnsupportedDType(const TensorView& t) {
  return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' has dtype ",
                                                 t.dtype_name,
                                                 "; supported dtypes are F32, F16 and BF16"));
}

}  // namespace

absl::Status CopyToFloat(const TensorView& t, int64_t offset, int64_t count, float* out) {
  absl::Status range = CheckRange(t, offset, count);
  if (!range.ok()) return range;
  switch (t.dtype) {
    case DType::kF32:
      std::memcpy(out, t.data + offset * 4, count * 4);
      return absl::OkStatus();
    case DType::kBF16:
      for (int64_t i = 0; i < count; ++i) {
        Bf16 v;
        std::memcpy(&v.bits, t.data + (offset + i) * 2, 2);
        out[i] = Bf16ToFloat(v);
      }
      return absl::OkStatus();
    case DType::kF16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t v;
        std::memcpy(&v, t.data + (offset + i) * 2, 2);
        out[i] = Fp16ToFloat(v);
      }
      return absl::OkStatus();
    case DType::kOther:
      break;
  }
  return UnsupportedDType(t);
}

absl::Status CopyToBf16(const TensorView& t, int64_t offset, int64_t count, Bf16* out) {
  absl::Status range = CheckRange(t, offset, count);
  if (!range.ok()) return range;
  if (t.dtype == DType::kOther) return UnsupportedDType(t);
  if (t.dtype == DType::kBF16) {
    std::memcpy(out, t.data + offset * 2, count * 2);
    return absl::OkStatus();
  }
  // F32 and F16 through a float32 buffer, a bounded piece at a time.
  constexpr int64_t kPiece = 4096;
  float buf[kPiece];
  for (int64_t done = 0; done < count; done += kPiece) {
    const int64_t len = std::min(kPiece, count - done);
    absl::Status st = CopyToFloat(t, offset + done, len, buf);
    if (!st.ok()) return st;
    for (int64_t i = 0; i < len; ++i) out[done + i] = FloatToBf16(buf[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", size, " bytes, too short for a safetensors header (truncated file?)"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(map_err)));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile(path, map, size));
  absl::Status st2 = f->ParseHeader();
  if (!st2.ok()) return st2;
  return f;
}

SafetensorsFile::~SafetensorsFile() { ::munmap(map_, size_); }

absl::Status SafetensorsFile::ParseHeader() {
  const uint8_t* bytes = static_cast<const uint8_t*>(map_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > size_ - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header length ", header_len,
                                                   " does not fit the file of ", size_,
                                                   " bytes (truncated or not a safetensors file)"));
  }
  data_ = bytes + 8 + header_len;
  data_size_ = size_ - 8 - header_len;
  const char* hb = reinterpret_cast<const char*>(bytes + 8);
  Json header = Json::parse(hb, hb + header_len, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is not a JSON object (corrupt safetensors file)"));
  }
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const Json& e = it.value();
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "': ", what));
    };
    if (!e.is_object()) return bad("header entry is not an object");
    if (!e.contains("dtype") || !e.at("dtype").is_string()) return bad("no dtype");
    if (!e.contains("shape") || !e.at("shape").is_array()) return bad("no shape");
    if (!e.contains("data_offsets") || !e.at("data_offsets").is_array() ||
        e.at("data_offsets").size() != 2) {
      return bad("no data_offsets [begin, end]");
    }
    Entry entry;
    entry.name = name;
    entry.dtype_name = e.at("dtype").get<std::string>();
    entry.dtype = ParseDType(entry.dtype_name);
    uint64_t numel = 1;
    for (const Json& d : e.at("shape")) {
      uint64_t v;
      if (!NonNegativeInt(d, &v) || v > (uint64_t{1} << 40)) return bad("bad shape");
      if (v != 0 && numel > (uint64_t{1} << 62) / v) return bad("shape too large");
      numel *= v;
      entry.shape.push_back(static_cast<int64_t>(v));
    }
    if (!NonNegativeInt(e.at("data_offsets")[0], &entry.begin) ||
        !NonNegativeInt(e.at("data_offsets")[1], &entry.end) || entry.begin > entry.end) {
      return bad("bad data_offsets");
    }
    if (entry.end > data_size_) {
      return bad(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                              "] run past the end of the data (", data_size_,
                              " bytes): the file is truncated"));
    }
    const int elem = DTypeSize(entry.dtype);
    if (elem != 0 && entry.end - entry.begin != numel * elem) {
      return bad(absl::StrCat("holds ", entry.end - entry.begin, " bytes, but shape [",
                              absl::StrJoin(entry.shape, ", "), "] of ", entry.dtype_name,
                              " needs ", numel * elem));
    }
    entries_.emplace(name, std::move(entry));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorView> SafetensorsFile::Find(absl::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  const Entry& e = it->second;
  TensorView v;
  v.name = e.name;
  v.dtype = e.dtype;
  v.dtype_name = e.dtype_name;
  v.shape = e.shape;
  v.data = data_ + e.begin;
  v.nbytes = e.end - e.begin;
  v.file = path_;
  return v;
}

std::vector<std::string> SafetensorsFile::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [k, v] : entries_) names.push_back(k);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace memshare::engine::model
