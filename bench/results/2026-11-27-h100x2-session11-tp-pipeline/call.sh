#!/usr/bin/env bash
# Session 11: pipelined steps under tensor parallelism (GroupLeaderBackend
# Submit / Collect, followers keeping two steps in flight, the group's greedy
# tokens unpacked into sampled_ on every rank, fed tokens counted in shard
# penalty lists). Bundle .device-s11tp2: scripts/device-bundle.sh --xz --out
# .device-s11tp2 //tests/gpu:tp_group_test //bench:tp_bench
# //tests/gpu:shard_sampling_gpu_test //tests/gpu:sampling_test
# //tests/gpu:cuda_backend_test //tests/gpu:llm_engine_cuda_test, plus
# bench/run_tp_device.sh. The one-GPU tests the change touches on GPU 0, then
# the TP stages (tp_bench now also times pipelined steps).
set -uo pipefail
N=.device-s11tp2
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for t in sampling_test cuda_backend_test llm_engine_cuda_test; do
  CUDA_VISIBLE_DEVICES=0 timeout 150 $N/run.sh $t > $O/r/$t.log 2>&1
  echo "$t rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/$t.log | tr '\n' ' ')"
done
OUT=$O/r timeout 300 bash $N/run_tp_device.sh $N env,dummy7b,golden,sampling,failure,bench 280 > $O/r/stage.log 2>&1; echo "tp rc=$? t=$SECONDS"
grep -E "^=== |PASSED|FAILED|pipelined steps|Failure" $O/r/tp.log | head -30
grep -o '"measure":"decode_step"[^}]*' $O/r/bench.json | grep -o '"tp":[0-9]*\|"median_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"shard_sampled_steps":[0-9]*' | paste -sd' ' | sed 's/"tp"/\n"tp"/g'
cd $O && tar czf tpp.tgz r && rm -rf r
