#!/usr/bin/env bash
# Session 11, call 5 (experiment build .device-s11e, experiment.patch beside this
# script). Stream-K with the first F CTAs taking w/100 shares of the units
# (MEMSHARE_EXP_SKW=F:w): after a 112-CTA kernel, 20 CTAs of a 132-CTA stream-K
# grid start while it runs. gemm_test with weights; a per-CTA timeline of the
# stream-K launches (start and end by blockIdx); the b64 decode step, gate/up on
# stream-K, --early_dependents=12, F = 20 and w 100 / 120 / 140 / 170.
set -uo pipefail
N=.device-s11e
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for q in 2:250 20:140; do
  MEMSHARE_EXP_SKW=$q timeout 120 $N/run.sh gemm_test > $O/r/gemm_test_w$q.log 2>&1
  echo "gemm_test skw $q rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/gemm_test_w$q.log | tr '\n' ' ')"
done
export MEMSHARE_EXP_FORCE=37888:3584:0
step() {  # tag [flags]
  $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=64 --early_dependents=12 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
MEMSHARE_GEMM_TRACE=1 step trace_w100
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_SKW=20:140 step trace_w140
for r in 1 2; do
  step w100_$r
  MEMSHARE_EXP_SKW=20:120 step w120_$r
  MEMSHARE_EXP_SKW=20:140 step w140_$r
  MEMSHARE_EXP_SKW=20:170 step w170_$r
done
echo "t=$SECONDS"
cd $O && tar czf call5.tgz r && rm -rf r
