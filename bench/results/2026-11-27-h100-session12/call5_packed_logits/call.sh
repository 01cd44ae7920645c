#!/usr/bin/env bash
# Session 12, call 5: packed logits (a48c8a7: a step downloads only the rows that ask for their
# logits). Bundle .device-s12c: scripts/device-bundle.sh --xz --out .device-s12c
# //tests/gpu:cuda_backend_test //tests/gpu:llm_engine_cuda_test //tests/gpu:sampling_test
# //bench:cuda_backend_bench. The tests the change touches, then the b64 decode step with 0, 1, 4
# and 64 rows asking for their logits (64: every row's logits come down, which is what one top-n
# row cost before this change), alternated.
set -uo pipefail
N=.device-s12c
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
SECONDS=0
for t in cuda_backend_test llm_engine_cuda_test sampling_test; do
  timeout 150 $N/run.sh $t > $O/r/$t.log 2>&1
  echo "$t rc=$? t=$SECONDS: $(grep -E '^\[  PASSED|^\[  FAILED' $O/r/$t.log | tr '\n' ' ')"
done
grep -B2 -A6 "Failure" $O/r/*_test.log | head -30
step() {  # tag flags
  $N/run.sh cuda_backend_bench --prompts=64 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=64 --json=$O/r/step_$1.json $2 > $O/r/step_$1.log 2>&1
  echo "$1: $(grep -o '"logits_rows":[0-9]*\|"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"pipelined_ms":[0-9.]*\|"pipelined_gpu_ms":[0-9.]*\|"host_finish_us":[0-9.]*' $O/r/step_$1.json | tr '\n' ' ')"
}
for r in 1 2; do
  step l0_$r --decode_logits_rows=0; step l1_$r --decode_logits_rows=1
  step l4_$r --decode_logits_rows=4; step l64_$r --decode_logits_rows=64
done
echo "t=$SECONDS"
cd $O && tar czf call5.tgz r && rm -rf r
