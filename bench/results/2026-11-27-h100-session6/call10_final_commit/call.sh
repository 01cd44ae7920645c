#!/usr/bin/env bash
# Session 6, call 10: gemm_test and cuda_backend_test on the final commit (93b3e0a).
set -uo pipefail
N=.device-last
O=${OUT:-/tmp/out}; mkdir -p $O/r
tar xJf $N/bundle.tar.xz -C $N
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $O/r/gpu.txt
for t in gemm_test cuda_backend_test; do
  $N/run.sh $t --gtest_brief=1 > $O/r/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)' $O/r/$t.log | tr '\n' ' ')"
done
cd $O && tar czf last.tgz r && rm -rf r
