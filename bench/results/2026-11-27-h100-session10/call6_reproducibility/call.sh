#!/usr/bin/env bash
# Session 10, call 6: are the tiny reasoner's scheduler runs reproducible one
# by one (fresh backend each run), mixed greedy + seeded and all greedy, on
# the session's code (.device-s10f) and on its start (a6531c7,
# .device-s10base2)? An experiment test appended to llm_engine_cuda_test
# (not committed): ExperimentTest.Reproducible.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O/r
for N in .device-s10f .device-s10base2; do
  [[ -d $N/bin ]] || tar xJf $N/bundle.tar.xz -C $N
  timeout 200 $N/run.sh llm_engine_cuda_test --gtest_filter='ExperimentTest.*' > $O/r/exp$N.log 2>&1; echo "$N rc=$?"
  grep -E "^EXP" $O/r/exp$N.log | head -24
done
cd $O && tar czf call6.tgz r && rm -rf r
