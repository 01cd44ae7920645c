#!/usr/bin/env python3
"""PyTorch peer figures timed like bench/kernels_bench.cc times ours.

../shared/bench/torch_kernels_baseline.py synchronizes after every call, so
its figures include the Python dispatch time of each launch (the GPU idles
between the start event and the kernel). This script removes that: each
measurement captures R back-to-back calls in a CUDA graph (weights rotated
over copies as in kernels_bench), replays it after a warm-up and takes the
median replay time / R. Same shapes as kernels_bench: decode GEMMs of
R1-Distill-Qwen-7B and SDPA flash decode (batch 64, 28/4 heads, d 128) over
a contiguous cache.

  python3 torch_peer_kernels.py [--reps 20]
"""
import argparse
import json

import torch
import torch.nn.functional as F


def graph_time_us(fns, replays=30, warm=3):
    """Median time per call (us) of the calls in `fns`, captured in one graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for fn in fns[:3]:
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for fn in fns:
            fn()
    for _ in range(warm):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(fns))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20, help="calls per captured graph")
    a = ap.parse_args()
    dev = torch.cuda.get_device_name()
    rows = []

    def out(r):
        r["gpu"] = dev
        print(json.dumps(r), flush=True)
        rows.append(r)

    n = 1 << 30
    x = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    y = torch.empty_like(x)
    us = graph_time_us([lambda: y.copy_(x)] * 5)
    out({"what": "peer copy 1 GiB (graph)", "us": us, "GB/s": round(2 * n / us / 1e3)})
    del x, y

    for name, nout, k in (("qkv", 4608, 3584), ("o", 3584, 3584), ("gate_up", 37888, 3584),
                          ("down", 3584, 18944)):
        wbytes = nout * k * 2
        copies = max(1, -(-(256 << 20) // wbytes))
        ws = [torch.randn(nout, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        for m in (1, 16, 64, 256):
            xm = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            fns = [(lambda w=ws[i % copies]: xm @ w.t()) for i in range(a.reps)]
            us = graph_time_us(fns)
            out({"what": f"peer gemm {name} M={m} N={nout} K={k} ({copies} weight copies, graph)",
                 "us": us, "weight GB/s": round(wbytes / us / 1e3)})
        del ws
        torch.cuda.empty_cache()

    b, h, kvh, d = 64, 28, 4, 128
    for ctx in (1024, 4096, 16384):
        q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16)
        kk = torch.randn(b, kvh, ctx, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(kk)
        kv_bytes = 2 * kk.numel() * 2
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            us = graph_time_us([lambda: F.scaled_dot_product_attention(q, kk, v, enable_gqa=True)]
                               * max(2, a.reps // 4))
        out({"what": f"peer sdpa-flash decode b={b} h={h}/{kvh} d={d} ctx={ctx} (graph)", "us": us,
             "KV GB/s": round(kv_bytes / us / 1e3)})
        del q, kk, v
        torch.cuda.empty_cache()

    print(f"{'peer measurement (graph-timed)':78s} {'us':>9s} {'figure':>16s}")
    for r in rows:
        fig = next(f"{r[k]} {k}" for k in ("GB/s", "weight GB/s", "KV GB/s") if k in r)
        print(f"{r['what'][:78]:78s} {r['us']:9.2f} {fig:>16s}")


if __name__ == "__main__":
    main()
