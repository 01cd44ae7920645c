#!/usr/bin/env bash
# Session 11, call 3 (experiment build .device-s11c, experiment.patch beside this
# script): the skinny GEMM's queue schedule (SkinnyGemmQueueKernel: whole tiles
# then cut tiles' chunks drawn from a ticket counter; the last chunk's CTA sums
# the tile's partials in chunk order). gemm_test with every stream-K launch on
# the queue schedule (MEMSHARE_EXP_QUEUE_ALL=cut:chunk_boxes, three shapes of the
# queue), cuda_backend_test likewise; then the b64 decode step with gate/up forced
# to stream-K, on the queue schedule or not (MEMSHARE_EXP_QUEUE=mask:cut:cb, mask 1
# gate/up, 2 the other stream-K products), --early_dependents=12 throughout.
set -uo pipefail
N=.device-s11c
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for q in -1:0 1000:2 0:0; do
  MEMSHARE_EXP_QUEUE_ALL=$q timeout 120 $N/run.sh gemm_test > $O/r/gemm_test_q$q.log 2>&1
  echo "gemm_test queue $q rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/gemm_test_q$q.log | tr '\n' ' ')"
done
MEMSHARE_EXP_QUEUE_ALL=-1:0 timeout 200 $N/run.sh cuda_backend_test > $O/r/cuda_backend_test_q.log 2>&1
echo "cuda_backend_test queue rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/cuda_backend_test_q.log | tr '\n' ' ')"
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --early_dependents=12 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2 t=$SECONDS: $(grep -o '"median_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|gate_up skinny-wgmma/[a-z0-9-]*' $O/r/step_b$1_$2.json | tr '\n' ' ')"
}
export MEMSHARE_EXP_FORCE=37888:0
MEMSHARE_GEMM_TRACE=1 MEMSHARE_EXP_QUEUE=1:-1:0 step 64 trace_q
for r in 1 2; do
  step 64 sk_$r
  MEMSHARE_EXP_QUEUE=1:-1:0 step 64 q_$r
  MEMSHARE_EXP_QUEUE=1:-1:14 step 64 q_cb14_$r
  MEMSHARE_EXP_QUEUE=1:132:8 step 64 q_cut132_$r
  MEMSHARE_EXP_QUEUE=3:-1:0 step 64 q_lm_$r
done
echo "t=$SECONDS"
cd $O && tar czf call3.tgz r && rm -rf r
