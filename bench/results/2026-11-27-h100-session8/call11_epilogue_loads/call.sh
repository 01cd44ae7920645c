#!/usr/bin/env bash
# Session 8, call 11: the cluster split's closing sum requests its global
# inputs (QKV's bias, once a thread instead of once a unit; residual mode's
# first tokens) before the partial tile is stored and the cluster barrier.
# gemm_test and cuda_backend_test on the new build (.device-s8q), then the
# b64 decode step base (.device-s8n) and new alternated, three pairs, b16 once.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in .device-s8n .device-s8q; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
for t in gemm_test cuda_backend_test; do
  timeout 200 .device-s8q/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ') t=$SECONDS"
  grep -E "^\[  FAILED" $O/r/$t.log | head -8
done
step() {  # tag batch
  local d=.device-s8n; [[ $1 == new* ]] && d=.device-s8q
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_$1_b$2.json > $O/r/step_$1_b$2.log 2>&1
  echo "b$2 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_$1_b$2.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2.log | tail -1 | cut -c30-200)"
}
step base 64; step new 64; step base2 64; step new2 64; step base3 64; step new3 64; step base 16; step new 16
echo "t=$SECONDS"
cd $O && tar czf call11.tgz r && rm -rf r
