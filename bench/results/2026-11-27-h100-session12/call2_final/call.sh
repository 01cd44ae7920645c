#!/usr/bin/env bash
# Session 12, call 2: the session's final code (6f37b25; bundle .device-s12b: scripts/device-bundle.sh
# --xz --out .device-s12b //tests/gpu:<every single-GPU test> //bench:cuda_backend_bench, plus
# tools/golden/make_bf16_reference.py, bench/floor.py, bench/floor_report.sh,
# bench/run_cuda_backend_device.sh and ../shared/bench/hf_baseline.py). Every single-GPU test; the
# decode step at b64 with the column split (the default) alternated with --skinny_wide=0, then b48,
# b32, b16, b1.
set -uo pipefail
N=.device-s12b
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
OUT=$O/r timeout 330 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$? t=$SECONDS"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
grep -A3 "Failure" $O/r/tests.log | head -20
rm -f $O/r/bf16ref.tgz
step() {  # batch tag [flags]
  $N/run.sh cuda_backend_bench --prompts=$1 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$1 --json=$O/r/step_b$1_$2.json ${3:-} > $O/r/step_b$1_$2.log 2>&1
  echo "b$1 $2: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"pipelined[a-z_]*":[0-9.]*\|"gemms":"[^"]*' $O/r/step_b$1_$2.json | tr '\n' ' ' | sed 's/skinny-wgmma//g')"
}
for r in 1 2 3; do step 64 wide$r; step 64 sk$r "--skinny_wide=0"; done
step 48 wide1; step 48 sk1 "--skinny_wide=0"
step 32 wide1; step 16 wide1; step 1 wide1
echo "t=$SECONDS"
cd $O && tar czf call2.tgz r && rm -rf r
