#!/usr/bin/env bash
# Session 10, call 11: (1) greedy tokens from the LM head's candidates, the
# same decode plan eight times: repeatable, and the logits' argmax? (2) two
# one-by-one scheduler runs on one backend: the same plans and tokens step by
# step? Experiment tests appended to cuda_backend_test and
# llm_engine_cuda_test (not committed; bundle .device-s10j).
set -uo pipefail
N=.device-s10j
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh cuda_backend_test --gtest_filter='ExperimentTest.*' > $O/r/candidates.log 2>&1; echo "rc=$?"
timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='ExperimentTest.*' > $O/r/plans.log 2>&1; echo "rc=$?"
grep -hE "^EXP|FAILED|Failure" $O/r/candidates.log $O/r/plans.log
cd $O && tar czf call11.tgz r && rm -rf r
