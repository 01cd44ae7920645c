"""Checks the committed tiny-reasoner model directory (standard library only).

The model was trained on the GPU machine (train.py); here we check what the
engine will read: config.json against the safetensors header (names, dtypes,
shapes, byte ranges), the tokenizer files and chat template, the size limit,
and that a plain byte-level BPE written from the tokenizer.json spec
reproduces the token ids that the `tokenizers` library produced
(tests/data/tiny_reasoner/tokenizer_golden.jsonl).
"""

import json
import os
import re
import struct
import unicodedata
import unittest

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
_MODEL = os.path.join(_ROOT, "assets", "models", "tiny-reasoner")
_DATA = os.path.join(_ROOT, "tests", "data", "tiny_reasoner")


def _load(name):
  with open(os.path.join(_MODEL, name), encoding="utf-8") as f:
    return json.load(f)


def _bytes_to_unicode():
  """GPT-2's byte -> printable character table used by ByteLevel."""
  bs = (list(range(ord("!"), ord("~") + 1)) +
        list(range(ord("¡"), ord("¬") + 1)) +
        list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


# Qwen2's split pattern, spelled with Python `re` classes: \p{L} is
# [^\W\d_], \p{N} is \d (equal on the texts of the golden file, which hold no
# underscores and no non-decimal numerals).
_SPLIT = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:(?![\r\n])[\W_])?[^\W\d_]+|\d|"
    r" ?(?:(?!\s)[\W_])+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class ReferenceBpe:
  """Byte-level BPE as tokenizer.json describes it (for checking only)."""

  def __init__(self, tok):
    self.vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"]
    pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
             for m in merges]
    self.ranks = {p: i for i, p in enumerate(pairs)}
    self.added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    self.added_re = re.compile("|".join(
        re.escape(t) for t in sorted(self.added, key=len, reverse=True)))
    self.byte_map = _bytes_to_unicode()

  def _word(self, piece):
    syms = [self.byte_map[b] for b in piece.encode("utf-8")]
    while len(syms) > 1:
      best = min(range(len(syms) - 1),
                 key=lambda i: self.ranks.get((syms[i], syms[i + 1]),
                                              float("inf")))
      if (syms[best], syms[best + 1]) not in self.ranks:
        break
      syms[best:best + 2] = [syms[best] + syms[best + 1]]
    return [self.vocab[s] for s in syms]

  def encode(self, text):
    ids = []
    pos = 0
    for m in list(self.added_re.finditer(text)) + [None]:
      end = m.start() if m else len(text)
      chunk = unicodedata.normalize("NFC", text[pos:end])
      for piece in _SPLIT.findall(chunk):
        ids.extend(self._word(piece))
      if m:
        ids.append(self.added[m.group(0)])
        pos = m.end()
    return ids


class ModelDirTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.config = _load("config.json")
    cls.tok = _load("tokenizer.json")
    cls.tok_config = _load("tokenizer_config.json")
    cls.gen_config = _load("generation_config.json")
    with open(os.path.join(_MODEL, "model.safetensors"), "rb") as f:
      n = struct.unpack("<Q", f.read(8))[0]
      cls.header = json.loads(f.read(n))
      cls.data_bytes = os.fstat(f.fileno()).st_size - 8 - n

  def test_size_limit(self):
    total = sum(os.path.getsize(os.path.join(_MODEL, f))
                for f in os.listdir(_MODEL))
    self.assertLessEqual(total, 25 * 1000 * 1000)

  def test_config(self):
    c = self.config
    self.assertEqual(c["architectures"], ["Qwen3ForCausalLM"])
    self.assertEqual(c["model_type"], "qwen3")
    self.assertTrue(c["tie_word_embeddings"])
    self.assertGreaterEqual(c["max_position_embeddings"], 2048)
    self.assertEqual(c["num_attention_heads"] % c["num_key_value_heads"], 0)
    self.assertLess(c["num_key_value_heads"], c["num_attention_heads"])  # GQA
    self.assertEqual(c["rope_theta"], c["rope_parameters"]["rope_theta"])
    self.assertEqual(c["torch_dtype"], "bfloat16")

  def test_weights_match_config(self):
    c = self.config
    h, d = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    f = c["intermediate_size"]
    want = {"model.embed_tokens.weight": [c["vocab_size"], h],
            "model.norm.weight": [h]}
    for i in range(c["num_hidden_layers"]):
      p = "model.layers.%d." % i
      want.update({
          p + "input_layernorm.weight": [h],
          p + "post_attention_layernorm.weight": [h],
          p + "self_attn.q_proj.weight": [q, h],
          p + "self_attn.k_proj.weight": [kv, h],
          p + "self_attn.v_proj.weight": [kv, h],
          p + "self_attn.o_proj.weight": [h, q],
          p + "self_attn.q_norm.weight": [d],
          p + "self_attn.k_norm.weight": [d],
          p + "mlp.gate_proj.weight": [f, h],
          p + "mlp.up_proj.weight": [f, h],
          p + "mlp.down_proj.weight": [h, f],
      })
    tensors = {k: v for k, v in self.header.items() if k != "__metadata__"}
    self.assertEqual({k: v["shape"] for k, v in tensors.items()}, want)
    # No lm_head: it is tied to the embedding. bf16 everywhere; the byte
    # ranges tile the data section.
    ranges = sorted(v["data_offsets"] for v in tensors.values())
    self.assertEqual(ranges[0][0], 0)
    self.assertEqual(ranges[-1][1], self.data_bytes)
    for (_, e), (s, _) in zip(ranges, ranges[1:]):
      self.assertEqual(e, s)
    params = 0
    for v in tensors.values():
      self.assertEqual(v["dtype"], "BF16")
      n = 1
      for x in v["shape"]:
        n *= x
      self.assertEqual(v["data_offsets"][1] - v["data_offsets"][0], 2 * n)
      params += n
    self.assertLessEqual(params, 10 * 1000 * 1000)

  def test_tokenizer_and_special_ids(self):
    added = {t["content"]: t for t in self.tok["added_tokens"]}
    for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
      self.assertTrue(added[t]["special"], t)
    for t in ("<think>", "</think>"):
      self.assertFalse(added[t]["special"], t)
    vocab = self.tok["model"]["vocab"]
    size = len(vocab) + len(added)
    self.assertGreaterEqual(self.config["vocab_size"], size)
    self.assertEqual(self.config["eos_token_id"], added["<|im_end|>"]["id"])
    self.assertEqual(self.config["pad_token_id"],
                     added["<|endoftext|>"]["id"])
    self.assertIn(added["<|im_end|>"]["id"], self.gen_config["eos_token_id"])
    self.assertFalse(self.gen_config["do_sample"])
    # Byte-level: every one of the 256 byte symbols is a token.
    self.assertTrue(all(ch in vocab for ch in _bytes_to_unicode().values()))
    self.assertEqual(self.tok["model"]["type"], "BPE")
    kinds = [p["type"] for p in self.tok["pre_tokenizer"]["pretokenizers"]]
    self.assertEqual(kinds, ["Split", "ByteLevel"])

  def test_chat_template_is_chatml_with_thinking_prompt(self):
    t = self.tok_config["chat_template"]
    self.assertIn("'<|im_start|>' + message['role'] + '\\n'", t)
    self.assertIn("'<|im_start|>assistant\\n<think>\\n'", t)
    self.assertEqual(self.tok_config["eos_token"], "<|im_end|>")
    self.assertEqual(self.tok_config["pad_token"], "<|endoftext|>")
    decoder = self.tok_config["added_tokens_decoder"]
    added = {t["content"]: t["id"] for t in self.tok["added_tokens"]}
    self.assertEqual({v["content"]: int(k) for k, v in decoder.items()},
                     added)

  def test_reference_bpe_reproduces_golden_ids(self):
    bpe = ReferenceBpe(self.tok)
    with open(os.path.join(_DATA, "tokenizer_golden.jsonl"),
              encoding="utf-8") as f:
      golden = [json.loads(line) for line in f]
    self.assertGreaterEqual(len(golden), 40)
    for g in golden:
      self.assertEqual(bpe.encode(g["text"]), g["ids"], repr(g["text"]))


if __name__ == "__main__":
  unittest.main()
