"""Unit tests of the tiny-reasoner data generator (standard library only)."""

import json
import os
import random
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # pylint: disable=wrong-import-position

_HELDOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "..", "tests", "data", "tiny_reasoner",
                        "heldout.jsonl")

# An equality chain such as "2 × 15 = 2 × 10 + 2 × 5 = 20 + 10 = 30".
_EXPR = r"\d+(?: [-+×÷] \d+)*"
_CHAIN_RE = re.compile(r"%s(?: = %s)+" % (_EXPR, _EXPR))


def _eval(expr):
  """Evaluates + - × ÷ with the usual precedence (integers, exact ÷)."""
  tokens = expr.split(" ")
  # First pass: × and ÷.
  terms = [int(tokens[0])]
  ops = []
  for op, num in zip(tokens[1::2], tokens[2::2]):
    n = int(num)
    if op == "×":
      terms[-1] *= n
    elif op == "÷":
      if terms[-1] % n:
        return None
      terms[-1] //= n
    else:
      ops.append(op)
      terms.append(n)
  total = terms[0]
  for op, n in zip(ops, terms[1:]):
    total = total + n if op == "+" else total - n
  return total


def _false_equations(text):
  """Every equality chain in text whose sides are not all equal."""
  bad = []
  for m in _CHAIN_RE.finditer(text):
    sides = [_eval(s) for s in m.group(0).split(" = ")]
    if None in sides or len(set(sides)) != 1:
      bad.append(m.group(0))
  return bad


class EvalHelperTest(unittest.TestCase):

  def test_eval_and_false_equations(self):
    self.assertEqual(_eval("2 × 10 + 2 × 5"), 30)
    self.assertEqual(_eval("71 - 17"), 54)
    self.assertIsNone(_eval("7 ÷ 2"))
    self.assertEqual(_false_equations("a 3 + 4 = 7, b 4 × 3 = 13."),
                     ["4 × 3 = 13"])


class GeneratorTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.records = list(datagen.generate(123, 3000))

  def test_same_seed_same_records(self):
    again = list(datagen.generate(123, 50))
    self.assertEqual(again, self.records[:50])
    other = list(datagen.generate(124, 50))
    self.assertNotEqual(other, self.records[:50])

  def test_final_answer_line_matches_answer(self):
    for r in self.records:
      self.assertTrue(r["completion"].endswith(
          "Final answer: %d" % r["answer"]), r["completion"][-80:])
      self.assertEqual(datagen.parse_answer(r["completion"]), r["answer"])

  def test_answer_is_the_value_of_the_problem(self):
    # Re-derive every answer from the problem text alone.
    for r in self.records[:500]:
      text = r["problem"]
      v = int(re.search(r"(?:has|with|owns) (\d+) ", text).group(1))
      for sent in re.split(r"(?<=\.) ", text)[1:-1]:
        nums = [int(x) for x in re.findall(r"\d+", sent)]
        if "doubles" in sent:
          v *= 2
        elif "triples" in sent:
          v *= 3
        elif re.search(r"splits|shares|divides", sent):
          self.assertEqual(v % nums[0], 0)
          v //= nums[0]
        elif len(nums) == 2:
          grow = re.search(r"buys|gets|receives", sent) and "gives" not in sent
          v += nums[0] * nums[1] if grow else -nums[0] * nums[1]
        else:
          grow = re.search(r"gets|finds|buys|receives|collects|wins", sent)
          v += nums[0] if grow else -nums[0]
        self.assertGreaterEqual(v, 2, text)
        self.assertLessEqual(v, datagen.MAX_VALUE, text)
      self.assertEqual(v, r["answer"], text)

  def test_arithmetic_is_true_except_the_planted_slip(self):
    slips = 0
    for r in self.records:
      bad = _false_equations(r["completion"])
      if not r["slip"]:
        self.assertEqual(bad, [], r["completion"])
        self.assertNotIn("That is wrong", r["completion"])
        continue
      slips += 1
      # The slip is written once in the first pass and once more when the
      # verification restates that step; both are the same equation.
      self.assertEqual(len(bad), 2, r["completion"])
      self.assertEqual(bad[0], bad[1])
      self.assertIn("That is wrong!", r["completion"])
      self.assertIn("Wait, I made a mistake in step", r["completion"])
      # The corrected value is what the trace answers.
      self.assertIn("Now I get %d " % r["answer"], r["completion"])
    self.assertGreater(slips / len(self.records), 0.15)
    self.assertLess(slips / len(self.records), 0.30)

  def test_trace_shape(self):
    for r in self.records:
      c = r["completion"]
      self.assertEqual(c.count("</think>"), 1)
      thinking, answer = c.split("\n</think>\n\n")
      self.assertNotIn("<think>", c)
      self.assertIn("Final answer:", answer)
      paras = thinking.split("\n\n")
      self.assertGreaterEqual(len(paras), 6)
      self.assertTrue(all(p and "\n" not in p for p in paras), thinking)
      self.assertTrue(any(p.startswith(("Wait", "Hmm", "Let me verify"))
                          for p in paras), thinking)

  def test_verification_restates_steps_verbatim(self):
    restated = 0
    for r in self.records[:300]:
      paras = r["completion"].split("\n</think>")[0].split("\n\n")
      steps = [p for p in paras if re.match(r"(Step \d+[:.]|\(\d+\)) ", p)]
      for p in steps:
        body = p.split(" ", 2)[2] if p.startswith("Step") else p.split(" ", 1)[1]
        if r["completion"].count(body) >= 2:
          restated += 1
    # Most steps are re-stated word for word by a verification, a redo or
    # the recap (not all: partial verification without a recap, and the
    # steps after a slip, which are redone with other numbers).
    self.assertGreater(restated, 0.8 * sum(
        len(re.findall(r"\n\n(?:Step \d+[:.]|\(\d+\)) ", r["completion"]))
        for r in self.records[:300]))

  def test_lengths_in_range(self):
    lens = [len(datagen.rough_tokens(datagen.chat_prompt(r["problem"]) +
                                     r["completion"]))
            for r in self.records]
    mean = sum(lens) / len(lens)
    self.assertGreater(mean, 350)
    self.assertLess(mean, 700)
    self.assertLess(max(lens), 1600)

  def test_skip_excludes_problems(self):
    first = [r["problem"] for r in self.records[:10]]
    kept = list(datagen.generate(123, 20, skip=frozenset(first)))
    self.assertFalse(set(first) & {r["problem"] for r in kept})
    self.assertEqual(len({r["problem"] for r in self.records}),
                     len(self.records))

  def test_slip_rate_zero_has_no_slips(self):
    recs = list(datagen.generate(5, 300, slip_rate=0.0))
    self.assertFalse(any(r["slip"] for r in recs))
    self.assertFalse(any(_false_equations(r["completion"]) for r in recs))


class ChatAndParseTest(unittest.TestCase):

  def test_chat_prompt(self):
    self.assertEqual(
        datagen.chat_prompt("Q?"),
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n<think>\n")

  def test_parse_answer_takes_last(self):
    self.assertEqual(datagen.parse_answer("Final answer: 3\nFinal answer: 41"),
                     41)
    self.assertEqual(datagen.parse_answer("Final answer:  -7"), -7)
    self.assertIsNone(datagen.parse_answer("no answer here"))


class BlockRepeatStatsTest(unittest.TestCase):

  def test_exact_repeat_of_a_block(self):
    ids = list(range(16)) + list(range(16))
    s = datagen.block_repeat_stats(ids, start=0)
    self.assertEqual(s["blocks"], 2)
    self.assertEqual(s["exact"], 0.5)
    self.assertEqual(s["ge80"], 0.5)
    self.assertAlmostEqual(s["mean_seen"], 0.5)

  def test_no_repeat(self):
    s = datagen.block_repeat_stats(list(range(64)), start=0)
    self.assertEqual((s["blocks"], s["mean_seen"], s["exact"]), (4, 0.0, 0.0))

  def test_prompt_and_partial_blocks_are_not_counted(self):
    # Prompt of 5 tokens: generated tokens from 5; the first full block in
    # the generated part starts at 16. The prompt's tokens never count as
    # "seen", the tail block of 8 tokens is not counted.
    prompt = [100, 101, 102, 103, 104]
    gen = list(range(11)) + list(range(16)) + list(range(8))
    s = datagen.block_repeat_stats(prompt + gen, start=5)
    self.assertEqual(s["blocks"], 1)
    # Block [16, 32) holds gen[11:27] = 0..15; of its 13 windows those
    # that start at 0..7 lie within 0..10, written before the block.
    self.assertAlmostEqual(s["mean_seen"], 8 / 13)
    self.assertEqual(s["ge50"], 1.0)
    self.assertEqual(s["ge80"], 0.0)

  def test_shifted_repeat_is_found(self):
    rng = random.Random(0)
    text = [rng.randrange(1000) for _ in range(40)]
    ids = text + [9999] * 3 + text  # the repeat starts off the block grid
    s = datagen.block_repeat_stats(ids, start=0)
    self.assertEqual(s["blocks"], 5)
    self.assertGreaterEqual(s["exact"], 0.2)  # block [48, 64) is inside it


class HeldoutFileTest(unittest.TestCase):

  def test_committed_heldout_matches_generator(self):
    with open(_HELDOUT, encoding="utf-8") as f:
      committed = [json.loads(line) for line in f]
    self.assertGreaterEqual(len(committed), 500)
    self.assertEqual(committed, datagen.heldout(len(committed)))
    train = {r["problem"] for r in datagen.generate(
        datagen.TRAIN_SEED, 2000,
        skip=frozenset(r["problem"] for r in committed))}
    self.assertFalse(train & {r["problem"] for r in committed})


if __name__ == "__main__":
  unittest.main()
