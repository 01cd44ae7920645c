#!/usr/bin/env bash
# Session 10, call 5: is the tiny reasoner's scheduler run reproducible on
# one backend, one by one and pipelined? (experiment version of
# PipelinedStepsEqualStepsRunOneByOne printing first differences; bundle
# .device-s10e: //tests/gpu:llm_engine_cuda_test)
set -uo pipefail
N=.device-s10e
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='*Pipelined*' > $O/r/pipelined.log 2>&1; echo "rc=$?"
grep -E "^blocks|PASSED|FAILED" $O/r/pipelined.log | head -40
cd $O && tar czf call5.tgz r && rm -rf r
