#!/usr/bin/env bash
# Session 8, call 7: the session's final build (.device-s8f: Forward's host
# phases in the bench, nothing else changed in the backend): the backend and
# engine tests, then the b64 and b16 decode steps twice each.
set -uo pipefail
N=.device-s8f
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for t in cuda_backend_test llm_engine_cuda_test; do
  timeout 200 $N/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ') t=$SECONDS"
  grep -E "^\[  FAILED" $O/r/$t.log | head -5
done
step() {  # batch tag
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 run $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_b$1_$2.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_b$1_$2.log | tail -1 | cut -c30-200)"
}
step 64 0; step 16 0; step 64 1; step 16 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv | tee $O/r/smi.txt
lscpu | grep -E "Model name|^CPU\(s\)|MHz" | tee $O/r/cpu.txt
echo "t=$SECONDS"
cd $O && tar czf call7.tgz r && rm -rf r
