#!/usr/bin/env bash
# Session 8, call 12: the session's final code (bundle .device-s8z:
# scripts/device-bundle.sh --xz --out .device-s8z //tests/gpu:<every
# single-GPU test> //bench:cuda_backend_bench, plus the scripts). Every
# single-GPU test (with the bf16 transformers reference of the golden
# checkpoints), the b64 and b16 decode steps, then the offline workload with
# its floor and the transformers peer (static cache), as time allows.
set -uo pipefail
N=.device-s8z
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 240 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # batch tag
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 run $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_b$1_$2.json | tr '\n' ' ')"
}
step 64 0; step 64 1; step 16 0
echo "t=$SECONDS"
OUT=$O/r timeout 150 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 > $O/r/bench_stage.log 2>&1; echo "bench rc=$? t=$SECONDS"
grep -E "throughput seconds|output tok/s|decode step ms|decode step host|mean pure decode|GEMMs at" $O/r/bench.log | head -12
tail -6 $O/r/floor.log
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
cd $O && tar czf call12.tgz r && rm -rf r
