#!/usr/bin/env bash
# Session 10, call 7: the session's code (bundle .device-s10g:
# scripts/device-bundle.sh --xz --out .device-s10g //tests/gpu:<every
# single-GPU test> //bench:cuda_backend_bench //bench/memshare_eval:memshare_eval,
# plus the scripts). Every single-GPU test; the b64 decode step (upload by
# kernel, the default, and by copy engine), b16 and b1; the offline workload
# with the floor, through LlmEngine pipelined and one by one, and the
# transformers peer; the tiny reasoner under memory pressure (480 blocks),
# --async_scheduling on and off alternated.
set -uo pipefail
N=.device-s10g
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 330 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"host_p[a-z]*_us":[0-9.]*' $O/r/step_b$1_$2.json | tr '\n' ' ')"
}
for r in 1 2; do step 64 upk$r; step 64 copy$r --upload_kernel=false; done
step 16 upk1; step 1 upk1
echo "t=$SECONDS"
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N bench --budgets=16384 --tune_prefill=2 --repeats=3 \
  --engine=device,device-sync > $O/r/bench_stage.log 2>&1; echo "bench rc=$? t=$SECONDS"
grep -E "throughput seconds|output tok/s|decode step ms|mean pure decode|GEMMs at" $O/r/bench.log | head -12
grep -o '"measure":"engine_throughput"[^}]*' $O/r/bench.log | grep -o '"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"ratio_to_direct":[0-9.]*' | paste -sd' ' | sed 's/"sampling"/\n"sampling"/g'
echo; tail -6 $O/r/floor.log
PYTHONUNBUFFERED=1 timeout 150 python3 -W ignore $N/hf_baseline.py --model r1-distill-qwen-7b --prompts 64 \
  --prompt-len 512 --gen-len 128 --modes static > $O/r/peer.log 2>&1; echo "peer rc=$? t=$SECONDS"
tail -n 4 $O/r/peer.log
ev() {  # tag args...
  local tag=$1; shift
  timeout 100 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -4
}
for r in 1 2; do
  ev p480_async_$r --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
  ev p480_sync_$r --num_blocks=480 --admission_reserve=0 --async_scheduling=false --configs="memshare=off; name=default memshare=on"
done
echo "t=$SECONDS"
cd $O && tar czf call7.tgz r && rm -rf r
