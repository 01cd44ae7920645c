#!/usr/bin/env python3
"""Trains the tiny reasoner's byte-level BPE tokenizer (needs `tokenizers`).

The pipeline is Qwen2's: NFC normalizer, the Qwen2 split regex (single
digits, letters with one leading non-letter, punctuation runs, newlines,
spaces) followed by the GPT-2 byte-to-unicode mapping, byte-level decoder.
Special tokens follow Qwen's layout: <|endoftext|>, <|im_start|> and
<|im_end|> are special added tokens placed after the BPE vocabulary; <think>
and </think> are added tokens that are not special (they stay in decoded
text, as in Qwen3 and DeepSeek-R1).

Writes OUT/tokenizer.json and OUT/tokenizer_config.json (with the ChatML
chat template) and prints the vocabulary size and the special token ids.

  train_tokenizer.py --out model_dir [--records 30000] [--vocab 2048]
"""

import argparse
import json
import os
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,
                        normalizers, pre_tokenizers, processors, trainers)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # pylint: disable=wrong-import-position

# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen2.5/Qwen3).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                 r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]

# ChatML, written like Qwen2.5's template; the generation prompt opens the
# thinking block ("<think>\n"), as R1-style reasoning templates do.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    "{%- endif %}")


def corpus(records):
  """Texts to learn merges from: the chat words, problems and traces."""
  for r in datagen.generate(datagen.TRAIN_SEED, records):
    completion = r["completion"].replace("</think>", "")
    yield "user\n%s\nassistant\n%s" % (r["problem"], completion)


def build(records, vocab_size):
  tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False,
                             byte_fallback=False))
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated",
                           invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                               use_regex=False),
  ])
  tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                   use_regex=False)
  tok.post_processor = processors.ByteLevel(add_prefix_space=False,
                                            trim_offsets=False,
                                            use_regex=False)
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - len(SPECIAL) - len(THINK), min_frequency=2,
      show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      special_tokens=[])
  tok.train_from_iterator(corpus(records), trainer=trainer)
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                          for t in SPECIAL])
  tok.add_tokens([AddedToken(t, special=False, normalized=False)
                  for t in THINK])
  return tok


def tokenizer_config(tok, model_max_length):
  decoder = {}
  for t in SPECIAL + THINK:
    decoder[str(tok.token_to_id(t))] = {
        "content": t, "lstrip": False, "normalized": False, "rstrip": False,
        "single_word": False, "special": t in SPECIAL}
  return {
      "add_bos_token": False,
      "add_prefix_space": False,
      "added_tokens_decoder": decoder,
      "bos_token": None,
      "chat_template": CHAT_TEMPLATE,
      "clean_up_tokenization_spaces": False,
      "eos_token": "<|im_end|>",
      "errors": "replace",
      "model_max_length": model_max_length,
      "pad_token": "<|endoftext|>",
      "split_special_tokens": False,
      "tokenizer_class": "Qwen2Tokenizer",
      "unk_token": None,
  }


def main(argv):
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True)
  ap.add_argument("--records", type=int, default=30000)
  ap.add_argument("--vocab", type=int, default=2048,
                  help="upper bound; BPE stops when no pair is left")
  ap.add_argument("--model_max_length", type=int, default=2048)
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  tok = build(args.records, args.vocab)
  tok.save(os.path.join(args.out, "tokenizer.json"))
  with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
    json.dump(tokenizer_config(tok, args.model_max_length), f, indent=2)
    f.write("\n")
  ids = {t: tok.token_to_id(t) for t in SPECIAL + THINK}
  print("tokenizer: vocab %d, special %s" % (tok.get_vocab_size(), ids))
  sample = datagen.chat_prompt("Mia has 23 apples. How many?")
  enc = tok.encode(sample, add_special_tokens=False)
  print("sample: %d tokens %s" % (len(enc.ids), enc.tokens))
  back = tok.decode(enc.ids, skip_special_tokens=False)
  print("sample decodes back: %s" % (back == sample))


if __name__ == "__main__":
  main(sys.argv[1:])
