#!/usr/bin/env bash
# Session 6, call 9: the session's last commit (Silu() shared): its GPU tests
# that touch the changed code, and the decode step at batch 64, 16 and 1.
set -uo pipefail
N=.device-fin
O=${OUT:-/tmp/out}; mkdir -p $O/r
tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/r/gpu.txt
for t in gemm_test small_kernels_test cuda_backend_test llm_engine_cuda_test; do
  $N/run.sh $t --gtest_brief=1 > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
for b in 64 64 16 1; do
  n=$(ls $O/r | grep -c "step_b$b" || true)
  $N/run.sh cuda_backend_bench --prompts=$b --prompt_len=64 --gen_len=8 --budgets=2048 --repeats=1 --decode_batch=$b \
    --json=$O/r/step_b${b}_$n.json > $O/r/step_b${b}_$n.log 2>&1
  echo "b$b: $(grep -E 'decode step ms \(batch' $O/r/step_b${b}_$n.log | tr -s ' ') gpu $(grep -o '"median_gpu_ms":[0-9.]*' $O/r/step_b${b}_$n.json) | $(grep 'decode step GEMMs at' $O/r/step_b${b}_$n.log | tail -1 | cut -c1-150)"
done
cd $O && tar czf fin.tgz r && rm -rf r
