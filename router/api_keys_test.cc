#include "router/api_keys.h"

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"

namespace memshare::router {
namespace {

TEST(ApiKeysTest, NoKeysLetsEverythingThrough) {
  auto keys = ApiKeys::Create({});
  ASSERT_TRUE(keys.ok());
  EXPECT_FALSE(keys->enabled());
  EXPECT_TRUE(keys->Check("").ok());
}

TEST(ApiKeysTest, ChecksBearerTokens) {
  const std::string path = ::testing::TempDir() + "/keys.txt";
  {
    std::ofstream out(path);
    out << "# tenants\n\nkey-from-file\n";
  }
  auto keys = ApiKeys::Create({"sk-one"}, path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_TRUE(keys->Check("Bearer sk-one").ok());
  EXPECT_TRUE(keys->Check("Bearer key-from-file").ok());
  EXPECT_EQ(keys->Check("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("sk-one").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("Bearer sk-on").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("Bearer sk-one2").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("Basic sk-one").code(), absl::StatusCode::kUnauthenticated);
}

TEST(ApiKeysTest, BadSourcesAreErrors) {
  EXPECT_EQ(ApiKeys::Create({}, "/nonexistent/keys").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ApiKeys::Create({"has space"}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::router
