#!/usr/bin/env bash
# Session 12, call 3: the offline workload (64 x 512 -> 128, greedy) on the final code (bundle
# .device-s12b, as call 2), with its floor, through LlmEngine (pipelined and one by one), and the
# transformers peer in the same call.
set -uo pipefail
N=.device-s12b
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 \
  --engine=device,device-sync > $O/r/bench_stage.log 2>&1; echo "bench rc=$? t=$SECONDS"
grep -E "throughput seconds|output tok/s|decode step ms|mean pure decode|GEMMs at" $O/r/bench.log | head -12
grep -o '"measure":"engine_throughput"[^}]*' $O/r/bench.log | grep -o '"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"ratio_to_direct":[0-9.]*' | paste -sd' ' | sed 's/"sampling"/\n"sampling"/g'
echo; tail -6 $O/r/floor.log
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
cd $O && tar czf call3.tgz r && rm -rf r
