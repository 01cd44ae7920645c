#!/usr/bin/env bash
# Session 7, call 10: the greedy candidates on and off in the final build
# (827915d, bundle .device-s7g), alternated, b64 then b16.
set -uo pipefail
N=.device-s7g
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
step() {  # candidates batch tag
  $N/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --greedy_candidates=$1 --json=$O/r/step_c$1_b$2_$3.json > $O/r/step_c$1_b$2_$3.log 2>&1
  echo "b$2 cand=$1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"greedy_candidate_steps":[0-9]*' $O/r/step_c$1_b$2_$3.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_c$1_b$2_$3.log | tail -1 | cut -c30-200)"
}
step 1 64 0; step 0 64 0; step 1 64 1; step 0 64 1; step 1 16 0; step 0 16 0
cd $O && tar czf call10.tgz r && rm -rf r
