#include "router/routing_policy.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace memshare::router {
namespace {

std::unique_ptr<RoutingPolicy> Make(const std::string& name) {
  PolicyOptions o;
  o.name = name;
  auto p = CreateRoutingPolicy(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

std::vector<WorkerView> Workers(int n) {
  std::vector<WorkerView> w(n);
  for (int i = 0; i < n; ++i) w[i].address = "10.0.0." + std::to_string(i + 1) + ":50051";
  return w;
}

TEST(RoutingPolicyTest, UnknownNamesAndBadOptionsAreRefused) {
  PolicyOptions o;
  o.name = "random";
  EXPECT_EQ(CreateRoutingPolicy(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.name = "least-load";
  o.in_flight_scale = 0;
  EXPECT_EQ(CreateRoutingPolicy(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LeastLoadPolicyTest, PrefersLowKvUsageFewQueuedTokensAndFewInFlight) {
  auto policy = Make("least-load");
  std::vector<WorkerView> w = Workers(3);
  w[0].kv_usage = 0.8;
  w[1].kv_usage = 0.2;
  w[2].kv_usage = 0.5;
  EXPECT_EQ(policy->Pick({}, w), 1u);
  w[1].waiting_tokens = 8192;  // +1.0
  EXPECT_EQ(policy->Pick({}, w), 2u);
  w[2].in_flight = 64;  // +1.0
  EXPECT_EQ(policy->Pick({}, w), 0u);
}

TEST(LeastLoadPolicyTest, TiesGoRoundRobin) {
  auto policy = Make("least-load");
  std::vector<WorkerView> w = Workers(3);
  std::map<size_t, int> picks;
  for (int i = 0; i < 30; ++i) ++picks[policy->Pick({}, w)];
  EXPECT_EQ(picks.size(), 3u);
  for (const auto& [index, count] : picks) EXPECT_EQ(count, 10);
}

TEST(SessionPolicyTest, SameSessionSameWorkerAndFewMovesWhenAWorkerLeaves) {
  auto policy = Make("session");
  std::vector<WorkerView> w = Workers(4);
  std::map<std::string, std::string> owner;
  std::map<std::string, int> load;
  for (int s = 0; s < 400; ++s) {
    RouteKey key{.session_id = "session-" + std::to_string(s)};
    const std::string a = w[policy->Pick(key, w)].address;
    owner[key.session_id] = a;
    ++load[a];
    // Stable, also when the worker list comes in another order.
    std::vector<WorkerView> reversed(w.rbegin(), w.rend());
    EXPECT_EQ(reversed[policy->Pick(key, reversed)].address, a);
  }
  EXPECT_EQ(load.size(), 4u);
  for (const auto& [a, n] : load) EXPECT_GT(n, 40) << a;  // roughly balanced
  // Worker 2 leaves: only its sessions move.
  std::vector<WorkerView> three = {w[0], w[1], w[3]};
  int moved = 0;
  for (const auto& [session, a] : owner) {
    const std::string now = three[policy->Pick({.session_id = session}, three)].address;
    if (a != w[2].address) {
      EXPECT_EQ(now, a) << session;
    } else {
      ++moved;
    }
  }
  EXPECT_EQ(moved, load[w[2].address]);
  // Under load, the session still sticks (affinity beats balance).
  three[0].kv_usage = 0.99;
  for (const auto& [session, a] : owner) {
    if (a == w[0].address) {
      EXPECT_EQ(three[policy->Pick({.session_id = session}, three)].address, a);
    }
  }
}

TEST(SessionPolicyTest, NoSessionIdFallsBackToLeastLoad) {
  auto policy = Make("session");
  std::vector<WorkerView> w = Workers(3);
  w[0].kv_usage = 0.5;
  w[1].kv_usage = 0.1;
  w[2].kv_usage = 0.5;
  EXPECT_EQ(policy->Pick({}, w), 1u);
}

v1::GenerateRequest Ids(int n, int first = 0) {
  v1::GenerateRequest r;
  for (int i = 0; i < n; ++i) r.mutable_token_ids()->add_ids(i == 0 ? first : i);
  return r;
}

TEST(MakeRouteKeyTest, HashesTheFirstFullBlocks) {
  // Shorter than a block: no prefix.
  EXPECT_FALSE(MakeRouteKey(Ids(15), 16, 2).prefix_hash.has_value());
  ASSERT_TRUE(MakeRouteKey(Ids(16), 16, 2).prefix_hash.has_value());
  // Same first two blocks, different tails: same hash.
  EXPECT_EQ(*MakeRouteKey(Ids(40), 16, 2).prefix_hash, *MakeRouteKey(Ids(33), 16, 2).prefix_hash);
  // A partial second block does not count.
  EXPECT_NE(*MakeRouteKey(Ids(31), 16, 2).prefix_hash, *MakeRouteKey(Ids(32), 16, 2).prefix_hash);
  // A different first token: different hash.
  EXPECT_NE(*MakeRouteKey(Ids(40, 7), 16, 2).prefix_hash,
            *MakeRouteKey(Ids(40), 16, 2).prefix_hash);
  // The cache salt separates tenants.
  v1::GenerateRequest salted = Ids(40);
  salted.set_cache_salt("tenant-b");
  EXPECT_NE(*MakeRouteKey(salted, 16, 2).prefix_hash, *MakeRouteKey(Ids(40), 16, 2).prefix_hash);

  v1::GenerateRequest text;
  text.set_text(std::string(63, 'a'));
  EXPECT_FALSE(MakeRouteKey(text, 16, 2).prefix_hash.has_value());
  text.set_text(std::string(200, 'a'));
  v1::GenerateRequest text2;
  text2.set_text(std::string(128, 'a') + "different tail");
  EXPECT_EQ(*MakeRouteKey(text, 16, 2).prefix_hash, *MakeRouteKey(text2, 16, 2).prefix_hash);

  v1::GenerateRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("system");
  m->set_content(std::string(300, 's'));
  EXPECT_TRUE(MakeRouteKey(chat, 16, 2).prefix_hash.has_value());
  v1::GenerateRequest session;
  session.set_session_id("abc");
  EXPECT_EQ(MakeRouteKey(session, 16, 2).session_id, "abc");
}

TEST(PrefixPolicyTest, SamePrefixSameWorkerUnlessOverloaded) {
  auto policy = Make("prefix");
  std::vector<WorkerView> w = Workers(3);
  const RouteKey key = MakeRouteKey(Ids(64), 16, 2);
  const size_t owner = policy->Pick(key, w);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(policy->Pick(key, w), owner);
  // Different prefixes spread over the workers.
  std::map<size_t, int> spread;
  for (int p = 0; p < 60; ++p) ++spread[policy->Pick(MakeRouteKey(Ids(64, p + 1), 16, 2), w)];
  EXPECT_EQ(spread.size(), 3u);
  // The owner overloaded: least-load instead.
  w[owner].kv_usage = 0.95;
  EXPECT_NE(policy->Pick(key, w), owner);
  // No prefix (short prompt): least-load.
  w[owner].kv_usage = 0.0;
  w[(owner + 1) % 3].kv_usage = 0.5;
  w[(owner + 2) % 3].kv_usage = 0.5;
  EXPECT_EQ(policy->Pick(MakeRouteKey(Ids(3), 16, 2), w), owner);
}

}  // namespace
}  // namespace memshare::router
