#!/usr/bin/env bash
# Session 12: pipelined steps at TP=4 (four H100s), untested until now. Bundle .device-s12tp4:
# scripts/device-bundle.sh --xz --out .device-s12tp4 //tests/gpu:tp_group_test //bench:tp_bench
# //tests/gpu:shard_sampling_gpu_test, plus bench/run_tp_device.sh. The TP test stages (dummy-7B
# and shard sampling at TP=2 and TP=4, the pipeline test at TP=2 and, new, TP=4), then tp_bench
# at TP=4 (four processes): the decode step synchronous and pipelined, and the offline workload
# through LlmEngine pipelined and one by one; TP=1 on GPU 0 for the ratio.
set -uo pipefail
N=.device-s12tp4
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SECONDS=0
OUT=$O/r timeout 200 bash $N/run_tp_device.sh $N env,dummy7b,sampling 190 > $O/r/stage.log 2>&1; echo "tp tests rc=$? t=$SECONDS"
grep -E "^\[[0-9]+s\]|OK \]|FAILED|Failure" $O/r/tp.log | head -40
tp4() {  # tag port [flags]
  for r in 1 2 3; do
    timeout 120 $N/run.sh tp_bench --tp=4 --rank=$r --port=$2 ${3:-} > $O/r/b_$1_r$r.log 2>&1 &
  done
  timeout 120 $N/run.sh tp_bench --tp=4 --rank=0 --port=$2 --json=$O/r/b_$1.json ${3:-} > $O/r/b_$1.log 2>&1
  wait
  echo "$1: $(grep -o '"measure":"decode_step"[^}]*' $O/r/b_$1.json | grep -o '"median_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"gemms":"[^"]*' | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
  grep -o '"pipelined":[a-z]*,"seconds":[0-9.]*' $O/r/b_$1.json | tr '\n' ' '; echo
}
tp4 tp4_eng 29631 --engine_runs=2
timeout 60 $N/run.sh tp_bench --tp=1 --json=$O/r/b_tp1.json > $O/r/b_tp1.log 2>&1
echo "tp1: $(grep -o '"measure":"decode_step"[^}]*' $O/r/b_tp1.json | grep -o '"median_ms":[0-9.]*\|"pipelined_ms":[0-9.]*' | tr '\n' ' ')"
echo "t=$SECONDS"
cd $O && tar czf tp4.tgz r && rm -rf r
