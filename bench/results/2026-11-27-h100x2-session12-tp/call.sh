#!/usr/bin/env bash
# Session 12: the skinny GEMM's column split under tensor parallelism (at TP=2 the 7B's gate/up
# is 132 windows of 72 gate and 72 up rows). Bundle .device-s12tp: scripts/device-bundle.sh --xz
# --out .device-s12tp //tests/gpu:tp_group_test //bench:tp_bench //tests/gpu:shard_sampling_gpu_test,
# plus bench/run_tp_device.sh. The TP test stages, then tp_bench at TP=1 and TP=2 with the column
# split on (default) and off (--skinny_wide=0), alternated, with engine runs at TP=2.
set -uo pipefail
N=.device-s12tp
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SECONDS=0
OUT=$O/r timeout 250 bash $N/run_tp_device.sh $N env,dummy7b,golden,sampling,failure 240 > $O/r/stage.log 2>&1; echo "tp tests rc=$? t=$SECONDS"
grep -E "^=== |PASSED|FAILED|Failure" $O/r/tp.log | head -30
tp() {  # tp tag port [flags]
  if [[ $1 == 1 ]]; then
    timeout 60 $N/run.sh tp_bench --tp=1 --json=$O/r/b_$2.json ${4:-} > $O/r/b_$2.log 2>&1
  else
    timeout 90 $N/run.sh tp_bench --tp=2 --rank=1 --port=$3 ${4:-} > $O/r/b_$2_r1.log 2>&1 &
    timeout 90 $N/run.sh tp_bench --tp=2 --rank=0 --port=$3 --json=$O/r/b_$2.json ${4:-} > $O/r/b_$2.log 2>&1
    wait
  fi
  echo "$2: $(grep -o '"measure":"decode_step"[^}]*' $O/r/b_$2.json | grep -o '"median_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"gemms":"[^"]*' | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
tp 2 tp2_wide1 29621; tp 2 tp2_sk1 29622 --skinny_wide=0
tp 2 tp2_wide2 29623; tp 2 tp2_sk2 29624 --skinny_wide=0
tp 1 tp1_wide1 0; tp 1 tp1_sk1 0 --skinny_wide=0
tp 2 tp2_eng_wide 29625 "--engine_runs=2"; tp 2 tp2_eng_sk 29626 "--engine_runs=2 --skinny_wide=0"
grep -h -o '"measure":"engine_throughput"[^}]*' $O/r/b_tp2_eng_*.json | cut -c1-200
echo "t=$SECONDS"
cd $O && tar czf tp.tgz r && rm -rf r
