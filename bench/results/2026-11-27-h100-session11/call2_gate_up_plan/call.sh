#!/usr/bin/env bash
# Session 11, call 2 (experiment build .device-s11b: call 1's patch plus
# MEMSHARE_EXP_FORCE=n:splits, which makes Tune take the skinny kernel at that
# split for products of n outputs, 0 = stream-K; experiment.patch beside this
# script). In call 1 Tune chose the cluster split 1 for gate/up (296 CTAs, 2.24
# waves) in 9 of 10 processes, stream-K in sessions 9-10. b64 decode step with
# gate/up forced to stream-K and to split 1, --early_dependents 0 and 12, and
# the GEMM timeline of one graph replay for each plan.
set -uo pipefail
N=.device-s11b
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2 t=$SECONDS: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|gate_up skinny-wgmma/[a-z0-9-]*' $O/r/step_b$1_$2.json | tr '\n' ' ')"
}
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_FORCE=37888:0 step 64 trace_sk
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_FORCE=37888:1 step 64 trace_s1
for r in 1 2; do
  for m in 0 12; do
    MEMSHARE_EXP_FORCE=37888:0 step 64 sk_m${m}_$r --early_dependents=$m
    MEMSHARE_EXP_FORCE=37888:1 step 64 s1_m${m}_$r --early_dependents=$m
  done
done
step 64 tuned_m12 --early_dependents=12
echo "t=$SECONDS"
cd $O && tar czf call2.tgz r && rm -rf r
