#!/usr/bin/env python3
"""Greedy accuracy of the tiny reasoner on the held-out set, with transformers.

Loads the saved model directory (config.json, model.safetensors, tokenizer
files) the way any transformers user would, generates greedily with the full
KV cache (batched, left-padded), and reports accuracy (the "Final answer:"
line against the known answer), trace lengths, how often a trace corrects
itself, and how much of each trace nearly repeats what it wrote earlier
(datagen.block_repeat_stats: 16-token blocks, 4-token shingles).

Writes OUT/eval_<dtype>.jsonl (one line per problem: generated token ids,
text, parsed answer) and OUT/eval_summary.json; with --golden, also a file of
tokenizer test vectors (text -> ids from the `tokenizers` library).

  evaluate.py --model model_dir --heldout heldout.jsonl --out out_dir
"""

import argparse
import json
import os
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # pylint: disable=wrong-import-position

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def log(msg):
  print(msg, flush=True)


def mean(xs):
  xs = list(xs)
  return sum(xs) / len(xs) if xs else 0.0


def repeat_summary(stats):
  keys = ("mean_seen", "ge50", "ge80", "exact")
  total = sum(s["blocks"] for s in stats)
  # Share over all blocks of all traces (long traces weigh more) and the
  # mean of per-trace shares.
  out = {"blocks": total}
  for k in keys:
    out[k + "_all_blocks"] = (sum(s[k] * s["blocks"] for s in stats) /
                              max(1, total))
    out[k + "_per_trace"] = mean(s[k] for s in stats)
  return out


def generate(model, prompts, pad_id, eos_id, max_new, batch):
  """Greedy generation; returns a list of generated id lists (eos cut)."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  outs = [None] * len(prompts)
  for s in range(0, len(order), batch):
    rows = order[s:s + batch]
    width = max(len(prompts[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(rows):
      p = prompts[i]
      ids[j, width - len(p):] = torch.tensor(p)
      mask[j, width - len(p):] = 1
    with torch.no_grad():
      gen = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(),
                           max_new_tokens=max_new, do_sample=False,
                           eos_token_id=eos_id, pad_token_id=pad_id)
    for j, i in enumerate(rows):
      g = gen[j, width:].tolist()
      if eos_id in g:
        g = g[:g.index(eos_id) + 1]
      else:
        while g and g[-1] == pad_id:
          g.pop()
      outs[i] = g
  return outs


GOLDEN_EXTRA = [
    "Hello, world!",
    "  two leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nend",
    "naïve café — 東京 😀 Ünïcödé",
    "12345 + 678 = 13023, 3.14 × 2 ÷ 7",
    "I'm sure we'll see they've done it, don't you?",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "<think>\nok\n</think>\n\nFinal answer: 42<|im_end|>",
    "a<|im_end|>b<|endoftext|>c",
    "Wait, let me verify step 2.\n\nAlternatively, 7 × 8 = 56.",
    "",
]


def write_golden(tok, heldout, path):
  texts = [datagen.chat_prompt(r["problem"]) for r in heldout[:20]]
  texts += [r["completion"] + datagen.EOS for r in heldout[:10]]
  texts += GOLDEN_EXTRA
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      enc = tok.encode(t, add_special_tokens=False)
      f.write(json.dumps({"text": t, "ids": enc.ids,
                          "tokens": enc.tokens}, ensure_ascii=False) + "\n")
  log("golden tokenizer vectors: %d -> %s" % (len(texts), path))


def main(argv):
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", required=True)
  ap.add_argument("--heldout", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--dtypes", default="bf16,fp32")
  ap.add_argument("--limit", type=int, default=0)
  ap.add_argument("--batch", type=int, default=600)
  ap.add_argument("--max_new", type=int, default=1400)
  ap.add_argument("--golden", default="")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  # cuDNN's SDPA builds a plan for every new key length while decoding.
  torch.backends.cuda.enable_cudnn_sdp(False)

  with open(args.heldout, encoding="utf-8") as f:
    heldout = [json.loads(line) for line in f]
  if args.limit:
    heldout = heldout[:args.limit]
  tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
  pad_id = tok.token_to_id("<|endoftext|>")
  eos_id = tok.token_to_id("<|im_end|>")
  if args.golden:
    write_golden(tok, heldout, args.golden)

  prompts = [tok.encode(datagen.chat_prompt(r["problem"]),
                        add_special_tokens=False).ids for r in heldout]
  refs = [tok.encode(r["completion"] + datagen.EOS,
                     add_special_tokens=False).ids for r in heldout]
  summary = {
      "problems": len(heldout),
      "reference": {
          "mean_prompt_tokens": mean(len(p) for p in prompts),
          "mean_reply_tokens": mean(len(r) for r in refs),
          "repeats": repeat_summary([
              datagen.block_repeat_stats(p + r, len(p))
              for p, r in zip(prompts, refs)]),
      },
  }
  for name in args.dtypes.split(","):
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=DTYPES[name], attn_implementation="sdpa")
    model.cuda().eval()
    gens = generate(model, prompts, pad_id, eos_id, args.max_new, args.batch)
    gen_s = time.time() - t0
    rows = []
    for r, p, g in zip(heldout, prompts, gens):
      text = tok.decode(g, skip_special_tokens=False)
      pred = datagen.parse_answer(text)
      rows.append({"id": r["id"], "answer": r["answer"], "pred": pred,
                   "correct": pred == r["answer"], "prompt_tokens": len(p),
                   "reply_tokens": len(g), "finished": eos_id in g,
                   "self_corrected": "That is wrong!" in text,
                   "reply_ids": g, "reply": text})
    with open(os.path.join(args.out, "eval_%s.jsonl" % name), "w",
              encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    res = {
        "accuracy": mean(r["correct"] for r in rows),
        "correct": sum(r["correct"] for r in rows),
        "finished": sum(r["finished"] for r in rows),
        "self_corrected": sum(r["self_corrected"] for r in rows),
        "self_corrected_and_right": sum(r["self_corrected"] and r["correct"]
                                        for r in rows),
        "mean_reply_tokens": mean(r["reply_tokens"] for r in rows),
        "max_reply_tokens": max(r["reply_tokens"] for r in rows),
        "mean_total_tokens": mean(r["reply_tokens"] + r["prompt_tokens"]
                                  for r in rows),
        "seconds": round(gen_s, 1),
        "repeats": repeat_summary([
            datagen.block_repeat_stats(p + g, len(p))
            for p, g in zip(prompts, gens)]),
    }
    summary[name] = res
    log("%s: accuracy %.4f (%d/%d), finished %d, self-corrected %d (%d "
        "right), reply tokens mean %.1f max %d, %.1fs" % (
            name, res["accuracy"], res["correct"], len(rows),
            res["finished"], res["self_corrected"],
            res["self_corrected_and_right"], res["mean_reply_tokens"],
            res["max_reply_tokens"], gen_s))
    log("%s repeats: %s" % (name, json.dumps(res["repeats"])))
    wrong = [r for r in rows if not r["correct"]][:2]
    for r in wrong:
      log("--- wrong (id %d, answer %d, pred %s):\n%s" % (
          r["id"], r["answer"], r["pred"], r["reply"][-1500:]))
    del model
    torch.cuda.empty_cache()
    with open(os.path.join(args.out, "eval_summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  log("reference repeats: %s" % json.dumps(summary["reference"]))


if __name__ == "__main__":
  main(sys.argv[1:])
