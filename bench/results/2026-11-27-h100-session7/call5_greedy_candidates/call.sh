#!/usr/bin/env bash
# Session 7, call 5: greedy tokens from the LM head's candidates (skinny GEMM
# epilogue, no logits stored, no sampling pass) on greedy decode steps.
# NEW = .device-s7d (its GPU tests, the bench), BASE = .device-s7c (e240d4f).
set -uo pipefail
N=.device-s7d; B=.device-s7c
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
OUT=$O/r timeout 300 bash $N/run_cuda_backend_device.sh $N tests > $O/r/tests_stage.log 2>&1; echo "tests rc=$?"
grep -E "^=== |^\[  PASSED|^\[  FAILED|FAILED:" $O/r/tests.log | tr -s ' ' | cut -c1-150
step() {  # which batch tag
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -E 'decode step ms \(batch' $O/r/step_$1_b$2_$3.log | tr -s ' ') gpu $(grep -o '"median_gpu_ms":[0-9.]*' $O/r/step_$1_b$2_$3.json | cut -d: -f2) replay $(grep -o '"graph_replay_ms":[0-9.]*' $O/r/step_$1_b$2_$3.json | cut -d: -f2) cand $(grep -o '"greedy_candidate_steps":[0-9]*' $O/r/step_$1_b$2_$3.json | cut -d: -f2) | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2_$3.log | tail -1 | cut -c1-200)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1
step base 16 0; step new 16 0; step base 1 0; step new 1 0
cd $O && tar czf call5.tgz r && rm -rf r
