#!/usr/bin/env python3
"""Builds the golden checkpoints and outputs for the CPU backend tests.

Run by hand on the GPU machine (it has torch + transformers; this repository's
build machines have neither). Everything runs on the CPU in float32 and is
deterministic:

    python3 tools/golden/make_golden.py --out /tmp/golden

For each supported architecture it builds a tiny random-weight checkpoint
(a few hundred KB; GQA/MQA/MHA, Qwen2 QKV bias, Qwen3 q/k RMSNorm, tied and
untied embeddings, llama3 rope scaling, head_dim != hidden/heads, fp32 / bf16 /
fp16 storage, one of them sharded with model.safetensors.index.json), saves it
with save_pretrained, and records transformers' greedy decode of a few prompts:
the greedy tokens and, at every generated step, the top-k logits.

Two transformers runs are recorded per checkpoint:
  fp32    the model as is (the oracle);
  bf16kv  the same model with K (after k_norm for Qwen3, before RoPE) and V
          rounded to bf16 right where they are produced: exactly the storage
          rounding of our paged KV cache, so our fp32 CPU backend must match
          it to fp32 rounding noise, and |bf16kv - fp32| measures what bf16
          storage alone costs.
Weights are rounded to the checkpoint's storage dtype before anything runs, so
what our loader reads is exactly what transformers computed with.

The seed of each checkpoint is the first one (from a fixed list) whose greedy
sequences are the same under fp32 and bf16kv and whose smallest gap between
the top-1 and top-2 logit over all steps is at least --min-gap. Random tiny
models have near-ties; a near-tie would make 'identical greedy tokens' a test
of rounding luck instead of a test of the implementation.
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

TOP_K = 8
NUM_STEPS = 20


def prompts():
    g = torch.Generator().manual_seed(1234)
    rnd = lambda n: torch.randint(0, 500, (n,), generator=g).tolist()
    pattern = rnd(12)
    return [
        [1, 17, 42, 99, 3],   # short
        [7],                  # a single token
        rnd(16),              # exactly one block of 16
        rnd(45),              # crosses block boundaries at 16 and 32 (and 48, 64 while decoding)
        pattern * 3,          # repeats itself (36 tokens)
        rnd(33),
    ]


def rope(kind, theta):
    if kind == "default":
        return dict(rope_type="default", rope_theta=theta)
    # llama3 with a small original context so the three bands of the
    # frequency remap (kept, smoothed, divided by factor) all occur at
    # head_dim 32.
    return dict(rope_type="llama3", rope_theta=theta, factor=8.0, low_freq_factor=1.0,
                high_freq_factor=4.0, original_max_position_embeddings=64)


def make_config(cls, rope_params, **kw):
    try:
        return cls(rope_parameters=rope_params, **kw)
    except TypeError:
        # transformers < 5: separate rope_theta and rope_scaling.
        scaling = None if rope_params["rope_type"] == "default" else {
            k: v for k, v in rope_params.items() if k != "rope_theta"}
        return cls(rope_theta=rope_params["rope_theta"], rope_scaling=scaling, **kw)


SPECS = [
    # name, model class, config class, config kwargs, rope, storage dtype, max shard size
    ("llama_gqa", LlamaForCausalLM, LlamaConfig,
     dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
          max_position_embeddings=256, tie_word_embeddings=False),
     ("default", 10000.0), torch.float32, None),
    ("llama_tied_llama3", LlamaForCausalLM, LlamaConfig,
     dict(vocab_size=512, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-5,
          max_position_embeddings=512, tie_word_embeddings=True),
     ("llama3", 500000.0), torch.bfloat16, "60KB"),
    ("qwen2_bias", Qwen2ForCausalLM, Qwen2Config,
     dict(vocab_size=640, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
          num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-6,
          max_position_embeddings=512, tie_word_embeddings=False, use_sliding_window=False),
     ("default", 1000000.0), torch.float16, None),
    ("qwen3_qknorm", Qwen3ForCausalLM, Qwen3Config,
     dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
          max_position_embeddings=512, tie_word_embeddings=True, use_sliding_window=False,
          attention_bias=False),
     ("default", 1000000.0), torch.float32, None),
    ("mistral_mha", MistralForCausalLM, MistralConfig,
     dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
          max_position_embeddings=1024, tie_word_embeddings=False, sliding_window=4096),
     ("default", 10000.0), torch.float32, None),
]


def randomize(model, cfg, seed, store_dtype):
    """Every parameter random (transformers' init leaves biases 0 and norms 1,
    which would hide a loader that drops them), then rounded to the storage
    dtype so the saved file holds exactly the weights the golden used."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                v = 1.0 + 0.2 * r
            elif name.endswith("bias"):
                v = 0.3 * r
            elif "embed_tokens" in name:
                v = 0.5 * r
            elif "lm_head" in name:
                v = r / math.sqrt(p.shape[1]) * 2.0
            else:  # [out, in]
                v = r / math.sqrt(p.shape[1])
            p.copy_(v.to(store_dtype).to(torch.float32))


def add_bf16kv_hooks(model):
    def round_out(module, args, out):
        return out.to(torch.bfloat16).to(torch.float32)
    handles = []
    for layer in model.model.layers:
        attn = layer.self_attn
        k_mod = attn.k_norm if hasattr(attn, "k_norm") else attn.k_proj
        handles.append(k_mod.register_forward_hook(round_out))
        handles.append(attn.v_proj.register_forward_hook(round_out))
    return handles


@torch.no_grad()
def logits_last(model, ids):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0, -1].to(torch.float32)


@torch.no_grad()
def greedy(model, prompt, steps):
    ids = list(prompt)
    tokens, logits = [], []
    for _ in range(steps):
        l = logits_last(model, ids)
        t = int(torch.argmax(l))
        tokens.append(t)
        logits.append(l)
        ids.append(t)
    return tokens, logits


def top2_gap(l):
    v = torch.topk(l, 2).values
    return float(v[0] - v[1])


def build(spec, seeds, min_gap, out_dir, log):
    name, model_cls, cfg_cls, kw, (rope_kind, theta), store_dtype, shard = spec
    cfg = make_config(cfg_cls, rope(rope_kind, theta), **kw)
    try:
        cfg._attn_implementation = "eager"
    except Exception as e:  # noqa: BLE001
        log(f"  (eager attention not set: {e})")
    ps = prompts()
    for seed in seeds:
        torch.manual_seed(seed)
        model = model_cls(cfg).to(torch.float32).eval()
        randomize(model, cfg, seed, store_dtype)
        ref = [greedy(model, p, NUM_STEPS) for p in ps]
        gap = min(top2_gap(l) for _, ls in ref for l in ls)
        handles = add_bf16kv_hooks(model)
        emu_free = [greedy(model, p, NUM_STEPS)[0] for p in ps]
        same = all(a == b[0] for a, b in zip(emu_free, ref))
        # Teacher-forced with the fp32 tokens (identical when `same`).
        emu = []
        for p, (toks, _) in zip(ps, ref):
            ids = list(p)
            ls = []
            for t in toks:
                ls.append(logits_last(model, ids))
                ids.append(t)
            emu.append(ls)
        for h in handles:
            h.remove()
        diff = max(float((a - b).abs().max()) for (_, la), lb in zip(ref, emu)
                   for a, b in zip(la, lb))
        log(f"  {name} seed {seed}: min top-2 gap {gap:.3e}, max |bf16kv - fp32| {diff:.3e}, "
            f"greedy same: {same}")
        if same and gap >= min_gap:
            break
    else:
        raise RuntimeError(f"{name}: no seed in {seeds} gives a well-separated greedy path")

    d = os.path.join(out_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    save_kw = {}
    if shard:
        save_kw["max_shard_size"] = shard
    model.to(store_dtype).save_pretrained(d, **save_kw)
    files = sorted(os.listdir(d))
    log(f"  saved {name}: {files}")
    if not any(f.endswith(".safetensors") for f in files):
        raise RuntimeError(f"{name}: save_pretrained wrote no safetensors: {files}")
    if shard and "model.safetensors.index.json" not in files:
        raise RuntimeError(f"{name}: expected a sharded checkpoint: {files}")
    with open(os.path.join(d, "config.json")) as f:
        log("  config.json: " + json.dumps(json.load(f), sort_keys=True))
    from safetensors import safe_open
    for fn in files:
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), "pt") as f:
                keys = sorted(f.keys())
                log(f"  {fn}: {len(keys)} tensors, {keys[:4]} ... dtype "
                    f"{f.get_tensor(keys[0]).dtype}")

    golden = {
        "checkpoint": name,
        "architecture": model_cls.__name__,
        "storage_dtype": str(store_dtype).replace("torch.", ""),
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "top_k": TOP_K,
        "num_steps": NUM_STEPS,
        "min_top2_gap": gap,
        "max_abs_diff_bf16kv_vs_fp32": diff,
        "prompts": [],
    }
    for p, (toks, la), lb in zip(ps, ref, emu):
        steps = []
        for a, b in zip(la, lb):
            top = torch.topk(a, TOP_K)
            ids = top.indices.tolist()
            steps.append({
                "ids": ids,
                "fp32": [float(x) for x in top.values],
                "bf16kv": [float(b[i]) for i in ids],
                "lse_fp32": float(torch.logsumexp(a, 0)),
                "lse_bf16kv": float(torch.logsumexp(b, 0)),
            })
        golden["prompts"].append({"prompt": p, "tokens": toks, "steps": steps})
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-gap", type=float, default=2e-3)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "make_golden.log"), "w")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    log(f"transformers {transformers.__version__}, torch {torch.__version__}")
    failed = []
    for spec in SPECS:
        if args.only and spec[0] not in args.only.split(","):
            continue
        log(f"== {spec[0]}")
        try:
            build(spec, list(range(100, 140)), args.min_gap, args.out, log)
        except Exception as e:  # noqa: BLE001  keep going: one run must give every checkpoint it can
            import traceback
            log(f"FAILED {spec[0]}: {e!r}\n{traceback.format_exc()}")
            failed.append(spec[0])
    log(f"done; failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
