#!/usr/bin/env bash
# Session 7, call 7: call 5's greedy candidates with the stream-K store's
# candidate exchange in the 1 KB the sums of squares use (two rounds of 32
# tokens), so that the 64-token layout stays in the 196 KB carve-out.
# NEW = .device-s7f (gemm, sampling and cuda_backend tests, the bench),
# BASE = .device-s7c (e240d4f).
set -uo pipefail
N=.device-s7f; B=.device-s7c
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
for t in gemm_test sampling_test cuda_backend_test; do
  timeout 200 $N/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
step() {  # which batch tag
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"greedy_candidate_steps":[0-9]*' $O/r/step_$1_b$2_$3.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2_$3.log | tail -1 | cut -c1-200)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1
step base 16 0; step new 16 0; step base 1 0; step new 1 0
cd $O && tar czf call7.tgz r && rm -rf r
