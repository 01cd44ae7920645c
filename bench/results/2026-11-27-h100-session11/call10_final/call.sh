#!/usr/bin/env bash
# Session 11, call 10: the session's code (bundle .device-s11h: scripts/device-bundle.sh
# --xz --out .device-s11h //tests/gpu:<every single-GPU test> //tests/gpu:tp_group_test
# //bench:cuda_backend_bench, plus the scripts). Every single-GPU test; the decode
# step at b64 (queue schedule and early dependents, the defaults, alternated with
# --skinny_queue=false --early_dependents=0), b48, b32, b16, b1; the offline workload
# with the floor and the transformers peer.
set -uo pipefail
N=.device-s11h
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 330 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"gemms":"[^"]*' $O/r/step_b$1_$2.json | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
for r in 1 2 3; do step 64 new$r; step 64 old$r "--skinny_queue=false --early_dependents=0"; done
step 48 new1; step 48 old1 "--skinny_queue=false --early_dependents=0"
step 32 new1; step 16 new1; step 1 new1
echo "t=$SECONDS"
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 \
  --engine=device,device-sync > $O/r/bench_stage.log 2>&1; echo "bench rc=$? t=$SECONDS"
grep -E "throughput seconds|output tok/s|decode step ms|mean pure decode|GEMMs at" $O/r/bench.log | head -12
grep -o '"measure":"engine_throughput"[^}]*' $O/r/bench.log | grep -o '"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"ratio_to_direct":[0-9.]*' | paste -sd' ' | sed 's/"sampling"/\n"sampling"/g'
echo; tail -6 $O/r/floor.log
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
cd $O && tar czf call10.tgz r && rm -rf r
