#include "engine/sampler/stop_string_matcher.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

// Feeds `pieces`, returns everything emitted (plus the flush when the
// matcher did not stop) and whether it stopped.
std::pair<std::string, bool> Feed(const std::vector<std::string>& stops,
                                  const std::vector<std::string>& pieces) {
  StopStringMatcher m(stops);
  std::string out;
  for (const std::string& p : pieces) {
    auto r = m.Append(p);
    out += r.text;
    if (r.stopped) return {out, true};
  }
  return {out + m.Flush(), false};
}

TEST(StopStringMatcherTest, NoStopsPassesTextThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Append("hello").text, "hello");
  EXPECT_EQ(m.held_back(), 0u);
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, EmptyStopStringsAreIgnored) {
  StopStringMatcher m({""});
  auto r = m.Append("abc");
  EXPECT_EQ(r.text, "abc");
  EXPECT_FALSE(r.stopped);
}

TEST(StopStringMatcherTest, StopInsideOnePieceCutsBeforeIt) {
  StopStringMatcher m({"END"});
  auto r = m.Append("fooENDbar");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "foo");
  EXPECT_EQ(r.stop_index, 0);
  EXPECT_TRUE(m.stopped());
  auto after = m.Append("more");
  EXPECT_TRUE(after.text.empty());
  EXPECT_FALSE(after.stopped);
}

TEST(StopStringMatcherTest, HoldsBackAPossibleBeginning) {
  StopStringMatcher m({"END"});
  auto r1 = m.Append("abcE");
  EXPECT_EQ(r1.text, "abc");
  EXPECT_EQ(m.held_back(), 1u);
  auto r2 = m.Append("N");
  EXPECT_EQ(r2.text, "");
  EXPECT_EQ(m.held_back(), 2u);
  auto r3 = m.Append("D!");
  EXPECT_TRUE(r3.stopped);
  EXPECT_EQ(r3.text, "");
}

TEST(StopStringMatcherTest, ReleasesWhenTheBeginningDoesNotComplete) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Append("xE").text, "x");
  EXPECT_EQ(m.Append("Nx").text, "ENx");
  EXPECT_EQ(m.held_back(), 0u);
  EXPECT_EQ(m.Append("EN").text, "");
  EXPECT_EQ(m.Flush(), "EN");  // stream ended for another reason
}

TEST(StopStringMatcherTest, OverlappingPrefixes) {
  // "aab" inside "aaab": the held-back "aa" must slide by one.
  EXPECT_EQ(Feed({"aab"}, {"a", "a", "a", "b", "c"}), std::make_pair(std::string("a"), true));
  EXPECT_EQ(Feed({"abab"}, {"ab", "ab", "a", "b"}), std::make_pair(std::string(""), true));
  EXPECT_EQ(Feed({"abab"}, {"aba", "c"}), std::make_pair(std::string("abac"), false));
}

TEST(StopStringMatcherTest, EarliestMatchWinsAmongSeveral) {
  StopStringMatcher m({"world", "lo w"});
  auto r = m.Append("hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "hel");
  EXPECT_EQ(r.stop_index, 1);
  // Same place: the first listed wins.
  StopStringMatcher n({"ab", "abc"});
  auto s = n.Append("xabc");
  EXPECT_EQ(s.stop_index, 0);
  EXPECT_EQ(s.text, "x");
}

TEST(StopStringMatcherTest, MultiByteUtf8) {
  EXPECT_EQ(Feed({"。"}, {"你好", "\xe3\x80", "\x82", "more"}),
            std::make_pair(std::string("你好"), true));
  EXPECT_EQ(Feed({"\n\n"}, {"step 1\n", "\nstep 2"}), std::make_pair(std::string("step 1"), true));
}

// Whatever the split, the output equals the text up to the first stop string
// (or all of it), and nothing is emitted that a later piece turns into a stop.
TEST(StopStringMatcherTest, AnySplitMatchesTheReference) {
  std::mt19937 rng(1);
  const std::vector<std::string> stops = {"aba", "bb", "cab"};
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int len = std::uniform_int_distribution<int>(0, 20)(rng);
    for (int i = 0; i < len; ++i) text += "abc"[std::uniform_int_distribution<int>(0, 2)(rng)];
    size_t first = std::string::npos;
    for (const auto& s : stops) first = std::min(first, text.find(s));
    const std::string expected = first == std::string::npos ? text : text.substr(0, first);

    std::vector<std::string> pieces;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t n = std::uniform_int_distribution<size_t>(0, 4)(rng);
      pieces.push_back(text.substr(pos, n));
      pos += n;
    }
    StopStringMatcher m(stops);
    std::string out;
    bool stopped = false;
    for (const auto& p : pieces) {
      auto r = m.Append(p);
      out += r.text;
      // Invariant: the emitted text is a prefix of the expected output.
      ASSERT_EQ(expected.compare(0, out.size(), out), 0) << text << " -> " << out;
      if (r.stopped) {
        stopped = true;
        break;
      }
    }
    if (!stopped) out += m.Flush();
    EXPECT_EQ(out, expected) << text;
    EXPECT_EQ(stopped, first != std::string::npos) << text;
  }
}

}  // namespace
}  // namespace memshare::engine
