#!/usr/bin/env bash
# Session 10, call 15: llm_engine_cuda_test with the pipelining test's
# greedy requests made greedy (temperature 0; they had kept the default 1.0
# without a seed) and every request compared exactly (bundle .device-s10m).
set -uo pipefail
N=.device-s10m
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh llm_engine_cuda_test > $O/r/llm_engine_cuda_test.log 2>&1; echo "rc=$?"
grep -hE "^\[  (PASSED|FAILED)|Failure|first difference" $O/r/llm_engine_cuda_test.log | head -20
cd $O && tar czf call15.tgz r && rm -rf r
