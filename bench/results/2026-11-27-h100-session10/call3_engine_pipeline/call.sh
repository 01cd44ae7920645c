#!/usr/bin/env bash
# Session 10, call 3: the scheduler's pipelined steps (fe3a5d6; bundle
# .device-s10c: scripts/device-bundle.sh --xz --out .device-s10c
# //tests/gpu:{cuda_backend,cuda_backend_golden,llm_engine_cuda,sampling,
# small_kernels,shard_sampling_gpu}_test //bench:cuda_backend_bench
# //bench/memshare_eval:memshare_eval). GPU tests; the b64 decode step with
# and without --upload_kernel; the offline workload through LlmEngine with
# steps pipelined (device) and one by one (device-sync); the tiny reasoner
# under memory pressure (480 blocks) with --async_scheduling on and off.
set -uo pipefail
N=.device-s10c
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 240 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # tag [flags]
  $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --json=$O/r/step_b64_$1.json ${2:-} > $O/r/step_b64_$1.log 2>&1
  echo "b64 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"host_p[a-z]*_us":[0-9.]*' $O/r/step_b64_$1.json | tr '\n' ' ')"
}
step new1; step upk1 --upload_kernel; step new2; step upk2 --upload_kernel
echo "t=$SECONDS"
timeout 200 $N/run.sh cuda_backend_bench --budgets=16384 --tune_prefill=2 --repeats=2 --engine=device,device-sync \
  --decode_batch=64 --json=$O/r/engine.json > $O/r/engine.log 2>&1; echo "engine rc=$? t=$SECONDS"
grep -o '"measure":"[a-z_]*throughput"[^}]*' $O/r/engine.json | grep -o '"measure":"[a-z_]*"\|"sampling":"[a-z-]*"\|"seconds":[0-9.]*\|"output_tok_per_s":[0-9.]*\|"ratio_to_direct":[0-9.]*' | paste -sd' ' | sed 's/"measure"/\n"measure"/g'
echo
ev() {  # tag args...
  local tag=$1; shift
  timeout 200 $N/run.sh memshare_eval --device=cuda --problems=600 --max_num_seqs=64 --out=$O/r/$tag "$@" > $O/r/$tag.log 2>&1
  echo "== $tag rc=$? t=$SECONDS"; sed -n '/^config /,$p' $O/r/$tag.log | head -4
}
ev p480_async --num_blocks=480 --admission_reserve=0 --configs="memshare=off; name=default memshare=on"
ev p480_sync --num_blocks=480 --admission_reserve=0 --async_scheduling=false --configs="memshare=off; name=default memshare=on"
echo "t=$SECONDS"
cd $O && tar czf call3.tgz r && rm -rf r
