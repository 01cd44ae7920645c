#!/usr/bin/env bash
# Session 10, call 10: the tiny reasoner's prefill, decode and mixed steps,
# the same plan six times on one backend: bit for bit? Under the default
# options and with one thing changed at a time. Experiment test
# ExperimentTest.SamePlanTwice appended to cuda_backend_test (not
# committed; bundle .device-s10i).
set -uo pipefail
N=.device-s10i
O=${OUT:-/tmp/out}; mkdir -p $O/r
[[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
timeout 200 $N/run.sh cuda_backend_test --gtest_filter='ExperimentTest.*' > $O/r/twice.log 2>&1; echo "rc=$?"
grep -E "^EXP|FAILED|Failure" $O/r/twice.log
cd $O && tar czf call10.tgz r && rm -rf r
