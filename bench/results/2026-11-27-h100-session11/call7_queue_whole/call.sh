#!/usr/bin/env bash
# Session 11, call 7 (call 5's build .device-s11e; experiment.patch in call5_weighted/).
# Whole tiles drawn from the queue (MEMSHARE_EXP_QUEUE=mask:0:0, no cut tiles) for the
# LM head (mask 2) and gate/up (mask 1); gate/up with a few cut tiles in 2 chunks
# (1:32:28); gate/up otherwise forced to stream-K; --early_dependents=12; b64.
set -uo pipefail
N=.device-s11e
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
export MEMSHARE_EXP_FORCE=37888:3584:0
step() {  # tag
  $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 \
    --budgets=2048 --repeats=1 --decode_batch=64 --early_dependents=12 --json=$O/r/step_$1.json > $O/r/step_$1.log 2>&1
  echo "$1 t=$SECONDS: $(grep -o '"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_QUEUE=3:0:0 step trace_both_whole
for r in 1 2 3; do
  step base_$r
  MEMSHARE_EXP_QUEUE=2:0:0 step lm_whole_$r
  MEMSHARE_EXP_QUEUE=3:0:0 step both_whole_$r
  MEMSHARE_EXP_QUEUE=1:32:28 step gu_cut32_$r
done
echo "t=$SECONDS"
cd $O && tar czf call7.tgz r && rm -rf r
