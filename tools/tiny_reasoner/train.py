#!/usr/bin/env python3
"""Trains the tiny reasoner (Qwen3ForCausalLM, ~7M parameters) on the GPU.

Needs torch, transformers (5.x) and tokenizers; run it after
train_tokenizer.py has written OUT/tokenizer.json. Training data come from
datagen.generate(TRAIN_SEED, --records) in memory, minus the held-out
problems. Loss is taken on the assistant reply only (thinking, answer and the
closing <|im_end|>), not on the prompt.

Seeded: the data, their order and the initial weights follow --seed (GPU
kernels may still add run-to-run noise of floating-point rounding).
Prints the loss curve (mean over every --log_every steps) and writes it to
OUT/../train_loss.tsv; saves the model in bfloat16 with save_pretrained.

  train.py --out model_dir --records 240000 --steps 3600
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (AutoTokenizer, GenerationConfig, Qwen3Config,
                          Qwen3ForCausalLM)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # pylint: disable=wrong-import-position


def log(msg):
  print(msg, flush=True)


def encode(tok, records, max_len, chunk=20000):
  """Tokenizes prompt and reply separately (as inference sees them).

  Returns (flat token array, offsets, prompt lengths); sequences longer than
  max_len are dropped.
  """
  enc = getattr(tok, "encode_batch_fast", tok.encode_batch)
  seqs, plens = [], []
  dropped = 0
  for s in range(0, len(records), chunk):
    part = records[s:s + chunk]
    prompts = enc([datagen.chat_prompt(r["problem"]) for r in part],
                  add_special_tokens=False)
    replies = enc([r["completion"] + datagen.EOS for r in part],
                  add_special_tokens=False)
    for p, c in zip(prompts, replies):
      if len(p.ids) + len(c.ids) > max_len:
        dropped += 1
        continue
      seqs.append(np.asarray(p.ids + c.ids, dtype=np.int32))
      plens.append(len(p.ids))
  lengths = np.array([len(x) for x in seqs], dtype=np.int64)
  offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  return np.concatenate(seqs), offsets, np.array(plens), dropped


def make_batches(lengths, batch_size, rng):
  """One epoch of batches: shuffled, length-bucketed in windows of 64
  batches so that padding stays small."""
  idx = rng.permutation(len(lengths))
  window = batch_size * 64
  out = []
  for s in range(0, len(idx), window):
    w = idx[s:s + window]
    w = w[np.argsort(lengths[w], kind="stable")]
    for b in range(0, len(w) - batch_size + 1, batch_size):
      out.append(w[b:b + batch_size])
  order = rng.permutation(len(out))
  return [out[i] for i in order]


def collate(flat, offsets, plens, rows, pad_id, multiple=16):
  lens = offsets[rows + 1] - offsets[rows]
  width = int(-(-lens.max() // multiple) * multiple)
  x = np.full((len(rows), width), pad_id, dtype=np.int64)
  y = np.full((len(rows), width), -100, dtype=np.int64)
  for i, r in enumerate(rows):
    seq = flat[offsets[r]:offsets[r + 1]]
    x[i, :len(seq)] = seq
    y[i, plens[r]:len(seq)] = seq[plens[r]:]
  return torch.from_numpy(x), torch.from_numpy(y), int((y != -100).sum())


def lr_at(step, total, peak, warmup, floor):
  if step < warmup:
    return peak * (step + 1) / warmup
  t = (step - warmup) / max(1, total - warmup)
  return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def check_tokenizer_class(out_dir, tok):
  """Makes sure transformers' AutoTokenizer reproduces tokenizer.json.

  tokenizer_config.json names Qwen2Tokenizer (as Qwen checkpoints do); if
  that class encodes differently here, fall back to the generic
  PreTrainedTokenizerFast, which runs tokenizer.json as written.
  """
  samples = [datagen.chat_prompt(r["problem"]) + r["completion"] + datagen.EOS
             for r in datagen.generate(7, 20)]
  samples += ["Hello, world!  It's 3.14 o'clock\n\n\tnaïve café 東京 😀",
              "<think>\nok\n</think>\n\nFinal answer: 12"]
  path = os.path.join(out_dir, "tokenizer_config.json")
  for cls in ("Qwen2Tokenizer", "PreTrainedTokenizerFast"):
    with open(path) as f:
      cfg = json.load(f)
    cfg["tokenizer_class"] = cls
    with open(path, "w") as f:
      json.dump(cfg, f, indent=2)
      f.write("\n")
    try:
      hf = AutoTokenizer.from_pretrained(out_dir)
      same = all(hf(s, add_special_tokens=False)["input_ids"] ==
                 tok.encode(s, add_special_tokens=False).ids for s in samples)
      p = "Mia has 3 apples. How many?"
      templ = hf.apply_chat_template([{"role": "user", "content": p}],
                                     add_generation_prompt=True,
                                     tokenize=False)
      same = same and templ == datagen.chat_prompt(p)
      log("tokenizer_class %s: %s (%s)" % (cls, "matches" if same else
                                            "DIFFERS", type(hf).__name__))
    except Exception as e:  # pylint: disable=broad-except
      log("tokenizer_class %s: failed to load: %r" % (cls, e))
      same = False
    if same:
      return cls
  raise SystemExit("no tokenizer class reproduces tokenizer.json")


def main(argv):
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True, help="model directory")
  ap.add_argument("--records", type=int, default=240000)
  ap.add_argument("--steps", type=int, default=3600)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--lr", type=float, default=2e-3)
  ap.add_argument("--warmup", type=int, default=100)
  ap.add_argument("--min_lr_ratio", type=float, default=0.05)
  ap.add_argument("--weight_decay", type=float, default=0.1)
  ap.add_argument("--max_len", type=int, default=1536)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--log_every", type=int, default=50)
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--layers", type=int, default=8)
  ap.add_argument("--heads", type=int, default=4)
  ap.add_argument("--kv_heads", type=int, default=2)
  ap.add_argument("--head_dim", type=int, default=64)
  ap.add_argument("--ffn", type=int, default=768)
  args = ap.parse_args(argv)
  log("args: %s" % vars(args))

  torch.manual_seed(args.seed)
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  # cuDNN's SDPA builds a plan for every new shape (a new padded width
  # each batch); flash attention needs none.
  torch.backends.cuda.enable_cudnn_sdp(False)
  dev = torch.device("cuda")
  rng = np.random.default_rng(args.seed)

  tok = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
  pad_id = tok.token_to_id("<|endoftext|>")
  eos_id = tok.token_to_id("<|im_end|>")
  vocab = -(-tok.get_vocab_size() // 64) * 64

  t0 = time.time()
  skip = frozenset(r["problem"] for r in datagen.heldout())
  records = list(datagen.generate(datagen.TRAIN_SEED, args.records,
                                  skip=skip))
  log("data: %d records generated in %.1fs" % (len(records),
                                              time.time() - t0))
  t0 = time.time()
  flat, offsets, plens, dropped = encode(tok, records, args.max_len)
  lengths = offsets[1:] - offsets[:-1]
  del records
  log("data: tokenized in %.1fs; %d sequences, %d dropped (> %d); length "
      "mean %.1f p50 %d p99 %d max %d; reply mean %.1f" % (
          time.time() - t0, len(lengths), dropped, args.max_len,
          lengths.mean(), np.percentile(lengths, 50),
          np.percentile(lengths, 99), lengths.max(),
          (lengths - plens).mean()))

  shape = dict(
      vocab_size=vocab, hidden_size=args.hidden,
      intermediate_size=args.ffn, num_hidden_layers=args.layers,
      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
      head_dim=args.head_dim, max_position_embeddings=2048,
      rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
      attention_dropout=0.0, hidden_act="silu", initializer_range=0.02,
      use_cache=False, bos_token_id=pad_id, eos_token_id=eos_id,
      pad_token_id=pad_id)
  try:  # transformers 5
    config = Qwen3Config(rope_parameters={"rope_type": "default",
                                          "rope_theta": 10000.0}, **shape)
  except TypeError:  # transformers 4
    config = Qwen3Config(rope_theta=10000.0, **shape)
  model = Qwen3ForCausalLM(config)
  model.to(dev)
  model.train()
  n_params = sum(p.numel() for p in model.parameters())
  log("model: Qwen3ForCausalLM vocab %d (tokenizer %d) hidden %d layers %d "
      "heads %d/%d head_dim %d ffn %d: %d parameters (%.2fM)" % (
          vocab, tok.get_vocab_size(), args.hidden, args.layers, args.heads,
          args.kv_heads, args.head_dim, args.ffn, n_params, n_params / 1e6))

  decay = [p for n, p in model.named_parameters()
           if p.dim() >= 2 and "embed" not in n]
  no_decay = [p for n, p in model.named_parameters()
              if not (p.dim() >= 2 and "embed" not in n)]
  opt = torch.optim.AdamW(
      [{"params": decay, "weight_decay": args.weight_decay},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

  batches = []
  epoch = 0
  curve = []
  acc_loss = torch.zeros((), device=dev)
  acc_tokens = 0
  t_start = time.time()
  t_last = t_start
  for step in range(args.steps):
    if not batches:
      batches = make_batches(lengths, args.batch, rng)
      epoch += 1
    rows = batches.pop()
    x, y, n_tok = collate(flat, offsets, plens, rows, pad_id)
    x = x.to(dev, non_blocking=True)
    y = y.to(dev, non_blocking=True)
    lr = lr_at(step, args.steps, args.lr, args.warmup,
               args.lr * args.min_lr_ratio)
    for g in opt.param_groups:
      g["lr"] = lr
    # Right padding and causal attention: no real token sees a pad, so no
    # attention mask is needed (and SDPA keeps its causal fast path).
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = model(input_ids=x, labels=y).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    acc_loss += loss.detach()
    acc_tokens += n_tok
    if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
      n = (step % args.log_every) + 1
      mean = acc_loss.item() / n
      now = time.time()
      curve.append((step + 1, mean, lr, now - t_start))
      log("step %5d  epoch %d  loss %.4f  lr %.2e  %.0f reply tok/s  "
          "%.1fs" % (step + 1, epoch, mean, lr, acc_tokens / (now - t_last),
                     now - t_start))
      acc_loss.zero_()
      acc_tokens = 0
      t_last = now
  train_s = time.time() - t_start
  log("training: %d steps in %.1fs (%.1f ms/step)" % (
      args.steps, train_s, 1000 * train_s / args.steps))

  model.eval()
  model.config.use_cache = True
  model.to(torch.bfloat16)
  model.generation_config = GenerationConfig(
      bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id,
      do_sample=False)
  model.save_pretrained(args.out, safe_serialization=True)
  # Checkpoints written by transformers 4.x (every published Qwen3 and Llama)
  # carry rope_theta and torch_dtype at the top level; keep them so readers
  # of either format find them. transformers 5 reads both.
  cfg_path = os.path.join(args.out, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg.setdefault("rope_theta", 10000.0)
  cfg.setdefault("torch_dtype", "bfloat16")
  with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=2, sort_keys=True)
    f.write("\n")
  cls = check_tokenizer_class(args.out, tok)
  with open(os.path.join(os.path.dirname(os.path.abspath(args.out)),
                         "train_loss.tsv"), "w") as f:
    f.write("step\tloss\tlr\tseconds\n")
    for row in curve:
      f.write("%d\t%.5f\t%.3e\t%.1f\n" % row)
  summary = {"parameters": n_params, "vocab_size": vocab,
             "tokenizer_vocab": tok.get_vocab_size(), "steps": args.steps,
             "train_seconds": round(train_s, 1), "epochs": epoch,
             "sequences": int(len(lengths)), "final_loss": curve[-1][1],
             "tokenizer_class": cls, "args": vars(args)}
  with open(os.path.join(os.path.dirname(os.path.abspath(args.out)),
                         "train_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  log("saved %s: %s" % (args.out, sorted(os.listdir(args.out))))
  log("summary: %s" % json.dumps(summary))


if __name__ == "__main__":
  main(sys.argv[1:])
