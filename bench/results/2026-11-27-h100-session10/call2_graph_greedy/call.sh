#!/usr/bin/env bash
# Session 10, call 2: the greedy reduction as the decode graph's last kernel
# (tokens into sampled_ and the step's pinned slot), and the metadata
# uploaded by a kernel (--upload_kernel). Bundle .device-s10b
# (scripts/device-bundle.sh --xz --out .device-s10b //tests/gpu:{cuda_backend,
# cuda_backend_golden,llm_engine_cuda,sampling,small_kernels,shard_sampling_gpu}_test
# //bench:cuda_backend_bench); base .device-s10a (call 1's, 123c8dd).
set -uo pipefail
N=.device-s10b; B=.device-s10a
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
OUT=$O/r timeout 200 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # bundle batch tag [flags]
  $1/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_b$2_$3.json ${4:-} > $O/r/step_b$2_$3.log 2>&1
  echo "b$2 $3: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_b$2_$3.json | tr '\n' ' ')"
}
for r in 1 2; do step $B 64 base$r; step $N 64 new$r; step $N 64 upk$r --upload_kernel; done
step $B 1 base1; step $N 1 new1; step $N 1 upk1 --upload_kernel
echo "t=$SECONDS"
cd $O && tar czf call2.tgz r && rm -rf r
