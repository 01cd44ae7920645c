#!/usr/bin/env bash
# Session 8, call 1: the metadata upload and the greedy reduction inside the
# decode graph (CudaBackend::Options::graph_step_io) on and off in one binary,
# alternated at b64, with the host phases of Forward; then the tests the
# change touches.
set -uo pipefail
N=.device-s8a
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
step() {  # io batch tag
  $N/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --graph_step_io=$1 --json=$O/r/step_io$1_b$2_$3.json > $O/r/step_io$1_b$2_$3.log 2>&1
  echo "b$2 io=$1: $(grep -o '"median_ms":[0-9.]*\|"median_gpu_ms":[0-9.]*\|"graph_replay_ms":[0-9.]*\|"floor_ms":[0-9.]*\|"host_[a-z]*_us":[0-9.]*\|"greedy_candidate_steps":[0-9]*' $O/r/step_io$1_b$2_$3.json | tr '\n' ' ') | $(grep 'decode step GEMMs at' $O/r/step_io$1_b$2_$3.log | tail -1 | cut -c30-200)"
}
SECONDS=0
step 1 64 0; echo "t=$SECONDS"; step 0 64 0; step 1 64 1; step 0 64 1; echo "t=$SECONDS"
for t in sampling_test cuda_backend_test llm_engine_cuda_test; do
  timeout 200 $N/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
  grep -E "^\[  FAILED" $O/r/$t.log | head -5
done
echo "t=$SECONDS"
cd $O && tar czf call1.tgz r && rm -rf r
