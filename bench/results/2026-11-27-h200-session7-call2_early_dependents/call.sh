#!/usr/bin/env bash
# Session 7, call 2: the skinny GEMM lets its dependent kernel launch at its
# start (griddepcontrol.launch_dependents after the ring's set-up) instead of
# after its main loop. BASE = .device-s7 (the fused-norm commit), NEW =
# .device-early (gemm_test and cuda_backend_test of the change, the bench).
set -uo pipefail
N=.device-early; B=.device-s7
O=${OUT:-/tmp/out}; mkdir -p $O/r
for d in $N $B; do [[ -d $d/bin ]] || tar xJf $d/bundle.tar.xz -C $d; done
for t in gemm_test cuda_backend_test; do
  timeout 200 $N/run.sh $t > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
step() {  # which batch tag
  local d=$B; [[ $1 == new ]] && d=$N
  $d/run.sh cuda_backend_bench --prompts=$2 --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 \
    --decode_batch=$2 --json=$O/r/step_$1_b$2_$3.json > $O/r/step_$1_b$2_$3.log 2>&1
  echo "b$2 $1: $(grep -E 'decode step ms \(batch' $O/r/step_$1_b$2_$3.log | tr -s ' ') gpu $(grep -o '"median_gpu_ms":[0-9.]*' $O/r/step_$1_b$2_$3.json | cut -d: -f2) | $(grep 'decode step GEMMs at' $O/r/step_$1_b$2_$3.log | tail -1 | cut -c1-200)"
}
step base 64 0; step new 64 0; step base 64 1; step new 64 1
step base 16 0; step new 16 0; step base 1 0; step new 1 0
cd $O && tar czf call2.tgz r && rm -rf r
