#!/usr/bin/env bash
# Session 12, call 8: every single-GPU test on the last code (1495929: packed logits and the early
# finish's buffers since call 2's 6f37b25). Bundle .device-s12f: scripts/device-bundle.sh --xz --out
# .device-s12f //tests/gpu:<every single-GPU test> //bench:cuda_backend_bench, plus
# tools/golden/make_bf16_reference.py, bench/floor.py, bench/floor_report.sh and
# bench/run_cuda_backend_device.sh. Every single-GPU test, then the b64 decode step twice.
set -uo pipefail
N=.device-s12f
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
for r in 1 2; do step 64 wide$r; done
echo "t=$SECONDS"
cd $O && tar czf call8.tgz r && rm -rf r
