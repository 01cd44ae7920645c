#!/usr/bin/env bash
# Session 9, call 4: the session's final code (c23b025; bundle .device-s9z:
# scripts/device-bundle.sh --xz --out .device-s9z //tests/gpu:<every
# single-GPU test> //bench:cuda_backend_bench, plus the scripts). Every
# single-GPU test; the decode step at b64, b16 and b1, base (.device-s9a,
# 5c611d5) and final alternated; then the offline workload with its floor and
# the transformers peer (static cache).
set -uo pipefail
N=.device-s9z; B=.device-s9a
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
OUT=$O/r timeout 300 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # bundle batch tag
  $1/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_b$2_$3.json > $O/r/step_b$2_$3.log 2>&1
  echo "b$2 $3: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_b$2_$3.json | tr '\n' ' ')"
}
for r in 1 2 3; do step $B 64 base$r; step $N 64 new$r; done
for r in 1 2; do step $B 1 base$r; step $N 1 new$r; done
step $B 16 base1; step $N 16 new1
echo "t=$SECONDS"
OUT=$O/r timeout 150 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 > $O/r/bench_stage.log 2>&1; echo "bench rc=$? t=$SECONDS"
grep -E "throughput seconds|output tok/s|decode step ms|decode step host|mean pure decode|GEMMs at" $O/r/bench.log | head -12
tail -6 $O/r/floor.log
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
cd $O && tar czf call4.tgz r && rm -rf r
