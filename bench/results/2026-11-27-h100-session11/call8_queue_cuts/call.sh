#!/usr/bin/env bash
# Session 11, call 8 (experiment build .device-s11f, experiment.patch beside this
# script: MEMSHARE_EXP_QUEUE=mask:cut:cb:lm_cut:lm_cb). The queue schedule's shape
# for gate/up (cut tiles, chunk boxes) with the LM head on whole tiles, and the LM
# head with cut tiles; --early_dependents=12; b64.
set -uo pipefail
N=.device-s11f
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
export MEMSHARE_EXP_FORCE=37888:3584:0
step() {  # tag
  $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=64 --early_dependents=12 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_QUEUE=3:32:28:0:0 step trace_g32_lmw
for r in 1 2 3; do
  MEMSHARE_EXP_QUEUE=3:32:28:0:0 step g32_lmw_$r
  MEMSHARE_EXP_QUEUE=3:16:28:0:0 step g16_lmw_$r
  MEMSHARE_EXP_QUEUE=3:48:28:0:0 step g48_lmw_$r
  MEMSHARE_EXP_QUEUE=3:32:14:0:0 step g32c14_lmw_$r
  MEMSHARE_EXP_QUEUE=3:64:28:0:0 step g64_lmw_$r
  MEMSHARE_EXP_QUEUE=3:32:28:32:28 step g32_lm32_$r
done
echo "t=$SECONDS"
cd $O && tar czf call8.tgz r && rm -rf r
