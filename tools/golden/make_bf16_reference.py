#!/usr/bin/env python3
"""What transformers computes in bf16 on the golden checkpoints: the scale of
error a faithful bf16 implementation shows, from which the CUDA backend's
golden test takes its tolerance.

For each checkpoint of tests/data/golden, the model is loaded with
dtype=bfloat16 (weights rounded to nearest even, as our loader does) on the
GPU, and each golden prompt followed by its golden greedy tokens is run in
one causal forward pass (teacher forcing: step s sees the golden tokens
before it, as the fp32 reference did). Recorded per step, at the same top-8
ids as golden.json: the bf16 logits and the bf16 logsumexp; per checkpoint:
D16 = max |bf16 - fp32| over every recorded value (top-8 logits and
logsumexp, all steps and prompts).

    python3 tools/golden/make_bf16_reference.py --golden tests/data/golden --out DIR

writes DIR/<checkpoint>.json; copied to tests/data/golden/<checkpoint>/golden_bf16.json
for //tests/gpu:cuda_backend_golden_test (which also reads $MEMSHARE_BF16_REF_DIR).
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def reference(ckpt_dir, device):
    with open(os.path.join(ckpt_dir, "golden.json")) as f:
        golden = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.bfloat16,
                                                 attn_implementation="eager").to(device).eval()
    out = {"checkpoint": os.path.basename(ckpt_dir.rstrip("/")),
           "transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "prompts": []}
    d16 = 0.0
    with torch.no_grad():
        for p in golden["prompts"]:
            prompt, tokens = p["prompt"], p["tokens"]
            ids = prompt + tokens[:-1]
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
            logits = logits.float().cpu()
            steps = []
            for s, st in enumerate(p["steps"]):
                row = logits[len(prompt) - 1 + s]
                vals = [float(row[i]) for i in st["ids"]]
                lse = float(torch.logsumexp(row, 0))
                d16 = max(d16, max(abs(a - b) for a, b in zip(vals, st["fp32"])),
                          abs(lse - st["lse_fp32"]))
                steps.append({"bf16": vals, "lse_bf16": lse})
            out["prompts"].append({"steps": steps})
    out["max_abs_diff_bf16_vs_fp32"] = d16
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", default="tests/data/golden")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in sorted(os.listdir(a.golden)):
        d = os.path.join(a.golden, name)
        if not os.path.isfile(os.path.join(d, "golden.json")):
            continue
        r = reference(d, a.device)
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(r, f, separators=(",", ":"))
        print(f"{name}: D16 = max |bf16 - fp32| = {r['max_abs_diff_bf16_vs_fp32']:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
