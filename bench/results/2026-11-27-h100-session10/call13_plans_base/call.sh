#!/usr/bin/env bash
# Session 10, call 13: call 11's plan log (two one-by-one scheduler runs on
# one backend, step by step) on the code before this session (a6531c7 with
# the experiment test and a shared-backend RunScheduler; bundle
# .device-s10base3), and again on this session's (.device-s10j).
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for N in .device-s10base3 .device-s10j; do
  [[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
  timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='ExperimentTest.SamePlans' > $O/r/plans$N.log 2>&1; echo "$N rc=$?"
  grep -hE "^EXP" $O/r/plans$N.log
done
cd $O && tar czf call13.tgz r && rm -rf r
