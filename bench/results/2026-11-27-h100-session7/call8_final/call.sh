#!/usr/bin/env bash
# Session 7, call 8: the greedy-candidate branch of the cluster kernel apart
# from residual mode's (whose code is e240d4f's again). The b64 step A/B
# against BASE = .device-s7c (e240d4f), then for NEW = .device-s7g every
# single-GPU test, the offline workload with its floor, and the
# transformers peer (static cache) on the same card.
set -uo pipefail
N=.device-s7g; B=.device-s7c
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
step() {  # which batch tag
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"greedy_candidate_steps":[0-9]*' $O/r/step_$1_b$2_$3.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2_$3.log | tail -1 | cut -c1-200)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1
OUT=$O/r timeout 240 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$?"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 > $O/r/bench_stage.log 2>&1; echo "bench rc=$?"
grep -E "throughput seconds|output tok/s|decode step ms|mean pure decode|GEMMs at|graph replayed" $O/r/bench.log | head -12
cat $O/r/floor.log | tail -6
PYTHONUNBUFFERED=1 timeout 200 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$?"
tail -n 4 $O/r/peer.log
rm -f $O/r/bf16ref.tgz
cd $O && tar czf call8.tgz r && rm -rf r
