#!/usr/bin/env bash
# Session 6, call 2 (experiment build, not committed): is the skinny GEMM at
# 64 tokens held by X's L2 traffic? X's map cut to its first 64 columns
# (EXP_X_OOB: every later X box is zero-filled by the copy engine, no
# memory traffic; wrong results, timing only). And decode attention at small
# contexts (EXP_SMALL_CTX), for its fixed cost.
set -uo pipefail
B=.device-exp
O=${OUT:-/tmp/out}; mkdir -p $O/r
tar xJf $B/bundle.tar.xz -C $B
timeout 200 $B/run.sh kernels_bench --only gemm > $O/r/gemm_base.log 2>&1; echo "base rc=$?"
EXP_X_OOB=1 timeout 200 $B/run.sh kernels_bench --only gemm > $O/r/gemm_xoob.log 2>&1; echo "xoob rc=$?"
EXP_SMALL_CTX=1 timeout 120 $B/run.sh kernels_bench --only attn > $O/r/attn_small.log 2>&1; echo "attn rc=$?"
for f in gemm_base gemm_xoob; do echo "== $f"; grep -E "^gemm (gate_up|down|qkv) M=(1|16|64) " $O/r/$f.log | grep -E "stream-k|splits=[0-9]+ pdl=1|tuned-cold" | grep -v "skinny splits" | awk '{$1=$1};1' | cut -c1-150; done
echo "== attn"; grep -E "^decode attn" $O/r/attn_small.log | grep graph
cd $O && tar czf exp.tgz r && rm -rf r
