#include "engine/model/safetensors_file.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/model/testing/checkpoint_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::model {
namespace {

using ::testing::ElementsAre;
using testing::EncodeFloats;
using ::testing::HasSubstr;
using testing::RawTensor;
using testing::SerializeSafetensors;

class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("safetensors_file_test"); }

  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(testing::WriteFile(path, content).ok());
    return path;
  }

  std::string dir_;
};

std::vector<float> Floats(const TensorView& t) {
  std::vector<float> out(t.NumElements());
  EXPECT_TRUE(CopyToFloat(t, 0, t.NumElements(), out.data()).ok());
  return out;
}

TEST_F(SafetensorsFileTest, ReadsEveryFloatDtype) {
  const std::vector<float> v = {1.0f, -2.5f, 0.15625f, 3.0f, -0.0078125f, 96.0f};
  const std::string path = Write(
      "a.safetensors", SerializeSafetensors({{"w.f32", "F32", {2, 3}, EncodeFloats(v, "F32")},
                                             {"w.bf16", "BF16", {3, 2}, EncodeFloats(v, "BF16")},
                                             {"w.f16", "F16", {6}, EncodeFloats(v, "F16")}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT((*f)->TensorNames(), ElementsAre("w.bf16", "w.f16", "w.f32"));
  for (const char* name : {"w.f32", "w.bf16", "w.f16"}) {
    absl::StatusOr<TensorView> t = (*f)->Find(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->NumElements(), 6);
    EXPECT_EQ(Floats(*t), v) << name;
    EXPECT_EQ(t->file, path);
  }
  absl::StatusOr<TensorView> t = (*f)->Find("w.bf16");
  EXPECT_THAT(std::vector<int64_t>(t->shape.begin(), t->shape.end()), ElementsAre(3, 2));
  EXPECT_EQ(t->dtype, DType::kBF16);
  // A sub-range.
  float two[2];
  ASSERT_TRUE(CopyToFloat(*t, 3, 2, two).ok());
  EXPECT_EQ(two[0], 3.0f);
  EXPECT_EQ(two[1], -0.0078125f);
  EXPECT_FALSE(CopyToFloat(*t, 5, 2, two).ok());
}

TEST_F(SafetensorsFileTest, CopiesIntoBf16) {
  const std::vector<float> v = {1.0f, -2.5f, 1.0f + 0x1p-8f, 3.0f};
  const std::string path =
      Write("c.safetensors", SerializeSafetensors({{"f32", "F32", {4}, EncodeFloats(v, "F32")},
                                                   {"bf16", "BF16", {4}, EncodeFloats(v, "BF16")},
                                                   {"f16", "F16", {4}, EncodeFloats(v, "F16")},
                                                   {"i8", "I8", {4}, std::string(4, '\1')}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  for (const char* name : {"f32", "bf16", "f16"}) {
    Bf16 out[4];
    ASSERT_TRUE(CopyToBf16(*(*f)->Find(name), 0, 4, out).ok()) << name;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i].bits, FloatToBf16(v[i]).bits) << name << i;
  }
  Bf16 two[2];
  ASSERT_TRUE(CopyToBf16(*(*f)->Find("bf16"), 2, 2, two).ok());
  EXPECT_EQ(Bf16ToFloat(two[1]), 3.0f);
  EXPECT_FALSE(CopyToBf16(*(*f)->Find("bf16"), 3, 2, two).ok());
  EXPECT_FALSE(CopyToBf16(*(*f)->Find("f32"), 3, 2, two).ok());
  EXPECT_FALSE(CopyToBf16(*(*f)->Find("i8"), 0, 2, two).ok());
}

TEST_F(SafetensorsFileTest, Fp16Conversion) {
  EXPECT_EQ(Fp16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(Fp16ToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(Fp16ToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_TRUE(std::signbit(Fp16ToFloat(0x8000)));
  EXPECT_EQ(Fp16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(Fp16ToFloat(0x7e00)));
}

TEST_F(SafetensorsFileTest, MissingTensorAndFile) {
  const std::string path =
      Write("b.safetensors", SerializeSafetensors({{"x", "F32", {1}, EncodeFloats({1}, "F32")}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  absl::StatusOr<TensorView> t = (*f)->Find("y");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("'y'"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(path));
  EXPECT_EQ(SafetensorsFile::Open(dir_ + "/none.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsFileTest, TruncatedFileNamesFileAndTensor) {
  std::string good = SerializeSafetensors({{"a", "F32", {4}, EncodeFloats({1, 2, 3, 4}, "F32")},
                                           {"b", "F32", {4}, EncodeFloats({5, 6, 7, 8}, "F32")}});
  const std::string path = Write("t.safetensors", good.substr(0, good.size() - 3));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(f.status().message());
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("tensor 'b'"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
}

TEST_F(SafetensorsFileTest, TruncatedInsideHeader) {
  std::string good = SerializeSafetensors({{"a", "F32", {4}, EncodeFloats({1, 2, 3, 4}, "F32")}});
  for (size_t keep : {size_t{0}, size_t{5}, size_t{8}, size_t{20}}) {
    const std::string path = Write("h.safetensors", good.substr(0, keep));
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << keep;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
  }
}

TEST_F(SafetensorsFileTest, MalformedHeaders) {
  auto with_header = [](const std::string& h, size_t data_bytes) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    return out + h + std::string(data_bytes, '\0');
  };
  struct Case {
    std::string header;
    const char* message;
  };
  const Case cases[] = {
      {"not json at all", "not a JSON object"},
      {"[1,2,3]", "not a JSON object"},
      {R"({"a": 5})", "tensor 'a': header entry is not an object"},
      {R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", "tensor 'a': no dtype"},
      {R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", "tensor 'a': no shape"},
      {R"({"a": {"dtype": "F32", "shape": [1]}})", "tensor 'a': no data_offsets"},
      {R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "bad shape"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "bad data_offsets"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})",
       "holds 4 bytes, but shape [2] of F32 needs 8"},
  };
  for (const Case& c : cases) {
    const std::string path = Write("m.safetensors", with_header(c.header, 8));
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << c.header;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(c.message)) << c.header;
  }
  // A header length far beyond the file.
  std::string huge(8, '\xff');
  const std::string path = Write("huge.safetensors", huge + "{}");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("does not fit"));
}

TEST_F(SafetensorsFileTest, OtherDtypesOpenButDoNotConvert) {
  const std::string path = Write(
      "i8.safetensors", SerializeSafetensors({{"q", "I8", {4}, std::string("\x01\x02\x03\x04")}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<TensorView> t = (*f)->Find("q");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->dtype, DType::kOther);
  float out[4];
  absl::Status st = CopyToFloat(*t, 0, 4, out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("dtype I8"));
}

}  // namespace
}  // namespace memshare::engine::model
