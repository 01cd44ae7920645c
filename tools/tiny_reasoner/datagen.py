#!/usr/bin/env python3
"""Synthetic multi-step arithmetic word problems with reasoning-model traces.

Pure standard-library Python: it runs on the build machine, in the unit test
and on the GPU machine, and the same seed gives the same text everywhere
(random.Random with an integer seed is stable across CPython 3.x releases).

A problem tracks one quantity (Mia's apples) through 2 to 5 changes: add,
take away, add or take away groups (4 bags of 12), double or triple, split
into equal piles. The chain of thought is written the way R1-style models
write theirs, so that the KV cache of a trace holds many near repeats:

  1. solve the problem step by step, one paragraph per step;
  2. "Wait, let me verify ..." and re-state every step (or some) nearly
     verbatim, followed by an independent check (the inverse operation, or a
     different way to multiply);
  3. in some traces one step of the first pass carries a deliberate slip
     (an off-by-one or off-by-ten result, later steps computed consistently
     from the wrong value); its verification catches it, says so, and the
     trace redoes that step and every step after it;
  4. sometimes "Alternatively, ..." re-derives the chain of equations;
  5. "So the answer is ...", the end of the thinking, a short answer and a
     last line "Final answer: N".

Paragraphs are separated by blank lines. The assistant reply starts right
after the generation prompt "<|im_start|>assistant\\n<think>\\n".

Command line:
  datagen.py --split train --seed 1 --count 200000 --out train.jsonl
  datagen.py --split heldout --count 600 --out heldout.jsonl
Each line: {"id", "problem", "answer", "completion", "slip"}.
"""

import argparse
import hashlib
import json
import random
import re
import sys

# Seeds of the two splits; training data also skips every held-out problem.
HELDOUT_SEED = 20261127
TRAIN_SEED = 1

NAMES = [
    "Mia", "Liam", "Emma", "Noah", "Olivia", "Ava", "Lucas", "Sofia", "Ethan",
    "Amir", "Priya", "Chen", "Yuki", "Omar", "Lena", "Mateo", "Zara", "Ivan",
    "Nora", "Leo", "Aisha", "Kenji", "Hana", "Diego", "Grace", "Samuel",
    "Fatima", "Jonas", "Elif", "Ravi", "Maya", "Oscar", "Ines", "Tariq",
    "Chloe", "Felix", "Lucia", "Arjun", "Nina", "Hugo", "Sara", "Kofi",
    "Anya", "Pablo", "Mei", "Theo", "Leila", "Marco", "Julia", "Daniel",
    "Rosa", "Viktor", "Amara", "Finn", "Isla", "Tomas", "Wei", "Alba",
    "Kai", "Eva",
]

# Plural nouns only: every quantity in a problem stays >= 2.
ITEMS = [
    "apples", "marbles", "stickers", "coins", "books", "pencils", "cookies",
    "stamps", "shells", "cards", "beads", "flowers", "eggs", "toy cars",
    "candies", "balloons", "crayons", "ribbons", "buttons", "rocks", "leaves",
    "oranges", "muffins", "cupcakes", "peaches", "lemons", "plums", "nuts",
    "seeds", "feathers", "pebbles", "postcards", "comics", "puzzles", "dice",
    "blocks", "bottles", "cups", "plates", "socks", "hats", "keys",
    "magnets", "badges", "tickets", "candles", "paper cranes", "toy robots",
    "bananas", "carrots", "potatoes", "tomatoes", "pears", "cherries",
    "strawberries", "bread rolls", "jars of jam", "chess pieces", "dominoes",
    "kites",
]

CONTAINERS = ["bags", "boxes", "jars", "packs", "baskets", "crates", "trays",
              "bundles", "buckets", "bowls"]

ADD_VERBS = ["gets {k} more {items}", "finds {k} more {items}",
             "buys {k} more {items}", "receives {k} more {items}",
             "collects {k} more {items}", "wins {k} more {items}"]
SUB_VERBS = ["gives away {k} {items}", "loses {k} {items}",
             "sells {k} {items}", "gives {k} {items} to a friend",
             "uses {k} {items}", "donates {k} {items}"]
GADD_VERBS = ["buys {g} {cont} with {e} {items} in each",
              "gets {g} {cont} of {e} {items} each",
              "receives {g} {cont} that hold {e} {items} each"]
GSUB_VERBS = ["gives {g} friends {e} {items} each",
              "packs {g} {cont} with {e} {items} each and gives them away",
              "sells {g} {cont} of {e} {items} each"]
DIV_VERBS = ["splits the {items} into {d} equal piles and keeps one pile",
             "shares the {items} equally among {d} people and keeps one share",
             "divides the {items} into {d} equal groups and keeps one group"]

CONNECTIVES = ["", "Then ", "After that, ", "Next, ", "Later, "]
QUESTIONS = ["How many {items} does {name} have now?",
             "How many {items} does {name} have at the end?",
             "How many {items} does {name} end up with?",
             "What is the number of {items} {name} has in the end?"]

INTROS = ["Let me work through this step by step.",
          "Okay, let me figure this out one step at a time.",
          "I need to track how many {items} {name} has after each change.",
          "Let me solve this carefully, one change at a time."]
SUMMARIES = ["So far I get {v} {items}.",
             "So {name} ends up with {v} {items}.",
             "That gives {v} {items} at the end."]
WAITS = ["Wait, let me verify each step before I answer.",
         "Wait, I should double-check my work.",
         "Hmm, let me verify this by going over every step again.",
         "Let me verify each step to be sure."]
WAITS_PARTIAL = ["Wait, let me verify some of the steps before I answer.",
                 "Hmm, let me double-check a few of the steps."]
OKS = ["Correct.", "That matches.", "Good, that is right.",
       "This checks out."]
ALL_OK = ["All the steps check out.", "Every step is correct.",
          "Everything I checked is right."]
FINALS = ["So the answer is {v} {items}.",
          "So the answer: {name} has {v} {items} in the end."]

# Label styles: (step, verification, redo).
LABELS = [("Step {i}:", "Checking step {i}:", "Step {i} (redo):"),
          ("Step {i}.", "Let me check step {i}.", "Redo step {i}."),
          ("({i})", "Verify ({i}):", "Redo ({i}):")]

MAX_VALUE = 500


class Op:
  """One change of the quantity: its clause and the equations of its step.

  eqs: list of (a, sym, b, result) as written in the step. For group ops the
  first equation is the group size (g x e) and the second the running value.
  kind: add, sub, gadd, gsub, mul, div.
  """

  def __init__(self, kind, clause, params):
    self.kind = kind
    self.clause = clause
    self.params = params

  def apply(self, v):
    """Returns the new value, or None if the op is invalid for v."""
    p = self.params
    if self.kind == "add":
      r = v + p["k"]
    elif self.kind == "sub":
      r = v - p["k"]
    elif self.kind == "gadd":
      r = v + p["g"] * p["e"]
    elif self.kind == "gsub":
      r = v - p["g"] * p["e"]
    elif self.kind == "mul":
      r = v * p["f"]
    elif self.kind == "div":
      if v % p["d"]:
        return None
      r = v // p["d"]
    else:
      raise ValueError(self.kind)
    if r < 2 or r > MAX_VALUE:
      return None
    return r


def _fill(template, **kw):
  return template.format(**kw)


def _cap(s):
  return s[0].upper() + s[1:]


def _make_op(rng, v, name, items):
  """Draws one op valid for the current value v, or None."""
  kinds = ["add", "sub", "gadd", "gsub", "mul", "div"]
  weights = [3, 3, 2, 2, 1, 1]
  for _ in range(20):
    kind = rng.choices(kinds, weights)[0]
    if kind == "add":
      k = rng.randint(2, 60)
      op = Op(kind, _fill(rng.choice(ADD_VERBS), k=k, items=items), {"k": k})
    elif kind == "sub":
      if v < 4:
        continue
      k = rng.randint(2, min(60, v - 2))
      op = Op(kind, _fill(rng.choice(SUB_VERBS), k=k, items=items), {"k": k})
    elif kind in ("gadd", "gsub"):
      g = rng.randint(2, 9)
      e = rng.randint(2, 15)
      verbs = GADD_VERBS if kind == "gadd" else GSUB_VERBS
      clause = _fill(rng.choice(verbs), g=g, e=e, items=items,
                     cont=rng.choice(CONTAINERS))
      op = Op(kind, clause, {"g": g, "e": e})
    elif kind == "mul":
      f = rng.choice([2, 2, 3])
      word = "doubles" if f == 2 else "triples"
      clause = "the number of %s that %s has %s" % (items, name, word)
      op = Op(kind, clause, {"f": f})
    else:
      ds = [d for d in (2, 3, 4, 5) if v % d == 0 and v // d >= 2]
      if not ds:
        continue
      d = rng.choice(ds)
      op = Op(kind, _fill(rng.choice(DIV_VERBS), d=d, items=items), {"d": d})
    if op.apply(v) is not None:
      return op
  return None


class Problem:
  """A word problem: start value, ops, and the value after each op."""

  def __init__(self, name, items, start, ops, text):
    self.name = name
    self.items = items
    self.start = start
    self.ops = ops
    self.text = text
    self.values = [start]
    for op in ops:
      self.values.append(op.apply(self.values[-1]))
    self.answer = self.values[-1]


def make_problem(rng):
  """Draws a problem with 2 to 5 ops whose every value stays in [2, 500]."""
  while True:
    name = rng.choice(NAMES)
    items = rng.choice(ITEMS)
    start = rng.randint(5, 60)
    n_ops = rng.choices([2, 3, 4, 5], [3, 5, 4, 1])[0]
    ops = []
    v = start
    for _ in range(n_ops):
      op = _make_op(rng, v, name, items)
      if op is None:
        break
      ops.append(op)
      v = op.apply(v)
    if len(ops) != n_ops:
      continue
    opening = rng.choice(["{name} has {n} {items}.",
                          "{name} starts with {n} {items}.",
                          "{name} owns {n} {items}."])
    sents = [_fill(opening, name=name, n=start, items=items)]
    for i, op in enumerate(ops):
      conn = rng.choice(CONNECTIVES) if i else rng.choice(["", "First, "])
      subject = "" if op.kind == "mul" else name + " "
      sents.append(_cap(conn + subject + op.clause) + ".")
    sents.append(_fill(rng.choice(QUESTIONS), items=items, name=name))
    return Problem(name, items, start, ops, " ".join(sents))


def _step_body(prob, op, v_in, v_out, group=None):
  """The sentence(s) of one step, computed from v_in; v_out is what the
  trace writes as the result (wrong when this step carries a slip), group
  likewise the written g x e product."""
  name, items = prob.name, prob.items
  subject = "" if op.kind == "mul" else name + " "
  head = _cap(subject + op.clause) + "."
  p = op.params
  if op.kind in ("add", "sub"):
    sym = "+" if op.kind == "add" else "-"
    return "%s So %s has %d %s %d = %d %s." % (head, name, v_in, sym, p["k"],
                                               v_out, items)
  if op.kind in ("gadd", "gsub"):
    sym = "+" if op.kind == "gadd" else "-"
    return "%s That is %d × %d = %d %s. So %s has %d %s %d = %d %s." % (
        head, p["g"], p["e"], group, items, name, v_in, sym, group, v_out,
        items)
  if op.kind == "mul":
    return "%s So %s has %d × %d = %d %s." % (head, name, v_in, p["f"], v_out,
                                              items)
  return "%s So %s has %d ÷ %d = %d %s." % (head, name, v_in, p["d"], v_out,
                                            items)


def _outer_eq(op, v_in, v_out, group=None):
  """The running-value equation of a step, as written."""
  p = op.params
  if op.kind == "add":
    return "%d + %d = %d" % (v_in, p["k"], v_out)
  if op.kind == "sub":
    return "%d - %d = %d" % (v_in, p["k"], v_out)
  if op.kind == "gadd":
    return "%d + %d = %d" % (v_in, group, v_out)
  if op.kind == "gsub":
    return "%d - %d = %d" % (v_in, group, v_out)
  if op.kind == "mul":
    return "%d × %d = %d" % (v_in, p["f"], v_out)
  return "%d ÷ %d = %d" % (v_in, p["d"], v_out)


def _product_check(g, e):
  """An independent way to get g x e: split e into tens and ones, or swap."""
  if e > 10:
    return "%d × %d = %d × 10 + %d × %d = %d + %d = %d" % (
        g, e, g, g, e - 10, 10 * g, g * (e - 10), g * e)
  return "%d × %d = %d" % (e, g, g * e)


def _outer_check(op, v_in, written, group):
  """Check of the running-value equation v_in (op) x = written.

  Returns (text, ok). The check recomputes the input from the written
  result (inverse op); doubling and tripling re-add the value instead.
  """
  p = op.params
  if op.kind in ("add", "gadd"):
    x = p["k"] if op.kind == "add" else group
    back = written - x
    return "%d - %d = %d" % (written, x, back), back == v_in
  if op.kind in ("sub", "gsub"):
    x = p["k"] if op.kind == "sub" else group
    back = written + x
    return "%d + %d = %d" % (written, x, back), back == v_in
  if op.kind == "mul":
    terms = " + ".join([str(v_in)] * p["f"])
    return "%s = %d" % (terms, v_in * p["f"]), v_in * p["f"] == written
  back = written * p["d"]
  return "%d × %d = %d" % (written, p["d"], back), back == v_in


def _slip_value(rng, correct):
  """A plausible wrong result: off by 1, 2 or 10 (never below 2)."""
  for _ in range(10):
    w = correct + rng.choice([-10, -2, -1, 1, 2, 10])
    if 2 <= w <= MAX_VALUE and w != correct:
      return w
  return None


def _first_pass(prob, slip):
  """Values as the first pass writes them.

  slip: None, or (step index, "group" | "outer", wrong value). Returns
  (values, groups) or None when a later op is invalid on the wrong value.
  """
  values = [prob.start]
  groups = []
  for i, op in enumerate(prob.ops):
    v = values[-1]
    p = op.params
    group = p["g"] * p["e"] if op.kind in ("gadd", "gsub") else None
    if slip and slip[0] == i and slip[1] == "group":
      group = slip[2]
    if group is not None:
      out = v + group if op.kind == "gadd" else v - group
      if not 2 <= out <= MAX_VALUE:
        return None
    else:
      out = op.apply(v)
      if out is None:
        return None
    if slip and slip[0] == i and slip[1] == "outer":
      out = slip[2]
    values.append(out)
    groups.append(group)
  return values, groups


def render_completion(prob, rng, slip_rate=0.25):
  """Writes the assistant reply (thinking + answer). Returns (text, slipped).

  The text starts after "<think>\\n" and ends with "Final answer: N"; the
  chat template adds the end-of-turn token.
  """
  name, items = prob.name, prob.items
  n = len(prob.ops)
  step_l, check_l, redo_l = rng.choice(LABELS)
  truth_groups = [op.params["g"] * op.params["e"]
                  if op.kind in ("gadd", "gsub") else None for op in prob.ops]

  slip = None
  if rng.random() < slip_rate:
    s = rng.randrange(n)
    where = "group" if truth_groups[s] and rng.random() < 0.4 else "outer"
    correct = truth_groups[s] if where == "group" else prob.values[s + 1]
    w = _slip_value(rng, correct)
    if w is not None:
      slip = (s, where, w)
      if _first_pass(prob, slip) is None:
        slip = None
  values, groups = _first_pass(prob, slip)

  paras = [_fill(rng.choice(INTROS), items=items, name=name),
           "%s starts with %d %s." % (name, prob.start, items)]
  for i, op in enumerate(prob.ops):
    body = _step_body(prob, op, values[i], values[i + 1], groups[i])
    paras.append(step_l.format(i=i + 1) + " " + body)
  paras.append(_fill(rng.choice(SUMMARIES), v=values[-1], items=items,
                     name=name))

  # Which steps to verify: all, or a non-empty subset that holds the slip.
  if rng.random() < 0.75:
    checked = list(range(n))
    paras.append(rng.choice(WAITS))
  else:
    k = rng.randint(1, max(1, n - 1))
    checked = sorted(rng.sample(range(n), k))
    if slip and slip[0] not in checked:
      checked = sorted(checked + [slip[0]])
    paras.append(rng.choice(WAITS_PARTIAL))

  for i in checked:
    op = prob.ops[i]
    body = _step_body(prob, op, values[i], values[i + 1], groups[i])
    label = check_l.format(i=i + 1)
    parts = []
    group_ok = True
    if groups[i] is not None:
      g, e = op.params["g"], op.params["e"]
      parts.append(_product_check(g, e))
      group_ok = g * e == groups[i]
    outer_text, outer_ok = _outer_check(op, values[i], values[i + 1],
                                        groups[i])
    if group_ok:
      parts.append(outer_text)
    if group_ok and outer_ok:
      paras.append("%s %s Check: %s. %s" % (label, body, ", and ".join(parts),
                                            rng.choice(OKS)))
      continue
    # The slip: say what is wrong and what the right value is.
    if not group_ok:
      wrong, right = groups[i], g * e
      what = "the product %d × %d is %d, not %d" % (g, e, right, wrong)
    else:
      right_out = (values[i] + truth_groups[i] if op.kind == "gadd" else
                   values[i] - truth_groups[i] if op.kind == "gsub" else
                   op.apply(values[i]))
      what = "the correct value is %s, not %d" % (
          _outer_eq(op, values[i], right_out, truth_groups[i]),
          values[i + 1])
    if op.kind == "mul" or not group_ok:
      check = "Check: %s, not %d." % (parts[-1], groups[i] if not group_ok
                                      else values[i + 1])
    else:
      check = "Check: %s, not %d." % (", and ".join(parts), values[i])
    paras.append("%s %s %s That is wrong! So %s." % (label, body, check, what))
    paras.append("Wait, I made a mistake in step %d. Let me redo step %d and "
                 "every step after it." % (i + 1, i + 1))
    for j in range(i, n):
      body = _step_body(prob, prob.ops[j], prob.values[j], prob.values[j + 1],
                        truth_groups[j])
      paras.append(redo_l.format(i=j + 1) + " " + body)
    paras.append("Now I get %d %s instead of %d %s." % (
        prob.answer, items, values[-1], items))
    break
  else:
    paras.append(rng.choice(ALL_OK))

  if rng.random() < 0.3:
    eqs = ", ".join(_outer_eq(op, prob.values[i], prob.values[i + 1],
                              truth_groups[i])
                    for i, op in enumerate(prob.ops))
    paras.append("Alternatively, let me follow the numbers in one line: "
                 "%d to start, then %s. Again I get %d." % (prob.start, eqs,
                                                            prob.answer))
  if rng.random() < 0.85:
    bodies = " ".join(_step_body(prob, op, prob.values[i], prob.values[i + 1],
                                 truth_groups[i])
                      for i, op in enumerate(prob.ops))
    paras.append("To sum up: %s starts with %d %s. %s" % (
        name, prob.start, items, bodies))
  paras.append(_fill(rng.choice(FINALS), v=prob.answer, items=items,
                     name=name))

  chain = ", then ".join(str(v) for v in prob.values[:-1])
  answer = ("%s has %s, and finally %d %s.\n\nFinal answer: %d" % (
      name, chain, prob.answer, items, prob.answer))
  text = "\n\n".join(paras) + "\n</think>\n\n" + answer
  return text, slip is not None


# Chat format (ChatML, as Qwen writes it). The generation prompt opens the
# thinking block, as DeepSeek-R1 and Qwen3 thinking templates do.
def chat_prompt(problem_text):
  return ("<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n"
          % problem_text)


EOS = "<|im_end|>"

_FINAL_RE = re.compile(r"Final answer:\s*(-?\d+)")


def parse_answer(text):
  """The integer on the last "Final answer:" line of text, or None."""
  found = _FINAL_RE.findall(text)
  return int(found[-1]) if found else None


def generate(seed, count, skip=frozenset(), slip_rate=0.25):
  """Yields count records {"id", "problem", "answer", "completion", "slip"}
  drawn from random.Random(seed), skipping problems whose text is in skip
  and repeats within the split."""
  rng = random.Random(seed)
  seen = set()
  made = 0
  while made < count:
    prob = make_problem(rng)
    completion, slipped = render_completion(prob, rng, slip_rate)
    if prob.text in skip or prob.text in seen:
      continue
    seen.add(prob.text)
    yield {"id": made, "problem": prob.text, "answer": prob.answer,
           "completion": completion, "slip": slipped}
    made += 1


def heldout(count=600):
  """The held-out split (no deliberate slips in its reference traces)."""
  return list(generate(HELDOUT_SEED, count, slip_rate=0.0))


def block_repeat_stats(ids, start, block=16, shingle=4):
  """How much of a generated sequence nearly repeats what it wrote before.

  ids: every token of the sequence (prompt first); start: index of the first
  generated token. KV blocks are aligned at multiples of `block` from the
  start of the sequence, as the paged cache lays them out; only full blocks
  that lie entirely in the generated part are counted. A block's shingles
  are its `shingle`-token windows; a shingle is "seen" when the same window
  occurs earlier in the generated part (ending before the block starts).

  Returns {"blocks", "mean_seen", "ge50", "ge80", "exact"}: the number of
  blocks, the mean share of seen shingles per block, and the shares of
  blocks with >= 50%, >= 80% and 100% of their shingles seen.
  """
  first = -(-start // block) * block
  seen = set()
  added_upto = start  # windows starting before this index are in `seen`
  counts = {"blocks": 0, "sum": 0.0, "ge50": 0, "ge80": 0, "exact": 0}
  b = first
  while b + block <= len(ids):
    # Add windows that end at or before b.
    while added_upto + shingle <= b:
      seen.add(tuple(ids[added_upto:added_upto + shingle]))
      added_upto += 1
    wins = [tuple(ids[i:i + shingle]) for i in range(b, b + block - shingle + 1)]
    share = sum(w in seen for w in wins) / len(wins)
    counts["blocks"] += 1
    counts["sum"] += share
    counts["ge50"] += share >= 0.5
    counts["ge80"] += share >= 0.8
    counts["exact"] += share == 1.0
    b += block
  nb = counts["blocks"]
  if nb == 0:
    return {"blocks": 0, "mean_seen": 0.0, "ge50": 0.0, "ge80": 0.0,
            "exact": 0.0}
  return {"blocks": nb, "mean_seen": counts["sum"] / nb,
          "ge50": counts["ge50"] / nb, "ge80": counts["ge80"] / nb,
          "exact": counts["exact"] / nb}


# A rough stand-in for the byte-level pre-tokenizer (Qwen2's split: letters
# with one leading non-letter, single digits, punctuation runs, newlines,
# spaces). With a vocabulary trained on this data nearly every pre-token is
# one BPE token, so this estimates token counts without `tokenizers`.
_PRETOK_RE = re.compile(
    r"[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def rough_tokens(text):
  return _PRETOK_RE.findall(text)


def main(argv):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--split", choices=["train", "heldout"], required=True)
  ap.add_argument("--count", type=int, required=True)
  ap.add_argument("--seed", type=int, default=None,
                  help="train only; default %d" % TRAIN_SEED)
  ap.add_argument("--heldout_count", type=int, default=600,
                  help="train only: held-out problems to exclude")
  ap.add_argument("--out", required=True)
  args = ap.parse_args(argv)
  if args.split == "heldout":
    records = heldout(args.count)
  else:
    skip = frozenset(r["problem"] for r in heldout(args.heldout_count))
    seed = TRAIN_SEED if args.seed is None else args.seed
    records = generate(seed, args.count, skip=skip)
  digest = hashlib.sha256()
  with open(args.out, "w", encoding="utf-8") as f:
    for r in records:
      line = json.dumps(r, ensure_ascii=False) + "\n"
      digest.update(line.encode("utf-8"))
      f.write(line)
  print("wrote %s: %d records, sha256 %s" % (args.out, args.count,
                                              digest.hexdigest()[:16]))


if __name__ == "__main__":
  main(sys.argv[1:])
