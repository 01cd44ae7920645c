#!/usr/bin/env bash
# Session 10, call 1: pipelined steps (Submit / Collect, fed tokens; bundle
# .device-s10a: scripts/device-bundle.sh --xz --out .device-s10a
# //tests/gpu:<every single-GPU test> //bench:cuda_backend_bench
# //bench:kernels_bench, plus the scripts). Every single-GPU test; the
# decode step at b64, b16 and b1, base (.device-s10base, a6531c7) and new
# alternated (the new bench also times the pipelined loop).
set -uo pipefail
N=.device-s10a; B=.device-s10base
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
SECONDS=0
OUT=$O/r timeout 330 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
rm -f $O/r/bf16ref.tgz
step() {  # bundle batch tag
  $1/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_b$2_$3.json > $O/r/step_b$2_$3.log 2>&1
  echo "b$2 $3: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"host_[a-z]*_us":[0-9.]*' $O/r/step_b$2_$3.json | tr '\n' ' ')"
}
for r in 1 2; do step $B 64 base$r; step $N 64 new$r; done
step $B 1 base1; step $N 1 new1
step $B 16 base1; step $N 16 new1
echo "t=$SECONDS"
cd $O && tar czf call1.tgz r && rm -rf r
