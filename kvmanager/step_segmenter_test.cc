#include "kvmanager/step_segmenter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {

// gtest prints steps in failure messages.
std::ostream& operator<<(std::ostream& os, const StepSegmenter::Step& s) {
  return os << "[" << s.begin << ", " << s.end << ")";
}

namespace {

using Step = StepSegmenter::Step;

std::unique_ptr<StepSegmenter> Make(
    int32_t min_step, int32_t max_step = 0,
    std::vector<std::string> delimiters = StepSegmenter::DefaultDelimiters()) {
  StepSegmenter::Options o;
  o.min_step_tokens = min_step;
  o.max_step_tokens = max_step;
  o.delimiters = std::move(delimiters);
  auto s = StepSegmenter::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

std::vector<Step> FeedAll(const StepSegmenter& seg, StepSegmenter::State* state,
                          const std::vector<std::string>& pieces) {
  std::vector<Step> out;
  for (const std::string& p : pieces) seg.Feed(state, p, &out);
  return out;
}

TEST(StepSegmenterTest, BlankLineEndsAStepAfterItsToken) {
  auto seg = Make(1);
  StepSegmenter::State st;
  // tokens: 0 "First" 1 " line" 2 ".\n\n" 3 "Next"
  const auto steps = FeedAll(*seg, &st, {"First", " line", ".\n\n", "Next"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 3}}));
  EXPECT_EQ(st.step_begin(), 3);
  EXPECT_EQ(st.num_tokens(), 4);
}

TEST(StepSegmenterTest, BlankLineAcrossTwoPieces) {
  auto seg = Make(1);
  StepSegmenter::State st;
  const auto steps = FeedAll(*seg, &st, {"a", "\n", "\n", "b"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 3}}));
}

TEST(StepSegmenterTest, WordDelimiterBeginsAStepAtItsTokenOneTokenLate) {
  auto seg = Make(1);
  StepSegmenter::State st;
  std::vector<Step> out;
  seg->Feed(&st, "x", &out);
  seg->Feed(&st, " y", &out);
  seg->Feed(&st, " Wait", &out);  // needs the next byte to know it is a word
  EXPECT_TRUE(out.empty());
  seg->Feed(&st, ",", &out);
  EXPECT_EQ(out, (std::vector<Step>{{0, 2}}));
  EXPECT_EQ(st.step_begin(), 2);
}

TEST(StepSegmenterTest, DelimitersMustBeWholeWords) {
  auto seg = Make(1);
  StepSegmenter::State st;
  const auto steps =
      FeedAll(*seg, &st, {"a", " Butter", " is", " Waiting", " Hmmm", " aBut", " ok", "."});
  EXPECT_TRUE(steps.empty());
}

TEST(StepSegmenterTest, MultiTokenDelimiterStartsAtItsFirstToken) {
  auto seg = Make(1);
  StepSegmenter::State st;
  // 0 "x" 1 " so" 2 " Let" 3 " me" 4 " check" 5 ":"
  const auto steps = FeedAll(*seg, &st, {"x", " so", " Let", " me", " check", ":"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 2}}));
  // "Let me" alone, or "Let me think", is no delimiter.
  StepSegmenter::State st2;
  EXPECT_TRUE(FeedAll(*seg, &st2, {"x", " Let", " me", " think", " ."}).empty());
}

TEST(StepSegmenterTest, DefaultDelimitersAllSplit) {
  auto seg = Make(1);
  for (const std::string& d :
       {std::string("Wait"), std::string("Let me verify"), std::string("Alternatively"),
        std::string("Hmm"), std::string("But"), std::string("So the answer")}) {
    StepSegmenter::State st;
    const auto steps = FeedAll(*seg, &st, {"a", " b", " " + d, " c"});
    EXPECT_EQ(steps, (std::vector<Step>{{0, 2}})) << d;
  }
}

TEST(StepSegmenterTest, ShortStepsAreMergedIntoTheNext) {
  auto seg = Make(4);
  StepSegmenter::State st;
  // Blank lines after tokens 1 and 5: the first would leave a 2-token step.
  const auto steps =
      FeedAll(*seg, &st, {"a", "\n\n", "b", "c", "d", "\n\n", "e", "f", "g", "h", "\n\n"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 6}, {6, 11}}));
}

TEST(StepSegmenterTest, LongStepsAreCut) {
  auto seg = Make(2, 5);
  StepSegmenter::State st;
  std::vector<std::string> pieces(12, " w");
  const auto steps = FeedAll(*seg, &st, pieces);
  EXPECT_EQ(steps, (std::vector<Step>{{0, 5}, {5, 10}}));
}

TEST(StepSegmenterTest, BlankLineThenWordInOneToken) {
  auto seg = Make(1);
  StepSegmenter::State st;
  // The token ".\n\nWait" begins the new step (it starts with "Wait").
  const auto steps = FeedAll(*seg, &st, {"a", " b", ".\n\nWait", ",", " c", "\n\n"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 2}, {2, 6}}));
}

TEST(StepSegmenterTest, StateIsCopiedForFork) {
  auto seg = Make(1);
  StepSegmenter::State parent;
  std::vector<Step> out;
  seg->Feed(&parent, "a", &out);
  seg->Feed(&parent, " Wait", &out);
  StepSegmenter::State child = parent;
  seg->Feed(&parent, " now", &out);
  EXPECT_EQ(out, (std::vector<Step>{{0, 1}}));
  out.clear();
  seg->Feed(&child, "ing", &out);  // "Waiting": not a delimiter for the child
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(child.step_begin(), 0);
}

TEST(StepSegmenterTest, LongTextKeepsWorkingAfterTheTailIsTrimmed) {
  auto seg = Make(1);
  StepSegmenter::State st;
  std::vector<Step> out;
  for (int i = 0; i < 500; ++i) seg->Feed(&st, " word", &out);
  seg->Feed(&st, ".", &out);
  seg->Feed(&st, " So", &out);
  seg->Feed(&st, " the", &out);
  seg->Feed(&st, " answer", &out);
  seg->Feed(&st, " is", &out);
  EXPECT_EQ(out, (std::vector<Step>{{0, 501}}));
}

TEST(StepSegmenterTest, CustomDelimiters) {
  auto seg = Make(1, 0, {"###", "Step"});
  StepSegmenter::State st;
  // "###" is punctuation: no word boundary needed, it begins a step at once.
  const auto steps = FeedAll(*seg, &st, {"a", "b###", "c", " Step", " 2"});
  EXPECT_EQ(steps, (std::vector<Step>{{0, 1}, {1, 3}}));
}

TEST(StepSegmenterTest, RejectsBadOptions) {
  StepSegmenter::Options o;
  o.min_step_tokens = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(StepSegmenter::Create(o).status()));
  o = {};
  o.max_step_tokens = 3;  // < min 32
  EXPECT_TRUE(absl::IsInvalidArgument(StepSegmenter::Create(o).status()));
  o = {};
  o.delimiters = {"ok", ""};
  EXPECT_TRUE(absl::IsInvalidArgument(StepSegmenter::Create(o).status()));
  o.delimiters = {std::string(StepSegmenter::kMaxDelimiterBytes + 1, 'x')};
  EXPECT_TRUE(absl::IsInvalidArgument(StepSegmenter::Create(o).status()));
  o = {};
  EXPECT_TRUE(StepSegmenter::Create(o).ok());
}

}  // namespace
}  // namespace memshare::kvmanager
