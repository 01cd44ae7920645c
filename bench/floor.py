#!/usr/bin/env python3
"""Hardware floor of an offline generation workload (issue: CUDA backend).

Counts the fewest bytes and FLOPs the workload must move or do, and divides
them by the measured ceilings of the card (device-to-device copy bandwidth,
bf16 matrix-product rate). No version of the engine runs much faster.

  python3 bench/floor.py --model r1-distill-qwen-7b --prompts 64 --prompt-len 512 \
      --gen-len 128 --bandwidth-gbs 3000 --tflops 790

Model: bytes of every weight read once per decode step (embedding rows
gathered, not read whole); prefill: 2 FLOPs per weight per prompt token plus
the causal attention products; decode: KV of the whole context read once per
step per sequence. Prints the terms and the floor.
"""
import argparse

# config.json values of the published architectures (as in ../shared/bench/hf_baseline.py).
MODELS = {
    "r1-distill-qwen-7b": dict(hidden=3584, inter=18944, layers=28, heads=28, kv_heads=4,
                               head_dim=128, vocab=152064, tied=False, qkv_bias=True),
    "qwen3-8b": dict(hidden=4096, inter=12288, layers=36, heads=32, kv_heads=8, head_dim=128,
                     vocab=151936, tied=False, qkv_bias=False),
    "llama3-8b": dict(hidden=4096, inter=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                      vocab=128256, tied=False, qkv_bias=False),
    "qwq-32b": dict(hidden=5120, inter=27648, layers=64, heads=40, kv_heads=8, head_dim=128,
                    vocab=152064, tied=False, qkv_bias=True),
}


def layer_params(m):
    q = m["hidden"] * m["heads"] * m["head_dim"]
    kv = 2 * m["hidden"] * m["kv_heads"] * m["head_dim"]
    o = m["heads"] * m["head_dim"] * m["hidden"]
    mlp = 3 * m["hidden"] * m["inter"]
    return q + kv + o + mlp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="r1-distill-qwen-7b", choices=sorted(MODELS))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--bandwidth-gbs", type=float, default=3000.0,
                    help="measured device-to-device copy bandwidth, GB/s (read + write)")
    ap.add_argument("--tflops", type=float, default=790.0, help="measured bf16 GEMM rate, TFLOP/s")
    a = ap.parse_args()
    m = MODELS[a.model]
    bw = a.bandwidth_gbs * 1e9
    rate = a.tflops * 1e12

    dense = m["layers"] * layer_params(m) + m["vocab"] * m["hidden"]  # layers + LM head
    total_params = dense + (0 if m["tied"] else m["vocab"] * m["hidden"])
    weight_bytes_per_step = 2 * dense  # bf16; embedding rows are a gather
    kv_bytes_per_token = m["layers"] * 2 * m["kv_heads"] * m["head_dim"] * 2

    # Prefill: GEMMs over all prompt tokens + causal attention (QK^T and PV).
    n_tok = a.prompts * a.prompt_len
    gemm_flops = 2 * (m["layers"] * layer_params(m)) * n_tok + 2 * m["vocab"] * m["hidden"] * a.prompts
    attn_flops = a.prompts * m["layers"] * m["heads"] * 2 * 2 * m["head_dim"] * (a.prompt_len ** 2) / 2
    prefill_s = (gemm_flops + attn_flops) / rate

    # Decode: each of gen_len - 1 steps after the first token (which prefill
    # produces) reads all weights once and each sequence's KV once.
    steps = a.gen_len - 1
    avg_ctx = a.prompt_len + a.gen_len / 2
    kv_step = a.prompts * avg_ctx * kv_bytes_per_token
    decode_weights_s = steps * weight_bytes_per_step / bw
    decode_kv_s = steps * kv_step / bw

    floor = prefill_s + decode_weights_s + decode_kv_s
    out_tokens = a.prompts * a.gen_len
    print(f"model {a.model}: {total_params / 1e9:.2f} B parameters, "
          f"{weight_bytes_per_step / 1e9:.2f} GB of weights read per decode step")
    print(f"prefill: {(gemm_flops + attn_flops) / 1e15:.3f} PFLOP at {a.tflops:.0f} TFLOP/s = {prefill_s:.3f} s")
    print(f"decode weights: {steps} steps x {weight_bytes_per_step / 1e9:.2f} GB at {a.bandwidth_gbs:.0f} GB/s = {decode_weights_s:.3f} s")
    print(f"decode KV: {steps} steps x {kv_step / 1e9:.2f} GB (avg context {avg_ctx:.0f}) = {decode_kv_s:.3f} s")
    print(f"floor: {floor:.3f} s = {out_tokens / floor:.0f} output tok/s for {out_tokens} tokens")
    one_step = (weight_bytes_per_step + a.prompts * (a.prompt_len + a.gen_len) * kv_bytes_per_token) / bw
    print(f"decode step floor at batch {a.prompts}, context {a.prompt_len + a.gen_len}: {one_step * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
